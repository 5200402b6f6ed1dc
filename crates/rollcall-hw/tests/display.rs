//! Displays through the public API: the HD44780 driver against a bus that
//! records every byte and every wait, checked two ways against the HD44780U
//! datasheet and the PCF8574 backpack's wiring (byte for byte for the
//! sequences the datasheet spells out, and through an emulated LCD for
//! everything, random sequences and bus errors included); and the
//! simulated display as the display service and the demo use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use rollcall_hw::HwError;
use rollcall_hw::display::hd44780::{Hd44780, decode};
use rollcall_hw::display::i2c::I2cBus;
use rollcall_hw::display::sim::SimDisplay;
use rollcall_hw::display::{Display, REPLACEMENT};

/// One thing the driver did on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Write(Vec<u8>),
    Delay(Duration),
}

fn w(bytes: &[u8]) -> Op {
    Op::Write(bytes.to_vec())
}

fn ms(n: u64) -> Op {
    Op::Delay(Duration::from_millis(n))
}

fn us(n: u64) -> Op {
    Op::Delay(Duration::from_micros(n))
}

/// A bus that records instead of talking to hardware, and can be told to
/// refuse writes.
#[derive(Debug, Default)]
struct Recorder {
    ops: Vec<Op>,
    /// Writes still accepted before every later one fails; `None`: all.
    accept: Option<usize>,
    /// How many bytes of a refused write reach the device anyway (the
    /// PCF8574 acts on every byte it acknowledged before the transfer broke).
    partial: usize,
}

impl Recorder {
    fn take(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }
}

impl I2cBus for Recorder {
    fn write(&mut self, bytes: &[u8]) -> Result<(), HwError> {
        if let Some(left) = self.accept.as_mut() {
            if *left == 0 {
                let sent = self.partial.min(bytes.len());
                if sent > 0 {
                    self.ops.push(Op::Write(bytes[..sent].to_vec()));
                }
                return Err(HwError::Device {
                    device: "/dev/i2c-test".into(),
                    source: "no acknowledge from 0x27".into(),
                });
            }
            *left -= 1;
        }
        self.ops.push(Op::Write(bytes.to_vec()));
        Ok(())
    }

    fn delay(&mut self, duration: Duration) {
        self.ops.push(Op::Delay(duration));
    }
}
/// The HD44780U's initialisation by instruction for a 4-bit interface
/// (datasheet Figure 24), through the backpack with the backlight on.
///
/// PCF8574 byte = D7 D6 D5 D4 | BL E RW RS (P7..P0). With the backlight
/// (0x08) on and RS = RW = 0, a nibble n goes out as (n<<4)|0x0C (E high)
/// then (n<<4)|0x08 (E low); the LCD latches it on E's falling edge.
fn init_sequence_2_lines() -> Vec<Op> {
    vec![
        // The PCF8574 powers up with all pins high (E and RW high): drive
        // them low, backlight on, before anything is clocked in.
        w(&[0x08]),
        // Figure 24: "Wait for more than 40 ms after VCC rises to 2.7 V".
        ms(50),
        // "Function set (Interface is 8 bits long)": RS=0 RW=0 DB7..4=0011,
        // one nibble. "Wait for more than 4.1 ms".
        w(&[0x3C, 0x38]),
        ms(5),
        // The same again. "Wait for more than 100 µs".
        w(&[0x3C, 0x38]),
        us(150),
        // The same a third time (no wait given; we keep 150 µs).
        w(&[0x3C, 0x38]),
        us(150),
        // "Function set (Set interface to be 4 bits long.) Interface is 8
        // bits in length": DB7..4=0010, still one nibble. Table 6: 37 µs,
        // 60 µs with margin for a slow oscillator.
        w(&[0x2C, 0x28]),
        us(60),
        // Function set 0x28: DL=0 (4 bits), N=1 (2 lines), F=0 (5x8 dots);
        // from here every instruction is two nibbles, high first.
        w(&[0x2C, 0x28, 0x8C, 0x88]),
        us(60),
        // Display off 0x08.
        w(&[0x0C, 0x08, 0x8C, 0x88]),
        us(60),
        // Display clear 0x01. Table 6: 1.52 ms; 3 ms with margin.
        w(&[0x0C, 0x08, 0x1C, 0x18]),
        ms(3),
        // Entry mode set 0x06: I/D=1 (increment), S=0 (no shift).
        // "Initialization ends" here in Figure 24.
        w(&[0x0C, 0x08, 0x6C, 0x68]),
        us(60),
        // Display on 0x0C: D=1, C=0 (no cursor), B=0 (no blink).
        w(&[0x0C, 0x08, 0xCC, 0xC8]),
        us(60),
    ]
}

fn lcd(cols: u8, rows: u8) -> Hd44780<Recorder> {
    let mut lcd = Hd44780::new(Recorder::default(), cols, rows).unwrap();
    lcd.bus_mut().take();
    lcd
}

fn blank(cols: usize, rows: usize) -> Vec<String> {
    vec![" ".repeat(cols); rows]
}

fn padded(text: &str, cols: usize) -> String {
    format!("{text:<cols$}")
}

// ------------------------------------------------------- an emulated LCD

/// PCF8574 pins of the backpack: P0 RS, P1 RW, P2 E, P3 backlight.
const P_RS: u8 = 0x01;
const P_RW: u8 = 0x02;
const P_E: u8 = 0x04;
const P_BL: u8 = 0x08;

/// Table 6's execution times are for a 270 kHz oscillator; the slowest the
/// datasheet allows at 5 V is 190 kHz, and times grow in proportion.
fn slowest(time: Duration) -> Duration {
    time * 270 / 190
}

/// An HD44780U as the datasheet describes it, fed the PCF8574's pin
/// levels byte by byte and the driver's waits: the independent check of
/// the driver. Its clock is the sum of the waits, as if bytes cost nothing
/// (the worst case: a fast bus). It records every rule the stream breaks.
struct Emulator {
    now: Duration,
    busy_until: Duration,
    /// Clean writes since power-on; the first two have Figure 24's waits.
    writes: usize,
    pins: u8,
    eight_bit: bool,
    /// The first nibble of a 4-bit transfer, waiting for the second.
    high: Option<u8>,
    two_lines: bool,
    ddram: [u8; 128],
    address: u8,
    cgram: bool,
    increment: bool,
    shift_on_write: bool,
    display_on: bool,
    shift: i32,
    violations: Vec<String>,
}

impl Emulator {
    /// Just powered on: the PCF8574's pins all high, the LCD after its
    /// internal reset (datasheet "Initializing by Internal Reset Circuit":
    /// display clear, 8-bit, one line, display off, increment, no shift).
    fn power_on() -> Self {
        Emulator {
            now: Duration::ZERO,
            busy_until: Duration::ZERO,
            writes: 0,
            pins: 0xFF,
            eight_bit: true,
            high: None,
            two_lines: false,
            ddram: [b' '; 128],
            address: 0,
            cgram: false,
            increment: true,
            shift_on_write: false,
            display_on: false,
            shift: 0,
            violations: Vec::new(),
        }
    }

    fn feed(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Delay(d) => self.now += *d,
                Op::Write(bytes) => bytes.iter().for_each(|&b| self.byte(b)),
            }
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(format!("at {:?}: {what}", self.now));
    }

    fn byte(&mut self, b: u8) {
        let prev = std::mem::replace(&mut self.pins, b);
        let (e_was, e_is) = (prev & P_E != 0, b & P_E != 0);
        if !e_was && e_is && (prev ^ b) & (P_RS | P_RW) != 0 {
            self.violation(format!(
                "RS/RW changed as E rose (tAS): {prev:#04x} -> {b:#04x}"
            ));
        }
        if e_was && !e_is {
            // Data, RS and RW must hold through E's fall (tH, tAH). The one
            // exception is the driver's all-low byte that begins every
            // (re)initialisation, which may drop E left high by power-on or
            // a broken transfer: what the LCD latches then is undefined, the
            // reset sequence after it is what has to cope, and the emulator
            // takes the new levels to give it something to cope with.
            let undefined = (prev ^ b) & !(P_E | P_BL) != 0;
            if undefined && b & !P_BL != 0 {
                self.violation(format!("data changed as E fell: {prev:#04x} -> {b:#04x}"));
            }
            if b & P_RW == 0 {
                self.latch(b >> 4, b & P_RS != 0, !undefined);
            }
        }
    }

    fn latch(&mut self, nibble: u8, rs: bool, clean: bool) {
        let starts_transfer = self.eight_bit || self.high.is_none();
        if clean && starts_transfer && self.now < self.busy_until {
            self.violation(format!("written while busy until {:?}", self.busy_until));
        }
        if self.eight_bit {
            // D3..D0 are not wired on the backpack: they read as 0.
            self.execute(nibble << 4, rs, clean);
        } else if let Some(high) = self.high.take() {
            self.execute((high << 4) | nibble, rs, clean);
        } else {
            self.high = Some(nibble);
        }
    }

    fn execute(&mut self, byte: u8, rs: bool, clean: bool) {
        let mut busy = slowest(Duration::from_micros(37));
        if clean {
            self.writes += 1;
            // Figure 24: the first instruction more than 40 ms after power
            // on, then more than 4.1 ms, then more than 100 µs.
            match self.writes {
                1 if self.now < Duration::from_millis(40) => {
                    self.violation("first instruction within 40 ms of power-on".into())
                }
                1 => busy = Duration::from_micros(4100),
                2 => busy = Duration::from_micros(100),
                _ => {}
            }
        }
        if rs {
            if self.cgram {
                self.address = self.address.wrapping_add(1) & 0x3F;
            } else {
                self.ddram[usize::from(self.address)] = byte;
                self.step();
                if self.shift_on_write {
                    self.shift += if self.increment { 1 } else { -1 };
                }
            }
        } else {
            match byte {
                0x00 => {}
                0x01 => {
                    // Clear display: spaces everywhere, address 0, unshifted, I/D=1.
                    self.ddram = [b' '; 128];
                    self.address = 0;
                    self.cgram = false;
                    self.shift = 0;
                    self.increment = true;
                    busy = slowest(Duration::from_micros(1520));
                }
                0x02 | 0x03 => {
                    self.address = 0;
                    self.cgram = false;
                    self.shift = 0;
                    busy = slowest(Duration::from_micros(1520));
                }
                0x04..=0x07 => {
                    self.increment = byte & 0x02 != 0;
                    self.shift_on_write = byte & 0x01 != 0;
                }
                0x08..=0x0F => self.display_on = byte & 0x04 != 0,
                0x10..=0x1F => {
                    let right = byte & 0x04 != 0;
                    if byte & 0x08 != 0 {
                        self.shift += if right { 1 } else { -1 };
                    } else {
                        let increment = std::mem::replace(&mut self.increment, right);
                        self.step();
                        self.increment = increment;
                    }
                }
                0x20..=0x3F => {
                    self.eight_bit = byte & 0x10 != 0;
                    self.two_lines = byte & 0x08 != 0;
                    self.high = None;
                }
                0x40..=0x7F => {
                    self.cgram = true;
                    self.address = byte & 0x3F;
                }
                _ => {
                    self.cgram = false;
                    self.address = byte & 0x7F;
                }
            }
        }
        self.busy_until = self.now + busy;
    }

    /// The address counter's next DDRAM address (DDRAM section: a 2-line display
    /// runs 0x00-0x27 then 0x40-0x67, a 1-line one 0x00-0x4F).
    fn step(&mut self) {
        let a = self.address;
        self.address = match (self.two_lines, self.increment) {
            (true, true) if a == 0x27 => 0x40,
            (true, true) if a >= 0x67 => 0x00,
            (true, false) if a == 0x40 => 0x27,
            (true, false) if a == 0x00 => 0x67,
            (false, true) if a >= 0x4F => 0x00,
            (false, false) if a == 0x00 => 0x4F,
            (_, true) => a + 1,
            (_, false) => a - 1,
        };
    }

    /// What the glass shows of a `cols` × `rows` module, with the checks
    /// that the driver left it in the state it promises.
    fn screen(&mut self, cols: u8, rows: u8) -> Vec<String> {
        if !self.display_on || self.eight_bit || self.shift != 0 || !self.increment {
            self.violation(format!(
                "display state: on {}, 8-bit {}, shift {}, increment {}",
                self.display_on, self.eight_bit, self.shift, self.increment
            ));
        }
        if self.two_lines != (rows > 1) {
            self.violation(format!("{rows} rows but two_lines {}", self.two_lines));
        }
        let starts = [0x00, 0x40, cols, 0x40 + cols];
        (0..usize::from(rows))
            .map(|r| {
                (0..cols)
                    .map(|c| decode(self.ddram[usize::from(starts[r] + c)]))
                    .collect()
            })
            .collect()
    }

    fn backlight(&self) -> bool {
        self.pins & P_BL != 0
    }
}

/// Feeds what the driver did since the last call to `emulator` and checks
/// that the glass shows what `contents()` says, with no rule broken.
fn check_glass(lcd: &mut Hd44780<Recorder>, emulator: &mut Emulator) {
    let ops = lcd.bus_mut().take();
    emulator.feed(&ops);
    let (cols, rows) = lcd.size();
    let screen = emulator.screen(cols, rows);
    assert_eq!(emulator.violations, Vec::<String>::new());
    assert_eq!(screen, lcd.contents());
    assert_eq!(emulator.backlight(), lcd.backlight());
}

// ------------------------------------------------- HD44780, byte for byte

#[test]
fn init_follows_figure_24_of_the_datasheet() {
    let lcd = Hd44780::new(Recorder::default(), 16, 2).unwrap();
    assert_eq!(lcd.bus().ops, init_sequence_2_lines());
    assert_eq!(lcd.contents(), blank(16, 2));
    assert!(lcd.backlight());
}

#[test]
fn a_one_row_display_is_set_to_one_line() {
    let lcd = Hd44780::new(Recorder::default(), 16, 1).unwrap();
    let mut expected = init_sequence_2_lines();
    // Function set 0x20: N=0, one line.
    expected[10] = w(&[0x2C, 0x28, 0x0C, 0x08]);
    assert_eq!(lcd.bus().ops, expected);
}

#[test]
fn write_at_row_1_sets_the_ddram_address_then_sends_data() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(1, 3, "Hi").unwrap();
    assert_eq!(
        lcd.bus_mut().take(),
        vec![
            // Set DDRAM address 0x80 | (0x40 + 3): row 1 starts at 0x40
            // (DDRAM section, 2-line display). An instruction: RS=0, as the pins
            // already are after initialisation.
            w(&[0xCC, 0xC8, 0x3C, 0x38]),
            us(60),
            // Write data 'H' (0x48): RS=1 (0x01), backlight on (0x08). RS
            // rises first with E low (0x49), so that it is steady before E
            // rises (bus timing characteristics, tAS).
            w(&[0x49, 0x4D, 0x49, 0x8D, 0x89]),
            us(60),
            // Write data 'i' (0x69): RS is already high. The address
            // counter moved on by itself (entry mode I/D=1).
            w(&[0x6D, 0x69, 0x9D, 0x99]),
            us(60),
        ]
    );
    assert_eq!(
        lcd.contents(),
        vec![" ".repeat(16), "   Hi           ".to_owned()]
    );
}

#[test]
fn clear_sends_clear_display_and_waits_it_out() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(0, 0, "hello").unwrap();
    lcd.bus_mut().take();
    lcd.clear().unwrap();
    assert_eq!(
        lcd.bus_mut().take(),
        vec![
            // Clear display 0x01 (Table 6: blanks DDRAM and sets the address
            // counter to 0, so the cursor is home). RS falls first, E low,
            // after the data just written; then 1.52 ms (3 ms with margin).
            w(&[0x08, 0x0C, 0x08, 0x1C, 0x18]),
            ms(3),
        ]
    );
    assert_eq!(lcd.contents(), blank(16, 2));
}

#[test]
fn brightness_switches_the_backlight_bit_alone() {
    let mut lcd = lcd(16, 2);
    lcd.set_brightness(0).unwrap();
    // One byte, E low: P3 (backlight) drops, the LCD sees no strobe.
    assert_eq!(lcd.bus_mut().take(), vec![w(&[0x00])]);
    assert!(!lcd.backlight());
    // What follows keeps the backlight off: 'A' at row 0, column 0.
    lcd.write_at(0, 0, "A").unwrap();
    assert_eq!(
        lcd.bus_mut().take(),
        vec![
            w(&[0x84, 0x80, 0x04, 0x00]),
            us(60),
            w(&[0x41, 0x45, 0x41, 0x15, 0x11]),
            us(60),
        ]
    );
    // Any brightness above 0 is on.
    lcd.set_brightness(1).unwrap();
    assert_eq!(lcd.bus_mut().take(), vec![w(&[0x08])]);
    assert!(lcd.backlight());
}

#[test]
fn rows_2_and_3_of_a_20x4_continue_lines_1_and_2() {
    let mut lcd = lcd(20, 4);
    for (row, address_instruction) in [(0u8, 0x80u8), (1, 0xC0), (2, 0x94), (3, 0xD4)] {
        lcd.write_at(row, 0, "x").unwrap();
        let ops = lcd.bus_mut().take();
        let Op::Write(bytes) = &ops[0] else {
            panic!("row {row}: {ops:?}")
        };
        // The instruction's two nibbles are its last four bytes.
        let high = (address_instruction & 0xF0) | 0x08;
        let low = (address_instruction << 4) | 0x08;
        assert_eq!(
            bytes[bytes.len() - 4..],
            [high | 0x04, high, low | 0x04, low],
            "row {row}"
        );
    }
    assert_eq!(lcd.contents(), vec![padded("x", 20); 4]);
}

#[test]
fn brightness_above_100_is_refused_before_the_bus() {
    let mut lcd = lcd(16, 2);
    assert!(matches!(
        lcd.set_brightness(101),
        Err(HwError::InvalidDisplay { .. })
    ));
    assert!(lcd.bus().ops.is_empty());
    assert!(lcd.backlight());
}

#[test]
fn out_of_range_positions_are_errors_and_write_nothing() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(0, 0, "keep").unwrap();
    lcd.bus_mut().take();
    for (row, col) in [(2, 0), (0, 16), (9, 99)] {
        match lcd.write_at(row, col, "x") {
            Err(HwError::DisplayPosition {
                row: r,
                col: c,
                cols: 16,
                rows: 2,
            }) => assert_eq!((r, c), (row, col)),
            other => panic!("({row}, {col}): unexpected {other:?}"),
        }
    }
    assert!(lcd.bus().ops.is_empty());
    assert_eq!(lcd.contents()[0], padded("keep", 16));
}

#[test]
fn an_empty_text_writes_nothing() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(1, 15, "").unwrap();
    assert!(lcd.bus().ops.is_empty());
}

#[test]
fn a_failing_bus_at_start_is_an_error() {
    let bus = Recorder {
        accept: Some(3),
        ..Recorder::default()
    };
    assert!(matches!(
        Hd44780::new(bus, 16, 2),
        Err(HwError::Device { .. })
    ));
}

#[test]
fn sizes_the_controller_cannot_address_are_refused_before_the_bus() {
    for (cols, rows) in [(16, 3), (21, 4), (0, 2), (41, 1)] {
        // A bus that refuses everything: an error other than
        // InvalidDisplay would mean the driver wrote first.
        let bus = Recorder {
            accept: Some(0),
            ..Recorder::default()
        };
        assert!(
            matches!(
                Hd44780::new(bus, cols, rows),
                Err(HwError::InvalidDisplay { .. })
            ),
            "{cols}x{rows}"
        );
    }
}

#[test]
fn the_lcd_has_no_buttons() {
    let mut lcd = lcd(16, 2);
    assert!(lcd.buttons().is_empty());
    assert!(lcd.poll_buttons().unwrap().is_empty());
    assert_eq!(lcd.size(), (16, 2));
}

// ------------------------------------------- HD44780, on the emulated LCD

/// Every module size the driver supports, from power-on.
fn powered_on(cols: u8, rows: u8) -> (Hd44780<Recorder>, Emulator) {
    let mut emulator = Emulator::power_on();
    let mut lcd = Hd44780::new(Recorder::default(), cols, rows).unwrap();
    check_glass(&mut lcd, &mut emulator);
    (lcd, emulator)
}

#[test]
fn the_emulated_glass_shows_the_contents_on_every_module_size() {
    for (cols, rows) in [(16, 2), (20, 4), (16, 4), (16, 1), (8, 1), (40, 2)] {
        let (mut lcd, mut emulator) = powered_on(cols, rows);
        for row in 0..rows {
            lcd.write_at(row, row, &format!("row {row} of {cols}x{rows} and more"))
                .unwrap();
            check_glass(&mut lcd, &mut emulator);
        }
        lcd.set_brightness(0).unwrap();
        lcd.write_at(0, cols - 1, "end").unwrap();
        check_glass(&mut lcd, &mut emulator);
        assert!(lcd.contents()[0].ends_with('e'));
        lcd.clear().unwrap();
        check_glass(&mut lcd, &mut emulator);
        assert_eq!(lcd.contents(), blank(cols.into(), rows.into()));
    }
}

#[test]
fn text_is_clipped_at_the_end_of_the_row() {
    let (mut lcd, mut emulator) = powered_on(16, 2);
    lcd.write_at(0, 14, "abcdef").unwrap();
    assert_eq!(lcd.contents()[0], format!("{}ab", " ".repeat(14)));
    assert_eq!(lcd.contents()[1], " ".repeat(16));
    // Without clipping, "cdef" would have run on into DDRAM 0x10-0x13,
    // off the glass of a 16x2 but there.
    check_glass(&mut lcd, &mut emulator);
    assert!(emulator.ddram[0x10..0x14].iter().all(|&c| c == b' '));
}

#[test]
fn characters_outside_the_rom_show_the_documented_replacement() {
    let (mut lcd, mut emulator) = powered_on(16, 2);
    lcd.write_at(0, 0, "é\n25°C\\~").unwrap();
    check_glass(&mut lcd, &mut emulator);
    // '?' (0x3F) for é, newline, backslash (ROM A00 has ¥ at 0x5C) and
    // tilde (→ at 0x7E); 0xDF, the small circle, for °.
    assert_eq!(
        emulator.ddram[..8],
        [0x3F, 0x3F, b'2', b'5', 0xDF, b'C', 0x3F, 0x3F]
    );
    assert_eq!(REPLACEMENT, '?');
    assert_eq!(lcd.contents()[0], padded("??25°C??", 16));
}

#[test]
fn a_bus_error_is_an_error_and_the_next_call_starts_the_lcd_again() {
    let (mut lcd, mut emulator) = powered_on(16, 2);
    lcd.write_at(0, 0, "up").unwrap();
    lcd.set_brightness(0).unwrap();
    check_glass(&mut lcd, &mut emulator);
    // The address goes through; the first character breaks off after
    // three bytes, in the middle of its high nibble's E pulse.
    lcd.bus_mut().accept = Some(1);
    lcd.bus_mut().partial = 3;
    match lcd.write_at(1, 0, "lost") {
        Err(HwError::Device { device, .. }) => {
            assert_eq!(device.to_str(), Some("/dev/i2c-test"))
        }
        other => panic!("unexpected {other:?}"),
    }
    // What did not reach the glass is not in the contents.
    assert_eq!(lcd.contents(), vec![padded("up", 16), " ".repeat(16)]);
    // Still failing: every call says so.
    lcd.bus_mut().partial = 0;
    assert!(lcd.clear().is_err());
    assert!(lcd.set_brightness(50).is_err());
    assert!(!lcd.backlight());
    assert_eq!(lcd.contents()[0], padded("up", 16));

    // The bus is back: the next call initialises the LCD (Figure 24) with
    // the backlight as it was (off), redraws row 0, then does its work.
    lcd.bus_mut().accept = None;
    emulator.feed(&lcd.bus_mut().take());
    lcd.write_at(1, 0, "ok").unwrap();
    let ops = lcd.bus().ops.clone();
    let init: Vec<Op> = init_sequence_2_lines()
        .into_iter()
        .map(|op| match op {
            Op::Write(bytes) => Op::Write(bytes.iter().map(|b| b & !0x08).collect()),
            delay => delay,
        })
        .collect();
    assert_eq!(ops[..init.len()], init[..]);
    assert_eq!(
        ops[init.len()..],
        [
            // Row 0 again: address 0x00, "up".
            w(&[0x84, 0x80, 0x04, 0x00]),
            us(60),
            w(&[0x71, 0x75, 0x71, 0x55, 0x51]),
            us(60),
            w(&[0x75, 0x71, 0x05, 0x01]),
            us(60),
            // Then the write asked for: address 0x40, "ok".
            w(&[0xC0, 0xC4, 0xC0, 0x04, 0x00]),
            us(60),
            w(&[0x61, 0x65, 0x61, 0xF5, 0xF1]),
            us(60),
            w(&[0x65, 0x61, 0xB5, 0xB1]),
            us(60),
        ]
    );
    check_glass(&mut lcd, &mut emulator);
    assert_eq!(lcd.contents(), vec![padded("up", 16), padded("ok", 16)]);
}

#[test]
fn the_emulator_catches_a_broken_sequence() {
    // The check has teeth: a stream without the power-on wait, and one
    // that changes RS as E rises, are both reported.
    let mut emulator = Emulator::power_on();
    emulator.feed(&[w(&[0x08, 0x3C, 0x38])]);
    assert!(emulator.violations.iter().any(|v| v.contains("40 ms")));
    let mut emulator = Emulator::power_on();
    emulator.feed(&[w(&[0x08]), ms(50), w(&[0x3D, 0x39])]);
    assert!(emulator.violations.iter().any(|v| v.contains("tAS")));
    let mut emulator = Emulator::power_on();
    emulator.feed(&[w(&[0x08]), ms(50), w(&[0x3C, 0x38, 0x3C, 0x38])]);
    assert!(emulator.violations.iter().any(|v| v.contains("busy")));
}

/// What a caller does to the display.
#[derive(Debug, Clone)]
enum Action {
    Write {
        row: u8,
        col: u8,
        text: String,
    },
    Clear,
    Brightness(u8),
    /// The bus refuses the next write, after passing on `partial` of its
    /// bytes, and the `then` writes after it.
    Fail {
        partial: usize,
        then: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0u8..5, 0u8..42, "\\PC{0,45}|[ -~]{0,45}").prop_map(|(row, col, text)| Action::Write { row, col, text }),
        1 => Just(Action::Clear),
        1 => (0u8..=110).prop_map(Action::Brightness),
        1 => (0usize..6, 0usize..3).prop_map(|(partial, then)| Action::Fail { partial, then }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random use, bus errors included: every call either does what it
    /// says or is an error, the contents follow a plain model of the grid,
    /// and after every call that succeeds the emulated glass shows them,
    /// with no datasheet rule broken on the way.
    #[test]
    fn random_use_keeps_the_glass_and_the_contents_in_step(
        size in prop::sample::select(vec![(16u8, 2u8), (20, 4), (16, 1), (40, 2), (16, 4)]),
        actions in prop::collection::vec(action(), 1..25),
    ) {
        let (cols, rows) = size;
        let (mut lcd, mut emulator) = powered_on(cols, rows);
        let mut model = vec![vec![' '; usize::from(cols)]; usize::from(rows)];
        let mut failing = 0usize;
        let mut lost = false;
        for action in actions {
            if let Action::Fail { partial, then } = action {
                lcd.bus_mut().accept = Some(0);
                lcd.bus_mut().partial = partial;
                failing = then + 1;
                continue;
            }
            let result = match &action {
                Action::Write { row, col, text } => lcd.write_at(*row, *col, text),
                Action::Clear => lcd.clear(),
                Action::Brightness(p) => lcd.set_brightness(*p),
                Action::Fail { .. } => unreachable!(),
            };
            let refused = match &action {
                Action::Write { row, col, .. } => *row >= rows || *col >= cols,
                Action::Brightness(p) => *p > 100,
                _ => false,
            };
            if refused {
                prop_assert!(result.is_err(), "{action:?} accepted");
                continue;
            }
            // An empty text touches the bus only to bring back an LCD lost
            // to an earlier error.
            let uses_bus =
                !matches!(&action, Action::Write { text, .. } if text.is_empty()) || lost;
            if failing > 0 && uses_bus {
                prop_assert!(result.is_err(), "{action:?} succeeded on a failing bus");
                lost = true;
                failing -= 1;
                lcd.bus_mut().partial = 0;
                if failing == 0 {
                    lcd.bus_mut().accept = None;
                }
                emulator.feed(&lcd.bus_mut().take());
                let contents: Vec<String> = model.iter().map(|r| r.iter().collect()).collect();
                prop_assert_eq!(lcd.contents(), contents);
                continue;
            }
            lost = false;
            prop_assert!(result.is_ok(), "{action:?}: {result:?}");
            match &action {
                Action::Write { row, col, text } => {
                    let cells = &mut model[usize::from(*row)][usize::from(*col)..];
                    for (cell, c) in cells.iter_mut().zip(text.chars()) {
                        *cell = decode(rollcall_hw::display::hd44780::encode(c));
                    }
                }
                Action::Clear => model.iter_mut().for_each(|r| r.fill(' ')),
                _ => {}
            }
            check_glass(&mut lcd, &mut emulator);
            let contents: Vec<String> = model.iter().map(|r| r.iter().collect()).collect();
            prop_assert_eq!(lcd.contents(), contents);
        }
    }
}

// ---------------------------------------------------------------- SimDisplay

#[test]
fn sim_keeps_its_text_for_the_dashboard() {
    let sim = SimDisplay::new(16, 2, &[]);
    let handle = sim.handle();
    let mut display: Box<dyn Display> = Box::new(sim);
    assert_eq!(display.size(), (16, 2));
    assert_eq!(handle.contents(), blank(16, 2));

    display.write_at(0, 0, "Temp 21.5°C").unwrap();
    display.write_at(1, 10, "héllo wörld").unwrap();
    let expected = vec!["Temp 21.5°C     ".to_owned(), "          héllo ".to_owned()];
    assert_eq!(display.contents(), expected);
    assert_eq!(handle.contents(), expected);
    // A later write overwrites only its own cells.
    display.write_at(0, 5, "22").unwrap();
    assert_eq!(handle.contents()[0], "Temp 22.5°C     ");

    display.clear().unwrap();
    assert_eq!(handle.contents(), blank(16, 2));
}

#[test]
fn sim_refuses_what_the_hardware_refuses() {
    let mut display = SimDisplay::new(20, 4, &[]);
    let handle = display.handle();
    display.write_at(3, 19, "x").unwrap();
    assert!(matches!(
        display.write_at(4, 0, "x"),
        Err(HwError::DisplayPosition {
            row: 4,
            col: 0,
            cols: 20,
            rows: 4
        })
    ));
    assert!(matches!(
        display.write_at(0, 20, "x"),
        Err(HwError::DisplayPosition {
            row: 0,
            col: 20,
            ..
        })
    ));
    assert!(matches!(
        display.set_brightness(150),
        Err(HwError::InvalidDisplay { .. })
    ));
    assert_eq!(handle.brightness(), 100);
    display.set_brightness(30).unwrap();
    assert_eq!(handle.brightness(), 30);
    display.write_at(0, 0, "a\tb\u{7}").unwrap();
    assert_eq!(
        handle.contents()[0],
        format!("a{REPLACEMENT}b{REPLACEMENT}{}", " ".repeat(16))
    );
    assert_eq!(handle.contents()[3], format!("{}x", " ".repeat(19)));
}

#[test]
fn sim_buttons_report_changes_once_and_wake_the_owner() {
    let sim = SimDisplay::new(16, 2, &["up", "down", "up"]);
    let handle = sim.handle();
    let mut display: Box<dyn Display> = Box::new(sim);
    assert_eq!(display.buttons(), vec!["up".to_owned(), "down".to_owned()]);

    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    display.set_waker(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));

    // Pressed and released from another thread, as the demo does.
    let remote = handle.clone();
    std::thread::spawn(move || {
        remote.press("up").unwrap();
        remote.press("up").unwrap();
        remote.release("up").unwrap();
        remote.press("down").unwrap();
    })
    .join()
    .unwrap();

    assert_eq!(
        wakes.load(Ordering::SeqCst),
        3,
        "a repeated press is no change"
    );
    assert_eq!(
        display.poll_buttons().unwrap(),
        vec![
            ("up".to_owned(), true),
            ("up".to_owned(), false),
            ("down".to_owned(), true),
        ]
    );
    assert!(display.poll_buttons().unwrap().is_empty());
    assert_eq!(handle.is_pressed("down"), Some(true));
    assert_eq!(handle.is_pressed("up"), Some(false));
    assert_eq!(handle.is_pressed("left"), None);

    match handle.press("left") {
        Err(HwError::NoSuchButton { name }) => assert_eq!(name, "left"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(display.poll_buttons().unwrap().is_empty());
}

#[test]
fn displays_can_move_to_the_agents_task() {
    fn send<T: Send + 'static>(_: &T) {}
    send(&SimDisplay::new(16, 2, &[]));
    send(&lcd(16, 2));
    let boxed: Box<dyn Display> = Box::new(SimDisplay::new(8, 1, &[]));
    send(&boxed);
}
