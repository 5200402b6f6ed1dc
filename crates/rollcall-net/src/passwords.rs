//! The embedded broker's password file: who may log in, and with what.
//!
//! The format, chosen to be written by hand or by `echo` and read at a
//! glance, and documented in docs/embedded-broker.md:
//!
//! ```text
//! # comment lines and empty lines are skipped
//! agent:a long random password
//! hub:another one
//! ```
//!
//! One `user:password` a line, split at the first `:` (a user name has none,
//! a password may); spaces around either are dropped. User names are unique,
//! neither may be empty, and names starting with `$` are kept for the broker
//! itself (its in-process clients). Passwords are kept in clear, as the
//! broker compares them: so the file must not be readable by everyone (it is
//! refused then), and a file readable by its group gets a warning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::NetError;

/// The users a password file names, each with its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, String>,
}

impl std::fmt::Debug for PasswordFile {
    // The user names only: a password is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("PasswordFile")
            .field("users", &names)
            .finish()
    }
}

impl PasswordFile {
    /// Reads and checks `path` (format in the module documentation).
    pub fn load(path: &Path) -> Result<PasswordFile, NetError> {
        check_permissions(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, None, e))?;
        PasswordFile::parse(&text).map_err(|(line, reason)| NetError::PasswordFile {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the text of a password file; an error names its line (from 1),
    /// or none when the whole file is at fault.
    pub(crate) fn parse(text: &str) -> Result<PasswordFile, (Option<usize>, String)> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = Some(index + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err((number, "not `user:password` (no `:`)".into()));
            };
            let (user, password) = (user.trim(), password.trim());
            if user.is_empty() {
                return Err((number, "the user name is empty".into()));
            }
            if user.starts_with('$') {
                return Err((
                    number,
                    format!("user names starting with `$` are reserved (`{user}`)"),
                ));
            }
            if password.is_empty() {
                return Err((number, format!("user `{user}` has an empty password")));
            }
            if users.insert(user.to_owned(), password.to_owned()).is_some() {
                return Err((number, format!("user `{user}` is named twice")));
            }
        }
        if users.is_empty() {
            return Err((None, "names no user (lines are `user:password`)".into()));
        }
        Ok(PasswordFile { users })
    }

    /// The user names and passwords, as rumqttd takes them.
    #[cfg_attr(not(feature = "broker"), allow(dead_code))]
    pub(crate) fn into_users(self) -> HashMap<String, String> {
        self.users
    }

    /// How many users it names.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether it names no user (never true of a loaded file).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn file_error(path: &Path, line: Option<usize>, e: std::io::Error) -> NetError {
    NetError::PasswordFile {
        path: PathBuf::from(path),
        line,
        reason: e.to_string(),
    }
}

/// Refuses a file everyone may read, warns about one its group may read.
#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), NetError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| file_error(path, None, e))?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        return Err(NetError::PasswordFile {
            path: path.to_owned(),
            line: None,
            reason: format!(
                "every user of this machine may read it (mode {:o}); \
                 make it readable by its owner only: chmod 600 {}",
                mode & 0o777,
                path.display()
            ),
        });
    }
    if mode & 0o040 != 0 {
        warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the password file is readable by its group"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), NetError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_comments_and_colons_in_passwords() {
        let file = PasswordFile::parse(
            "# the agent\n\nagent: pass:with:colons \r\n  # indented comment\nhub:x\n",
        )
        .unwrap();
        let users = file.clone().into_users();
        assert_eq!(users.len(), 2);
        assert_eq!(users["agent"], "pass:with:colons");
        assert_eq!(users["hub"], "x");
        assert!(!format!("{file:?}").contains("colons"), "{file:?}");
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, line, needle) in [
            ("a:1\nno colon here\n", Some(2), "no `:`"),
            ("# c\n:pw\n", Some(2), "user name is empty"),
            ("a:\n", Some(1), "empty password"),
            ("a:1\n\na:2\n", Some(3), "named twice"),
            ("$rollcall:x\n", Some(1), "reserved"),
            ("# nothing\n\n", None, "names no user"),
        ] {
            let (got, reason) = PasswordFile::parse(text).unwrap_err();
            assert_eq!(got, line, "{text:?}: {reason}");
            assert!(reason.contains(needle), "{text:?}: {reason}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_file_everyone_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let path = dir.join("passwords");
        std::fs::write(&path, "a:b\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = PasswordFile::load(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(PasswordFile::load(&path).unwrap().len(), 1);
        std::fs::write(&path, "a:b\nbad\n").unwrap();
        let error = PasswordFile::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("line 2") && error.contains("passwords"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rollcall-passwords-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
