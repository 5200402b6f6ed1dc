//! A password or key that must not be printed: `Debug` shows that there is
//! one and nothing of it, so a configuration printed whole (`agent
//! --check`) or logged with `{:?}` carries no secret. The value is read only
//! where it is used, through [`Secret::expose`].

use std::fmt;
use std::path::Path;

use crate::NetError;

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

impl Secret<String> {
    /// The first line of a file, without its line ending: how a password
    /// or token is kept out of the command line and the configuration.
    /// An empty first line is refused, as a mistake rather than a secret.
    pub fn from_file(path: &Path) -> Result<Self, NetError> {
        let error = |reason: String| NetError::SecretFile {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(error("the first line is empty".into()));
        }
        Ok(Secret(line.to_owned()))
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

    #[test]
    fn from_file_takes_the_first_line_and_refuses_an_empty_one() {
        let dir = std::env::temp_dir().join(format!("rollcall-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        std::fs::write(&path, "s3cret pass\r\nignored\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "s3cret pass");
        std::fs::write(&path, "\nsecond").unwrap();
        let error = Secret::from_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("empty") && error.contains("password"),
            "{error}"
        );
        let error = Secret::from_file(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
