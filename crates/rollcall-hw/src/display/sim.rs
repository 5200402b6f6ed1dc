//! The simulated display: a grid of characters, a brightness and named
//! buttons held in memory, read and driven from outside through a
//! [`SimDisplayHandle`] by a test, the demo or the dashboard.
//!
//! It keeps any printable character as written (it has no character ROM),
//! so the demo shows what was sent; control characters, which no display
//! shows as themselves, become [`REPLACEMENT`]. Positions, clipping and
//! brightness are checked as on the real display, so a service tested on
//! the simulation is refused what the hardware would refuse.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Display, MAX_PENDING_BUTTONS, REPLACEMENT, check_brightness, check_position, clip};
use crate::HwError;
use crate::gpio::EventWaker;

/// A simulated display of `cols` × `rows` cells with named buttons.
pub struct SimDisplay {
    shared: Arc<Shared>,
}

/// Reads a [`SimDisplay`]'s screen and brightness and presses its buttons
/// from any thread; clones share the display.
#[derive(Clone)]
pub struct SimDisplayHandle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    cols: u8,
    rows: u8,
    cells: Vec<Vec<char>>,
    brightness: u8,
    /// Every button in the order given, with whether it is held down.
    buttons: Vec<(String, bool)>,
    changes: VecDeque<(String, bool)>,
    waker: Option<EventWaker>,
}

impl State {
    fn blank(&mut self) {
        for row in &mut self.cells {
            row.fill(' ');
        }
    }
}

impl Shared {
    /// Every change under the lock is a single assignment or push, so a lock
    /// poisoned by a panic elsewhere still guards whole state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SimDisplay {
    /// A blank display of `cols` × `rows` at full brightness, with the
    /// named buttons all released (a name given twice is one button).
    pub fn new(cols: u8, rows: u8, buttons: &[&str]) -> Self {
        let mut names: Vec<(String, bool)> = Vec::with_capacity(buttons.len());
        for name in buttons {
            if !names.iter().any(|(known, _)| known == name) {
                names.push(((*name).to_owned(), false));
            }
        }
        SimDisplay {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    cols,
                    rows,
                    cells: vec![vec![' '; usize::from(cols)]; usize::from(rows)],
                    brightness: 100,
                    buttons: names,
                    changes: VecDeque::new(),
                    waker: None,
                }),
            }),
        }
    }

    /// A handle to read the screen and press buttons from outside the
    /// display's owner.
    pub fn handle(&self) -> SimDisplayHandle {
        SimDisplayHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for SimDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("SimDisplay")
            .field("cols", &state.cols)
            .field("rows", &state.rows)
            .field("brightness", &state.brightness)
            .field("buttons", &state.buttons)
            .finish_non_exhaustive()
    }
}

fn contents(state: &State) -> Vec<String> {
    state.cells.iter().map(|row| row.iter().collect()).collect()
}

impl Display for SimDisplay {
    fn size(&self) -> (u8, u8) {
        let state = self.shared.lock();
        (state.cols, state.rows)
    }

    fn write_at(&mut self, row: u8, col: u8, text: &str) -> Result<(), HwError> {
        let mut state = self.shared.lock();
        check_position((state.cols, state.rows), row, col)?;
        let cols = state.cols;
        let cells = &mut state.cells[usize::from(row)][usize::from(col)..];
        for (cell, c) in cells.iter_mut().zip(clip(text, cols, col)) {
            *cell = if c.is_control() { REPLACEMENT } else { c };
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<(), HwError> {
        self.shared.lock().blank();
        Ok(())
    }

    fn set_brightness(&mut self, percent: u8) -> Result<(), HwError> {
        check_brightness(percent)?;
        self.shared.lock().brightness = percent;
        Ok(())
    }

    fn poll_buttons(&mut self) -> Result<Vec<(String, bool)>, HwError> {
        Ok(self.shared.lock().changes.drain(..).collect())
    }

    fn buttons(&self) -> Vec<String> {
        let state = self.shared.lock();
        state.buttons.iter().map(|(name, _)| name.clone()).collect()
    }

    fn contents(&self) -> Vec<String> {
        contents(&self.shared.lock())
    }

    fn set_waker(&mut self, waker: EventWaker) {
        self.shared.lock().waker = Some(waker);
    }
}

impl SimDisplayHandle {
    /// Columns and rows.
    pub fn size(&self) -> (u8, u8) {
        let state = self.shared.lock();
        (state.cols, state.rows)
    }

    /// What the screen shows, one `String` per row, every row `cols` wide.
    pub fn contents(&self) -> Vec<String> {
        contents(&self.shared.lock())
    }

    /// The brightness last set, 0 to 100 (100 until set).
    pub fn brightness(&self) -> u8 {
        self.shared.lock().brightness
    }

    /// The button names, in the order the display was made with.
    pub fn buttons(&self) -> Vec<String> {
        let state = self.shared.lock();
        state.buttons.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Whether the button is held down; `None` for a name the display does
    /// not have.
    pub fn is_pressed(&self, name: &str) -> Option<bool> {
        let state = self.shared.lock();
        state
            .buttons
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, pressed)| *pressed)
    }

    /// Presses a button (see [`SimDisplayHandle::set_button`]).
    pub fn press(&self, name: &str) -> Result<(), HwError> {
        self.set_button(name, true)
    }

    /// Releases a button (see [`SimDisplayHandle::set_button`]).
    pub fn release(&self, name: &str) -> Result<(), HwError> {
        self.set_button(name, false)
    }

    /// Holds a button down or lets it go. A change is queued for
    /// [`Display::poll_buttons`] and the waker called, after the lock is
    /// released, so a waker may read the display; setting a button to the
    /// state it is in changes nothing, as a level that did not move makes
    /// no edge.
    pub fn set_button(&self, name: &str, pressed: bool) -> Result<(), HwError> {
        let waker = {
            let mut state = self.shared.lock();
            let Some(button) = state.buttons.iter_mut().find(|(known, _)| known == name) else {
                return Err(HwError::NoSuchButton {
                    name: name.to_owned(),
                });
            };
            if button.1 == pressed {
                return Ok(());
            }
            button.1 = pressed;
            if state.changes.len() >= MAX_PENDING_BUTTONS {
                state.changes.pop_front();
            }
            state.changes.push_back((name.to_owned(), pressed));
            state.waker.clone()
        };
        if let Some(wake) = waker {
            wake();
        }
        Ok(())
    }
}

impl fmt::Debug for SimDisplayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDisplayHandle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_queue_is_bounded_and_drops_the_oldest() {
        let display = SimDisplay::new(16, 2, &["a"]);
        let handle = display.handle();
        let mut display: Box<dyn Display> = Box::new(display);
        let presses = MAX_PENDING_BUTTONS + 5;
        for i in 0..presses {
            handle.set_button("a", i % 2 == 0).unwrap();
        }
        let changes = display.poll_buttons().unwrap();
        assert_eq!(changes.len(), MAX_PENDING_BUTTONS);
        // Change i presses on even i; the first five (0..5) were dropped,
        // so the oldest kept is change 5, a release.
        assert_eq!(changes[0], ("a".to_owned(), false));
        assert!(display.poll_buttons().unwrap().is_empty());
    }
}
