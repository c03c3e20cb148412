//! Gates for tests that need root or a kernel feature.
//!
//! Under `CI=true` a test whose requirement is missing **fails** (a skipped privileged test would
//! make CI lie). Elsewhere it prints exactly one line, `SKIP <test>: <why>`, and the test returns
//! early.

use std::fmt::Display;

/// True when the `CI` environment variable is `true` or `1`.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when the process runs with effective uid 0.
#[must_use]
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Decides whether `test` can run given `requirement`'s availability.
///
/// Returns `true` when available. When not: panics under CI, otherwise prints one `SKIP` line and
/// returns `false`.
///
/// # Panics
/// Under `CI=true` when the requirement is unavailable.
#[must_use]
pub fn check<E: Display>(test: &str, requirement: &str, available: Result<(), E>) -> bool {
    match available {
        Ok(()) => {
            record_ran(test, requirement);
            true
        }
        Err(why) if in_ci() => {
            panic!("{test} needs {requirement}, which is unavailable under CI=true: {why}")
        }
        Err(why) => {
            eprintln!("SKIP {test}: needs {requirement}: {why}");
            false
        }
    }
}

/// Appends `RAN <test> with <requirement>` to the file named by `CNIKIT_PRIVILEGED_LOG`, if set,
/// so that CI logs show which privileged tests really executed.
fn record_ran(test: &str, requirement: &str) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("CNIKIT_PRIVILEGED_LOG") else {
        return;
    };
    let line = format!("RAN {test} with {requirement}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "cnikit-test-support: cannot record to {}: {e}",
            path.to_string_lossy()
        );
    }
}

/// [`check`] for root privileges.
#[must_use]
pub fn root(test: &str) -> bool {
    check(
        test,
        "root",
        if is_root() {
            Ok(())
        } else {
            Err("not running as root (run the suite with sudo)")
        },
    )
}

/// Returns from the calling test unless it runs as root (fails instead under `CI=true`).
#[macro_export]
macro_rules! require_root {
    ($test:expr) => {
        if !$crate::privilege::root($test) {
            return;
        }
    };
}

/// Returns from the calling test unless `available` is `Ok` (fails instead under `CI=true`).
///
/// `require!(test_name, "TCX (kernel >= 6.6)", probe_result)`.
#[macro_export]
macro_rules! require {
    ($test:expr, $requirement:expr, $available:expr) => {
        if !$crate::privilege::check($test, $requirement, $available) {
            return;
        }
    };
}
