//! What the agent keeps across restarts: one JSON file per service in the
//! state folder, written atomically (a temporary file, synced, then renamed
//! over the old one), so a power cut leaves the old state or the new, never
//! half of one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn file_of(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.json"))
}

/// Saves `value` as the state of `service`.
pub fn save(dir: &Path, service: &str, value: &Value) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let path = file_of(dir, service);
    let tmp = dir.join(format!(".{service}.json.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(value).unwrap_or_default())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &path)?;
    // The rename itself is durable only once the folder is synced.
    File::open(dir)?.sync_all()
}

/// The saved state of `service`: `Ok(None)` when there is none.
pub fn load(dir: &Path, service: &str) -> io::Result<Option<Value>> {
    match fs::read(file_of(dir, service)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_replace_whole_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nested");
        assert_eq!(load(&state, "gpio").unwrap(), None);
        save(&state, "gpio", &serde_json::json!({"a": 1})).unwrap();
        save(&state, "gpio", &serde_json::json!({"a": 2})).unwrap();
        assert_eq!(
            load(&state, "gpio").unwrap(),
            Some(serde_json::json!({"a": 2}))
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("gpio.json")]);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("gpio.json"), "{half").unwrap();
        assert_eq!(
            load(dir.path(), "gpio").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
