//! Runs the Python binding's pytest suite (`bindings/python/tests`) against the shared library
//! this `cargo test` built (`libdynlib.so` in `target/<profile>/` or its `deps/`, where this
//! test executable lives), so the binding is tested with the very code under test.
//!
//! Needs `python3` with NumPy and pytest (`pip install numpy pytest`); set
//! `DYNLIB_SKIP_PYTHON=1` to skip on machines without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const SKIP_ENV: &str = "DYNLIB_SKIP_PYTHON";

fn skipped() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

/// The cdylib this `cargo test` built (see `common::c_library_dir`).
fn cdylib() -> PathBuf {
    common::c_library_dir().join(format!(
        "{}dynlib{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

fn python_ready() {
    let probe = Command::new("python3")
        .args(["-c", "import numpy, pytest"])
        .output();
    match probe {
        Err(e) => panic!(
            "python3 is needed to test the Python binding ({e}): install Python 3 and \
             `pip install numpy pytest`, or set {SKIP_ENV}=1 to skip this test"
        ),
        Ok(out) if !out.status.success() => panic!(
            "the Python binding's tests need NumPy and pytest: `pip install numpy pytest` \
             (or set {SKIP_ENV}=1 to skip this test)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}

#[test]
fn python_binding_pytest_suite() {
    if skipped() {
        eprintln!("{SKIP_ENV}=1: the Python binding's tests are skipped");
        return;
    }
    python_ready();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = cdylib();
    let out = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "bindings/python/tests",
        ])
        .current_dir(root)
        .env("DYNLIB_LIBRARY", &lib)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest failed (library {}):\n{stdout}\n{stderr}",
        lib.display()
    );
    // Say what ran: the summary line, e.g. "22 passed in 0.70s".
    let summary = stdout.lines().rev().find(|l| l.contains("passed"));
    assert!(
        summary.is_some_and(|l| !l.contains("failed") && !l.contains("error")),
        "unexpected pytest output:\n{stdout}"
    );
    eprintln!("python binding: {}", summary.unwrap_or_default().trim());
}
