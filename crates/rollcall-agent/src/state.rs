//! What the agent keeps across restarts: one JSON file per service in the
//! state folder, written atomically (a temporary file, synced, then renamed
//! over the old one), so a power cut leaves the old state or the new, never
//! half of one. The files are the user's only (`0600`, the folder `0700`):
//! a GPIO configuration says what is wired where. The temporary file has a
//! name of its own each time and is created only if nothing is there, so a
//! symlink planted in the folder is never followed. A file that cannot be
//! read as JSON is moved aside to `{service}.json.corrupt`, kept for the
//! user, rather than overwritten by the next save.
//!
//! The agent's session number (the one in its `$state`) is kept there too,
//! in `$session.json`: no service's name starts with `$`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

fn file_of(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.json"))
}

/// Where a state file that could not be read is kept.
pub fn corrupt_file_of(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.json.corrupt"))
}

/// Saves `value` as the state of `service`.
pub fn save(dir: &Path, service: &str, value: &Value) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = file_of(dir, service);
    let tmp = dir.join(format!(
        ".{service}.json.{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(&serde_json::to_vec_pretty(value).unwrap_or_default())?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    // The rename itself is durable only once the folder is synced.
    File::open(dir)?.sync_all()
}

/// What loading a service's saved state found.
#[derive(Debug)]
pub enum Loaded {
    /// Its state.
    State(Value),
    /// Nothing saved.
    Nothing,
    /// A file that is not JSON, moved aside to the `.corrupt` path (the
    /// service starts from its configured state).
    Corrupt {
        /// Where the file is now.
        kept: PathBuf,
        /// Why it could not be read.
        error: serde_json::Error,
    },
}

/// The saved state of `service`. An unreadable folder or file is an error;
/// a file that is not JSON is moved aside and reported as [`Loaded::Corrupt`].
pub fn load(dir: &Path, service: &str) -> io::Result<Loaded> {
    let path = file_of(dir, service);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Nothing),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok(Loaded::State(value)),
        Err(error) => {
            let kept = corrupt_file_of(dir, service);
            fs::rename(&path, &kept)?;
            Ok(Loaded::Corrupt { kept, error })
        }
    }
}

/// The name the session number is saved under, as if a service's.
const SESSION: &str = "$session";

/// This start's session number, saved for the next start: one more than the
/// last start's, and at least `now_ms` (the wall clock in Unix
/// milliseconds).
///
/// Either alone fails somewhere: the wall clock of a Raspberry Pi (no
/// real-time clock) can start behind its last run until NTP syncs, and a
/// state folder can be new or wiped (a fresh card, a `/tmp` folder). Taking
/// the larger of the two increases across restarts unless both fail at
/// once. The number is returned even when reading or saving failed; the
/// error comes with it, for a warning.
pub fn next_session(dir: &Path, now_ms: u64) -> (u64, Option<io::Error>) {
    let mut problem = None;
    let last = match load(dir, SESSION) {
        Ok(Loaded::State(value)) => value.get("session").and_then(Value::as_u64),
        Ok(Loaded::Nothing) => None,
        Ok(Loaded::Corrupt { kept, error }) => {
            let kept = kept.display();
            problem = Some(io::Error::other(format!("{error}; kept aside at {kept}")));
            None
        }
        Err(error) => {
            problem = Some(error);
            None
        }
    };
    let session = last.map_or(now_ms, |last| last.saturating_add(1).max(now_ms));
    if let Err(error) = save(dir, SESSION, &serde_json::json!({ "session": session })) {
        problem.get_or_insert(error);
    }
    (session, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn state(loaded: Loaded) -> Option<Value> {
        match loaded {
            Loaded::State(v) => Some(v),
            Loaded::Nothing => None,
            Loaded::Corrupt { kept, error } => panic!("corrupt: {error} at {kept:?}"),
        }
    }

    #[test]
    fn saves_replace_whole_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("nested");
        assert_eq!(state(load(&state_dir, "gpio").unwrap()), None);
        save(&state_dir, "gpio", &serde_json::json!({"a": 1})).unwrap();
        save(&state_dir, "gpio", &serde_json::json!({"a": 2})).unwrap();
        assert_eq!(
            state(load(&state_dir, "gpio").unwrap()),
            Some(serde_json::json!({"a": 2}))
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("gpio.json")]);
    }

    // Issue 11: state files were world-readable.
    #[test]
    fn the_files_and_the_folder_are_the_users_only() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        save(&state_dir, "gpio", &serde_json::json!({})).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file_of(&state_dir, "gpio")), 0o600);
        assert_eq!(mode(&state_dir), 0o700);
    }

    // Issue 11: the temporary file had a fixed name and followed symlinks.
    #[test]
    fn a_symlink_in_the_folder_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "untouched").unwrap();
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).unwrap();
        // Where the old fixed temporary name was.
        std::os::unix::fs::symlink(&target, state_dir.join(".gpio.json.tmp")).unwrap();
        save(&state_dir, "gpio", &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(
            state(load(&state_dir, "gpio").unwrap()),
            Some(serde_json::json!({"a": 1}))
        );
    }

    // Issue 11: a corrupt file was overwritten by the next save.
    #[test]
    fn a_damaged_file_is_kept_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("gpio.json"), "{half").unwrap();
        match load(dir.path(), "gpio").unwrap() {
            Loaded::Corrupt { kept, .. } => {
                assert_eq!(kept, corrupt_file_of(dir.path(), "gpio"));
                assert_eq!(fs::read_to_string(&kept).unwrap(), "{half");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(load(dir.path(), "gpio").unwrap(), Loaded::Nothing));
        save(dir.path(), "gpio", &serde_json::json!({})).unwrap();
        assert_eq!(
            fs::read_to_string(corrupt_file_of(dir.path(), "gpio")).unwrap(),
            "{half"
        );
    }

    #[test]
    fn session_numbers_increase_even_when_the_clock_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (first, error) = next_session(dir.path(), 1_000);
        assert!(error.is_none());
        assert_eq!(first, 1_000);
        // The clock went back (a Pi booting without its time yet).
        assert_eq!(next_session(dir.path(), 10).0, 1_001);
        // The clock moved on: it wins.
        assert_eq!(next_session(dir.path(), 5_000).0, 5_000);
        assert_eq!(next_session(dir.path(), 5_000).0, 5_001);
    }

    #[test]
    fn a_session_number_comes_even_without_a_usable_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        fs::write(&file, b"x").unwrap();
        let (session, error) = next_session(&file, 42);
        assert_eq!(session, 42);
        assert!(error.is_some());
    }
}
