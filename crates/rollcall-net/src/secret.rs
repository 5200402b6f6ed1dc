//! A password or key that must not be printed: `Debug` shows that there is
//! one and nothing of it, so a configuration printed whole (`agent
//! --check`) or logged with `{:?}` carries no secret. The value is read only
//! where it is used, through [`Secret::expose`].

use std::fmt;

/// A secret value; its `Debug` is `Secret(hidden)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sends or checks it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_nothing_of_the_value() {
        let secret = Secret::new("hunter2-is-my-password".to_owned());
        let shown = format!("{secret:?} {:#?}", Some(("user", secret.clone())));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(secret.expose(), "hunter2-is-my-password");
    }
}
