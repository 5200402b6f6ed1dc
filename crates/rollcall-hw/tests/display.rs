//! Displays through the public API: the HD44780 driver against a bus that
//! records every byte and every wait, checked against the HD44780U
//! datasheet and the PCF8574 backpack's wiring; and the simulated display
//! as the display service and the demo use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rollcall_hw::HwError;
use rollcall_hw::display::hd44780::Hd44780;
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

// ---------------------------------------------------------------- HD44780

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
            // (Table 4, 2-line display). Instruction: RS=0.
            w(&[0xCC, 0xC8, 0x3C, 0x38]),
            us(60),
            // Write data 'H' (0x48): RS=1 (0x01), backlight on (0x08).
            w(&[0x4D, 0x49, 0x8D, 0x89]),
            us(60),
            // Write data 'i' (0x69); the address counter moved on by itself
            // (entry mode I/D=1).
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
fn rows_2_and_3_of_a_20x4_continue_lines_1_and_2() {
    let mut lcd = lcd(20, 4);
    for (row, address_instruction) in [(0u8, 0x80u8), (1, 0xC0), (2, 0x94), (3, 0xD4)] {
        lcd.write_at(row, 0, "x").unwrap();
        let ops = lcd.bus_mut().take();
        let high = (address_instruction & 0xF0) | 0x08;
        let low = (address_instruction << 4) | 0x08;
        assert_eq!(
            ops[0],
            w(&[high | 0x04, high, low | 0x04, low]),
            "row {row}"
        );
    }
    assert_eq!(lcd.contents(), vec![format!("x{}", " ".repeat(19)); 4]);
}

#[test]
fn clear_sends_clear_display_and_waits_it_out() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(0, 0, "hello").unwrap();
    lcd.bus_mut().take();
    lcd.clear().unwrap();
    // Clear display 0x01 (Table 6: blanks DDRAM, address counter to 0, so
    // the cursor is home), then its 1.52 ms (3 ms with margin).
    assert_eq!(
        lcd.bus_mut().take(),
        vec![w(&[0x0C, 0x08, 0x1C, 0x18]), ms(3)]
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
            w(&[0x45, 0x41, 0x15, 0x11]),
            us(60),
        ]
    );
    // Any brightness above 0 is on.
    lcd.set_brightness(1).unwrap();
    assert_eq!(lcd.bus_mut().take(), vec![w(&[0x08])]);
    assert!(lcd.backlight());
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
    assert_eq!(lcd.contents()[0], format!("keep{}", " ".repeat(12)));
}

#[test]
fn text_is_clipped_at_the_end_of_the_row() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(0, 14, "abcdef").unwrap();
    let ops = lcd.bus_mut().take();
    // The address, then 'a' and 'b' only: each write followed by its wait.
    assert_eq!(ops.len(), 6);
    assert_eq!(ops[2], w(&[0x6D, 0x69, 0x1D, 0x19]));
    assert_eq!(ops[4], w(&[0x6D, 0x69, 0x2D, 0x29]));
    assert_eq!(lcd.contents()[0], format!("{}ab", " ".repeat(14)));
    assert_eq!(lcd.contents()[1], " ".repeat(16));
}

#[test]
fn characters_outside_the_rom_show_the_documented_replacement() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(0, 0, "é\n25°C\\").unwrap();
    let data: Vec<Op> = lcd
        .bus_mut()
        .take()
        .into_iter()
        .skip(2)
        .step_by(2)
        .collect();
    let codes: Vec<u8> = data
        .iter()
        .map(|op| match op {
            Op::Write(b) => (b[0] & 0xF0) | (b[2] >> 4),
            Op::Delay(_) => panic!("a wait where data was expected"),
        })
        .collect();
    // '?' for é, newline and backslash (ROM A00 has ¥ at 0x5C); 0xDF for °.
    assert_eq!(codes, vec![0x3F, 0x3F, 0x32, 0x35, 0xDF, 0x43, 0x3F]);
    assert_eq!(REPLACEMENT, '?');
    assert_eq!(lcd.contents()[0], format!("??25°C?{}", " ".repeat(9)));
}

#[test]
fn an_empty_text_writes_nothing() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(1, 15, "").unwrap();
    assert!(lcd.bus().ops.is_empty());
}

#[test]
fn a_bus_error_is_an_error_and_the_next_call_starts_the_lcd_again() {
    let mut lcd = lcd(16, 2);
    lcd.write_at(0, 0, "up").unwrap();
    lcd.set_brightness(0).unwrap();
    lcd.bus_mut().take();
    // The address goes through, the first character does not.
    lcd.bus_mut().accept = Some(1);
    match lcd.write_at(1, 0, "lost") {
        Err(HwError::Device { device, .. }) => assert_eq!(device.to_str(), Some("/dev/i2c-test")),
        other => panic!("unexpected {other:?}"),
    }
    // What did not reach the glass is not in the contents.
    assert_eq!(
        lcd.contents(),
        vec![format!("up{}", " ".repeat(14)), " ".repeat(16)]
    );
    // Still failing: every call says so.
    lcd.bus_mut().take();
    assert!(lcd.clear().is_err());
    assert!(lcd.set_brightness(50).is_err());
    assert!(!lcd.backlight());

    // The bus is back: the next call initialises the LCD (Figure 24) with
    // the backlight as it was (off), redraws row 0, then does its work.
    lcd.bus_mut().accept = None;
    lcd.bus_mut().take();
    lcd.write_at(1, 0, "ok").unwrap();
    let ops = lcd.bus_mut().take();
    let init: Vec<Op> = init_sequence_2_lines()
        .into_iter()
        .map(|op| match op {
            Op::Write(bytes) => Op::Write(bytes.iter().map(|b| b & !0x08).collect()),
            delay => delay,
        })
        .collect();
    assert_eq!(ops[..init.len()], init[..]);
    let rest = &ops[init.len()..];
    assert_eq!(
        rest,
        &[
            // Row 0 again: address 0x00, "up".
            w(&[0x84, 0x80, 0x04, 0x00]),
            us(60),
            w(&[0x75, 0x71, 0x55, 0x51]),
            us(60),
            w(&[0x75, 0x71, 0x05, 0x01]),
            us(60),
            // Then the write asked for: address 0x40, "ok".
            w(&[0xC4, 0xC0, 0x04, 0x00]),
            us(60),
            w(&[0x65, 0x61, 0xF5, 0xF1]),
            us(60),
            w(&[0x65, 0x61, 0xB5, 0xB1]),
            us(60),
        ]
    );
    assert_eq!(
        lcd.contents(),
        vec![
            format!("up{}", " ".repeat(14)),
            format!("ok{}", " ".repeat(14))
        ]
    );
}

#[test]
fn a_failing_bus_at_start_is_an_error() {
    let bus = Recorder {
        ops: Vec::new(),
        accept: Some(3),
    };
    assert!(matches!(
        Hd44780::new(bus, 16, 2),
        Err(HwError::Device { .. })
    ));
}

#[test]
fn sizes_the_controller_cannot_address_are_refused_before_the_bus() {
    for (cols, rows) in [(16, 3), (21, 4), (0, 2), (41, 1)] {
        let bus = Recorder {
            ops: Vec::new(),
            accept: Some(0),
        };
        // A bus that refuses everything: an error other than
        // InvalidDisplay would mean the driver wrote first.
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
