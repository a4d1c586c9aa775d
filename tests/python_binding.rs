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
        common::skip("python_binding_pytest_suite", &format!("{SKIP_ENV}=1"));
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

/// `pip install ./bindings/python` into a fresh virtual environment (with the system's
/// site-packages for NumPy and pytest), then the pytest suite against the installed package:
/// the tests run from a copy outside the repository, so `import dynlib` is the installed
/// module, not the source file.
#[test]
fn python_package_installs_into_a_fresh_venv_and_passes_its_tests() {
    if skipped() {
        common::skip(
            "python_package_installs_into_a_fresh_venv_and_passes_its_tests",
            &format!("{SKIP_ENV}=1"),
        );
        return;
    }
    python_ready();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let venv = work.join("venv");
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(
        Command::new("python3")
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv),
        "python3 -m venv",
    );
    let py = venv.join("bin/python");
    run(
        Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
            ])
            .arg(root.join("bindings/python"))
            .env("PIP_NO_INPUT", "1"),
        "pip install ./bindings/python",
    );
    let shown = run(
        Command::new(&py).args(["-m", "pip", "show", "dynlib-rs"]),
        "pip show dynlib-rs",
    );
    assert!(shown.contains("Name: dynlib-rs"), "{shown}");
    // The tests, outside the repository.
    let tests = work.join("suite/tests");
    std::fs::create_dir_all(&tests).unwrap();
    for e in std::fs::read_dir(root.join("bindings/python/tests")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "py") {
            std::fs::copy(&p, tests.join(p.file_name().unwrap())).unwrap();
        }
    }
    let lib = cdylib();
    let where_ = run(
        Command::new(&py)
            .args([
                "-c",
                "import dynlib; print(dynlib.__file__); print(dynlib.library_path()); \
                 print(dynlib.library_origin)",
            ])
            .current_dir(&tests)
            .env("DYNLIB_LIBRARY", &lib),
        "import dynlib",
    );
    let lines: Vec<&str> = where_.lines().collect();
    assert!(
        lines[0].starts_with(venv.to_str().unwrap()) && lines[0].contains("site-packages"),
        "not the installed module: {where_}"
    );
    assert_eq!(lines[2], "DYNLIB_LIBRARY", "{where_}");
    let out = Command::new(&py)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(work.join("suite"))
        .env("DYNLIB_LIBRARY", &lib)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest against the installed package failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().rev().find(|l| l.contains("passed"));
    assert!(
        summary.is_some_and(|l| !l.contains("failed") && !l.contains("error")),
        "{stdout}"
    );
    common::report(&format!(
        "installed python package (venv): {}",
        summary.unwrap_or_default().trim()
    ));
}
