//! A child process that ends with the test, however the test ends.

use std::process::Child;

/// Kills the child (SIGKILL) and reaps it when dropped, also when the test
/// panicked.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
