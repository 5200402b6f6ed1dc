//! Character displays behind one synchronous trait, [`Display`]: text at a
//! row and column, clear, brightness, and the buttons some displays carry;
//! with a simulated display ([`sim::SimDisplay`]) and an HD44780 character
//! LCD on a PCF8574 I2C backpack ([`hd44780::Hd44780`]).
//!
//! The display service in `rollcall-services` decides what a message means
//! (plain text, JSON with a row and column); a backend only puts characters
//! on the glass and remembers what it put there, so that the dashboard and
//! the tests can read the screen back with [`Display::contents`]: one
//! `String` per row, each exactly as many characters as the display has
//! columns, blank cells as spaces.

use crate::HwError;
use crate::gpio::EventWaker;

pub mod hd44780;
pub mod i2c;
pub mod sim;

/// What a backend puts in a cell for a character it cannot show: control
/// characters everywhere, and on an HD44780 anything outside its ROM.
pub const REPLACEMENT: char = '?';

/// At most this many button changes wait for [`Display::poll_buttons`]; the
/// oldest are dropped first, so an owner that stops polling cannot grow
/// memory without bound.
pub const MAX_PENDING_BUTTONS: usize = 1024;

/// A character display: a grid of `cols` × `rows` cells, rows numbered from
/// 0 at the top, columns from 0 at the left.
pub trait Display: Send {
    /// Text columns and rows, e.g. (16, 2).
    fn size(&self) -> (u8, u8);
    /// Writes `text` at `row`, `col`, clipped to the row's end. Out-of-range row/col is an HwError.
    fn write_at(&mut self, row: u8, col: u8, text: &str) -> Result<(), HwError>;
    /// Blanks the screen and homes the cursor.
    fn clear(&mut self) -> Result<(), HwError>;
    /// Brightness 0..=100; a display with only a backlight switch treats 0 as off, anything else as on.
    fn set_brightness(&mut self, percent: u8) -> Result<(), HwError>;
    /// Button changes since the last call: (button name, pressed). Displays without buttons return an empty Vec.
    fn poll_buttons(&mut self) -> Result<Vec<(String, bool)>, HwError>;
    /// The button names this display has (may be empty).
    fn buttons(&self) -> Vec<String>;
    /// What the screen shows now, one String per row (what was written, for the dashboard and tests).
    fn contents(&self) -> Vec<String>;

    /// Installs a waker that the display calls (from any thread) when a
    /// button changes, so its owner can call [`Display::poll_buttons`] at
    /// once instead of on a timer. Displays without buttons, or whose
    /// buttons must be polled, ignore it.
    fn set_waker(&mut self, waker: EventWaker) {
        let _ = waker;
    }
}

/// Checks that `row`, `col` is a cell of a display of `size` (columns,
/// rows): the check every backend makes before it writes anything.
pub fn check_position(size: (u8, u8), row: u8, col: u8) -> Result<(), HwError> {
    let (cols, rows) = size;
    if row >= rows || col >= cols {
        return Err(HwError::DisplayPosition {
            row,
            col,
            cols,
            rows,
        });
    }
    Ok(())
}

/// Checks a brightness percentage: 0 to 100.
pub fn check_brightness(percent: u8) -> Result<(), HwError> {
    if percent > 100 {
        return Err(HwError::InvalidDisplay {
            reason: format!("brightness {percent} is above 100"),
        });
    }
    Ok(())
}

/// The characters of `text` that fit in a row from `col` on, for a display
/// `cols` wide: clipping counts characters, not bytes.
pub(crate) fn clip(text: &str, cols: u8, col: u8) -> impl Iterator<Item = char> + '_ {
    text.chars().take(usize::from(cols.saturating_sub(col)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_outside_the_grid_are_refused() {
        assert!(check_position((16, 2), 0, 0).is_ok());
        assert!(check_position((16, 2), 1, 15).is_ok());
        for (row, col) in [(2, 0), (0, 16), (255, 255)] {
            match check_position((16, 2), row, col) {
                Err(HwError::DisplayPosition {
                    row: r,
                    col: c,
                    cols: 16,
                    rows: 2,
                }) => assert_eq!((r, c), (row, col)),
                other => panic!("({row}, {col}): unexpected {other:?}"),
            }
        }
        assert!(check_position((0, 0), 0, 0).is_err());
    }

    #[test]
    fn brightness_above_100_is_refused() {
        assert!(check_brightness(0).is_ok());
        assert!(check_brightness(100).is_ok());
        assert!(matches!(
            check_brightness(101),
            Err(HwError::InvalidDisplay { .. })
        ));
    }

    #[test]
    fn clipping_counts_characters() {
        assert_eq!(clip("héllo", 4, 1).collect::<String>(), "hél");
        assert_eq!(clip("abc", 4, 4).count(), 0);
    }
}
