//! An HD44780 character LCD (16x2, 20x4 and their kin) on a PCF8574 I2C
//! backpack, driven in 4-bit mode through any [`I2cBus`]; on Linux,
//! [`Hd44780::open`] puts it on i2c-dev.
//!
//! References: the Hitachi HD44780U datasheet (ADE-207-272(Z)): Table 6
//! (instructions and execution times), Figure 24 (initialising by
//! instruction, 4-bit interface), the section "Display Data RAM (DDRAM)"
//! (addresses of 1- and 2-line displays), Table 4 (character codes, ROM
//! A00), the bus timing characteristics (write operation: tAS, tH); and the
//! common PCF8574 backpack wiring:
//!
//! | PCF8574 | P7 | P6 | P5 | P4 | P3        | P2 | P1 | P0 |
//! | ------- | -- | -- | -- | -- | --------- | -- | -- | -- |
//! | LCD     | D7 | D6 | D5 | D4 | backlight | E  | RW | RS |
//!
//! Every byte written to the PCF8574 sets all eight pins at once. A nibble
//! reaches the LCD as two bytes, E high then E low (the LCD latches on E's
//! falling edge); an instruction or a character is two nibbles, high first.
//! RS must be steady before E rises (bus timing, tAS), and a byte that raises
//! E cannot also change RS, so when RS changes (an instruction after data,
//! data after an instruction) one byte with the new RS and E low goes first.
//! RW is always low: the driver never reads the busy flag, it waits out each
//! instruction's execution time instead (the delays below, with margin for
//! a slow oscillator: Table 6 gives 37 µs at 270 kHz, the oscillator may
//! run as slow as 190 kHz at 5 V, so 53 µs).
//!
//! **Characters.** The LCD shows bytes from its character ROM; modules on
//! these backpacks nearly all carry ROM A00 (Japanese). [`encode`] maps
//! text to it: printable ASCII as itself except `\` and `~` (A00 has ¥ and
//! → there), the few non-ASCII glyphs A00 has (¥ → ← ° α ä β ε μ σ ρ √ ¢ ñ
//! ö θ ∞ Ω ü Σ π ÷ █ and half-width katakana), and every other character,
//! control characters included, to `?` ([`REPLACEMENT`]). [`Display::contents`]
//! reads back what the glass shows, so `"é"` reads back as `"?"`.
//!
//! **A bus error** leaves the LCD in an unknown state: a transfer cut
//! between the two nibbles of an instruction leaves it out of step. So
//! after any failed write the next call first initialises it again (the
//! instruction sequence of Figure 24 brings it back into step from any
//! state) and redraws what [`Display::contents`] says, then does its work.

use std::fmt;
use std::time::Duration;

use super::i2c::I2cBus;
use super::{Display, REPLACEMENT, check_brightness, check_position, clip};
use crate::HwError;

/// The usual address of a PCF8574 backpack (A0-A2 open).
pub const DEFAULT_ADDRESS: u16 = 0x27;
/// The usual address of a PCF8574A backpack (A0-A2 open), the common
/// alternative.
pub const ALTERNATE_ADDRESS: u16 = 0x3F;

/// PCF8574 pin P0: register select (low: instruction, high: data).
pub const RS: u8 = 0x01;
/// PCF8574 pin P1: read/write (always low: write).
pub const RW: u8 = 0x02;
/// PCF8574 pin P2: enable; the LCD latches a nibble as it falls.
pub const E: u8 = 0x04;
/// PCF8574 pin P3: the backlight transistor.
pub const BACKLIGHT: u8 = 0x08;

/// Instruction "clear display" (Table 6): blanks DDRAM, address 0.
pub const CLEAR: u8 = 0x01;
/// Instruction "entry mode set", I/D=1 (address increments), S=0 (no shift).
pub const ENTRY_INCREMENT: u8 = 0x06;
/// Instruction "display on/off control", D=0: display off.
pub const DISPLAY_OFF: u8 = 0x08;
/// Instruction "display on/off control", D=1, C=0, B=0: display on, no
/// cursor, no blinking.
pub const DISPLAY_ON: u8 = 0x0C;
/// Instruction "function set", DL=0 (4-bit), N=1 (2 lines), F=0 (5x8 dots).
pub const FUNCTION_SET_2_LINES: u8 = 0x28;
/// Instruction "function set", DL=0 (4-bit), N=0 (1 line), F=0 (5x8 dots).
pub const FUNCTION_SET_1_LINE: u8 = 0x20;
/// Instruction "set DDRAM address": OR the address into the low 7 bits.
pub const SET_DDRAM: u8 = 0x80;

/// Figure 24: wait more than 40 ms after Vcc rises to 2.7 V.
pub const POWER_ON_WAIT: Duration = Duration::from_millis(50);
/// Figure 24: more than 4.1 ms after the first 0x3.
pub const FIRST_RESET_WAIT: Duration = Duration::from_millis(5);
/// Figure 24: more than 100 µs after the second 0x3 (and, as the datasheet
/// gives no time for the third, after it too).
pub const RESET_WAIT: Duration = Duration::from_micros(150);
/// Table 6: 37 µs for every instruction but clear and home, and for a data
/// write (plus tADD 4 µs), at 270 kHz; 60 µs covers a 190 kHz oscillator.
pub const EXECUTION_WAIT: Duration = Duration::from_micros(60);
/// Table 6: 1.52 ms to clear the display at 270 kHz; 3 ms covers 190 kHz.
pub const CLEAR_WAIT: Duration = Duration::from_millis(3);

/// The widest row the controller addresses: a line of DDRAM holds 40
/// characters (DDRAM section, 2-line display).
const LINE_LENGTH: u8 = 40;

/// The DDRAM address of the first cell of each row (DDRAM section): rows 0 and
/// 1 start lines 1 and 2 (0x00, 0x40); on a four-row module rows 2 and 3
/// continue them (0x14, 0x54 on a 20x4, 0x10, 0x50 on a 16x4).
pub fn row_offsets(cols: u8) -> [u8; 4] {
    [0x00, 0x40, cols, 0x40 + cols]
}

/// Checks that the controller can address a `cols` × `rows` display: one,
/// two or four rows; at most 40 columns (one DDRAM line), at most 20 with
/// four rows (rows 2 and 3 are the second halves of lines 1 and 2).
pub fn check_size(cols: u8, rows: u8) -> Result<(), HwError> {
    let fits = match rows {
        1 | 2 => (1..=LINE_LENGTH).contains(&cols),
        4 => (1..=LINE_LENGTH / 2).contains(&cols),
        _ => false,
    };
    if !fits {
        return Err(HwError::InvalidDisplay {
            reason: format!(
                "an HD44780 drives 1 or 2 rows of up to 40 columns, or 4 rows of up to 20, not {cols}x{rows}"
            ),
        });
    }
    Ok(())
}

/// The ROM A00 code that shows `c`, or the code of `?` for a character A00
/// lacks.
pub fn encode(c: char) -> u8 {
    match c {
        // Printable ASCII, but 0x5C is ¥ and 0x7E → in A00.
        ' '..='}' if c != '\\' => c as u8,
        '¥' => 0x5C,
        '→' => 0x7E,
        '←' => 0x7F,
        // Half-width katakana and punctuation, U+FF61 to U+FF9E, in order.
        '\u{FF61}'..='\u{FF9E}' => 0xA1 + (c as u32 - 0xFF61) as u8,
        // 0xDF is the semi-voiced mark, a small circle, which is how these
        // displays show degrees.
        '°' | '\u{FF9F}' => 0xDF,
        'α' => 0xE0,
        'ä' => 0xE1,
        'β' => 0xE2,
        'ε' => 0xE3,
        'μ' | 'µ' => 0xE4,
        'σ' => 0xE5,
        'ρ' => 0xE6,
        '√' => 0xE8,
        '¢' => 0xEC,
        'ñ' => 0xEE,
        'ö' => 0xEF,
        'θ' => 0xF2,
        '∞' => 0xF3,
        'Ω' => 0xF4,
        'ü' => 0xF5,
        'Σ' => 0xF6,
        'π' => 0xF7,
        '÷' => 0xFD,
        '█' => 0xFF,
        _ => REPLACEMENT as u8,
    }
}

/// The character a code from [`encode`] shows.
pub fn decode(code: u8) -> char {
    match code {
        0x5C => '¥',
        0x7E => '→',
        0x7F => '←',
        0x20..=0x7D => char::from(code),
        0xA1..=0xDE => char::from_u32(0xFF61 + u32::from(code - 0xA1)).unwrap_or(REPLACEMENT),
        0xDF => '°',
        0xE0 => 'α',
        0xE1 => 'ä',
        0xE2 => 'β',
        0xE3 => 'ε',
        0xE4 => 'μ',
        0xE5 => 'σ',
        0xE6 => 'ρ',
        0xE8 => '√',
        0xEC => '¢',
        0xEE => 'ñ',
        0xEF => 'ö',
        0xF2 => 'θ',
        0xF3 => '∞',
        0xF4 => 'Ω',
        0xF5 => 'ü',
        0xF6 => 'Σ',
        0xF7 => 'π',
        0xFD => '÷',
        0xFF => '█',
        _ => REPLACEMENT,
    }
}

/// An HD44780 LCD behind a PCF8574 on `bus`.
pub struct Hd44780<B: I2cBus> {
    bus: B,
    cols: u8,
    rows: u8,
    backlight: bool,
    /// The ROM code in each cell, as last written successfully.
    cells: Vec<Vec<u8>>,
    /// A write failed: the LCD's state is unknown until initialised again.
    lost: bool,
    /// The PCF8574's pins as last written; `None` when unknown (before the
    /// first write, after a failed one).
    pins: Option<u8>,
}

#[cfg(target_os = "linux")]
impl Hd44780<super::i2c::LinuxI2c> {
    /// Opens the LCD at `addr` ([`DEFAULT_ADDRESS`], often
    /// [`ALTERNATE_ADDRESS`]) on the i2c-dev bus at `i2c_path`
    /// (`/dev/i2c-1` on a Pi) and initialises it.
    pub fn open(
        i2c_path: &std::path::Path,
        addr: u16,
        cols: u8,
        rows: u8,
    ) -> Result<Self, HwError> {
        check_size(cols, rows)?;
        Hd44780::new(super::i2c::LinuxI2c::open(i2c_path, addr)?, cols, rows)
    }
}

impl<B: I2cBus> Hd44780<B> {
    /// Initialises the LCD on `bus` (Figure 24), blank, backlight on. Takes
    /// about 60 ms, most of it the power-on wait.
    pub fn new(bus: B, cols: u8, rows: u8) -> Result<Self, HwError> {
        check_size(cols, rows)?;
        let mut lcd = Hd44780 {
            bus,
            cols,
            rows,
            backlight: true,
            cells: vec![vec![b' '; usize::from(cols)]; usize::from(rows)],
            lost: true,
            pins: None,
        };
        lcd.recover()?;
        Ok(lcd)
    }

    /// The bus, to look at what it recorded in a test.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// The bus, mutable: a test clears its record or makes it fail.
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Whether the backlight is on.
    pub fn backlight(&self) -> bool {
        self.backlight
    }

    fn flags(&self) -> u8 {
        if self.backlight { BACKLIGHT } else { 0 }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), HwError> {
        match self.bus.write(bytes) {
            Ok(()) => {
                self.pins = bytes.last().copied().or(self.pins);
                Ok(())
            }
            Err(error) => {
                // Some of the bytes may have gone out: the pins and the
                // LCD's state are both unknown now.
                self.pins = None;
                self.lost = true;
                Err(error)
            }
        }
    }

    /// Clocks `nibbles` into the LCD in one transfer, with RS set for data
    /// or cleared for an instruction, then waits `wait`.
    fn strobe(&mut self, nibbles: &[u8], data: bool, wait: Duration) -> Result<(), HwError> {
        let flags = self.flags() | if data { RS } else { 0 };
        let mut bytes = Vec::with_capacity(1 + 2 * nibbles.len());
        // tAS: RS settles with E low before the byte that raises E.
        if let Some(&first) = nibbles.first()
            && self
                .pins
                .is_none_or(|pins| pins & (RS | RW) != flags & (RS | RW))
        {
            bytes.push((first << 4) | flags);
        }
        for &nibble in nibbles {
            let pins = (nibble << 4) | flags;
            bytes.extend([pins | E, pins]);
        }
        self.send(&bytes)?;
        self.bus.delay(wait);
        Ok(())
    }

    /// A single nibble: the instructions of the reset sequence, which the
    /// LCD reads while it may still be in 8-bit mode.
    fn nibble(&mut self, nibble: u8, wait: Duration) -> Result<(), HwError> {
        self.strobe(&[nibble], false, wait)
    }

    fn instruction(&mut self, instruction: u8, wait: Duration) -> Result<(), HwError> {
        self.strobe(&[instruction >> 4, instruction & 0x0F], false, wait)
    }

    fn data(&mut self, code: u8) -> Result<(), HwError> {
        self.strobe(&[code >> 4, code & 0x0F], true, EXECUTION_WAIT)
    }

    /// Writes ROM codes from a cell on, without touching `cells`.
    fn draw(&mut self, row: u8, col: u8, codes: &[u8]) -> Result<(), HwError> {
        if codes.is_empty() {
            return Ok(());
        }
        let address = row_offsets(self.cols)[usize::from(row)] + col;
        self.instruction(SET_DDRAM | address, EXECUTION_WAIT)?;
        for &code in codes {
            self.data(code)?;
        }
        Ok(())
    }

    /// Figure 24, initialisation by instruction in 4-bit mode, then display
    /// on; then what `cells` holds is drawn again. Done at start and after
    /// a failed write.
    fn recover(&mut self) -> Result<(), HwError> {
        // The PCF8574 powers up with every pin high: E high, RW high. Drive
        // them all low (backlight as wanted) before the first nibble, so
        // that E rises with RS and RW already low.
        let idle = [self.flags()];
        self.send(&idle)?;
        self.bus.delay(POWER_ON_WAIT);
        // Function set with DL=1, three times: whatever the LCD was doing
        // (8-bit mode, or half-way through a 4-bit byte), it ends in 8-bit
        // mode, where a single nibble is a whole instruction.
        self.nibble(0x3, FIRST_RESET_WAIT)?;
        self.nibble(0x3, RESET_WAIT)?;
        self.nibble(0x3, RESET_WAIT)?;
        // Function set DL=0, still read as one 8-bit instruction: 4-bit mode.
        self.nibble(0x2, EXECUTION_WAIT)?;
        let function_set = if self.rows == 1 {
            FUNCTION_SET_1_LINE
        } else {
            FUNCTION_SET_2_LINES
        };
        self.instruction(function_set, EXECUTION_WAIT)?;
        self.instruction(DISPLAY_OFF, EXECUTION_WAIT)?;
        self.instruction(CLEAR, CLEAR_WAIT)?;
        self.instruction(ENTRY_INCREMENT, EXECUTION_WAIT)?;
        self.instruction(DISPLAY_ON, EXECUTION_WAIT)?;
        for row in 0..self.rows {
            let cells = &self.cells[usize::from(row)];
            let used = cells.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
            let codes = cells[..used].to_vec();
            self.draw(row, 0, &codes)?;
        }
        self.lost = false;
        Ok(())
    }

    fn recover_if_lost(&mut self) -> Result<(), HwError> {
        if self.lost {
            self.recover()?;
        }
        Ok(())
    }
}

impl<B: I2cBus> Display for Hd44780<B> {
    fn size(&self) -> (u8, u8) {
        (self.cols, self.rows)
    }

    fn write_at(&mut self, row: u8, col: u8, text: &str) -> Result<(), HwError> {
        check_position((self.cols, self.rows), row, col)?;
        let codes: Vec<u8> = clip(text, self.cols, col).map(encode).collect();
        self.recover_if_lost()?;
        self.draw(row, col, &codes)?;
        let start = usize::from(col);
        self.cells[usize::from(row)][start..start + codes.len()].copy_from_slice(&codes);
        Ok(())
    }

    fn clear(&mut self) -> Result<(), HwError> {
        self.recover_if_lost()?;
        self.instruction(CLEAR, CLEAR_WAIT)?;
        for row in &mut self.cells {
            row.fill(b' ');
        }
        Ok(())
    }

    fn set_brightness(&mut self, percent: u8) -> Result<(), HwError> {
        check_brightness(percent)?;
        self.recover_if_lost()?;
        let on = percent > 0;
        // One byte with E low: only the backlight pin changes, the LCD sees
        // no strobe and so no instruction.
        self.send(&[if on { BACKLIGHT } else { 0 }])?;
        self.backlight = on;
        Ok(())
    }

    fn poll_buttons(&mut self) -> Result<Vec<(String, bool)>, HwError> {
        // The backpack uses all eight PCF8574 pins for the LCD.
        Ok(Vec::new())
    }

    fn buttons(&self) -> Vec<String> {
        Vec::new()
    }

    fn contents(&self) -> Vec<String> {
        self.cells
            .iter()
            .map(|row| row.iter().map(|&code| decode(code)).collect())
            .collect()
    }
}

impl<B: I2cBus> fmt::Debug for Hd44780<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hd44780")
            .field("cols", &self.cols)
            .field("rows", &self.rows)
            .field("backlight", &self.backlight)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_and_decode_agree_on_every_code_they_use() {
        for code in 0..=u8::MAX {
            let shown = decode(code);
            if shown != REPLACEMENT {
                assert_eq!(encode(shown), code, "{code:#04x} shows {shown:?}");
            }
        }
    }

    #[test]
    fn characters_outside_rom_a00_become_the_replacement() {
        for c in ['\\', '~', '\n', '\t', '\u{7f}', 'é', '€', '😀', 'ß'] {
            assert_eq!(encode(c), b'?', "{c:?}");
        }
        assert_eq!(encode('A'), 0x41);
        assert_eq!(encode('°'), 0xDF);
        assert_eq!(encode('¥'), 0x5C);
        assert_eq!(decode(0xDF), '°');
        assert_eq!(decode(0x00), REPLACEMENT);
    }

    #[test]
    fn only_addressable_sizes_are_accepted() {
        for (cols, rows) in [(16, 2), (20, 4), (16, 4), (8, 1), (40, 2), (16, 1)] {
            assert!(check_size(cols, rows).is_ok(), "{cols}x{rows}");
        }
        for (cols, rows) in [(0, 2), (41, 2), (21, 4), (16, 3), (16, 0), (20, 5)] {
            assert!(check_size(cols, rows).is_err(), "{cols}x{rows}");
        }
    }

    #[test]
    fn row_offsets_follow_the_module_layouts() {
        assert_eq!(row_offsets(20), [0x00, 0x40, 0x14, 0x54]);
        assert_eq!(row_offsets(16), [0x00, 0x40, 0x10, 0x50]);
    }
}
