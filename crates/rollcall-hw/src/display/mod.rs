//! Character displays behind one synchronous trait, [`Display`]: text at a
//! row and column, clear, brightness, and the buttons some displays carry.
//!
//! The display service in `rollcall-services` decides what a message means
//! (plain text, JSON with a row and column); a backend only puts characters
//! on the glass and remembers what it put there, so that the dashboard and
//! the tests can read the screen back with [`Display::contents`].

use crate::HwError;

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
}

/// Checks that `row`, `col` is a cell of a `cols` × `rows` display, the
/// check every backend makes before it writes anything.
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
