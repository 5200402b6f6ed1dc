//! Finding the programs a test needs, and the one rule for a test that
//! cannot run here: it says why and is skipped, except under `CI=true`,
//! where it fails, so nothing is skipped in CI without anyone noticing.

use std::path::PathBuf;

/// Whether the environment says this is CI (`CI=true`), where nothing may be
/// skipped.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a test that cannot run here: skipped with its reason (printed on
/// stderr), or, under `CI=true`, failed.
pub fn skip<T>(test: &str, reason: &str) -> Option<T> {
    assert!(!ci(), "{test}: CI=true, and it cannot run: {reason}");
    eprintln!("skipped {test}: {reason}");
    None
}

/// Where a program is: on `PATH`, or in the sbin folders where Debian puts
/// daemons and network tools (`mosquitto`, `ip`, `nft`), often outside a
/// normal user's `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The program `name`, or `None` after [`skip`]ping `test`, naming the
/// Debian `package` that provides it.
pub fn require_program(test: &str, name: &str, package: &str) -> Option<PathBuf> {
    match find_program(name) {
        Some(path) => Some(path),
        None => skip(
            test,
            &format!("{name} is not installed (apt-get install {package})"),
        ),
    }
}
