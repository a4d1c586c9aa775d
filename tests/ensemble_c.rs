//! The ensemble part of the C API from C: compiles the conformance file
//! `tests/c/ensemble_surface.c` (a copy of the shared one) and runs `tests/c/test_ensemble.c`
//! natively and under valgrind memcheck, against the library `cargo test` just built.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("c-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"];

#[test]
fn ensemble_surface_conformance_file_compiles() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    run(Command::new(cc)
        .args(C_FLAGS)
        .arg("-I")
        .arg(repo().join("include"))
        .arg("-c")
        .arg(repo().join("tests/c/ensemble_surface.c"))
        .arg("-o")
        .arg(build_dir().join("ensemble_surface.o")));
}

/// Each test builds its own executable: tests run in parallel, and one must not overwrite the
/// program another is running.
fn build_suite(name: &str) -> PathBuf {
    let lib = common::c_library_dir();
    let out = build_dir().join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    run(Command::new(cc)
        .args(C_FLAGS)
        .arg("-I")
        .arg(repo().join("include"))
        .arg(repo().join("tests/c/test_ensemble.c"))
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ldynlib", "-lpthread", "-lm"]));
    out
}

fn work_dir(name: &str) -> PathBuf {
    let dir = build_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn c_ensemble_suite_passes() {
    let exe = build_suite("test_ensemble");
    let out = run(Command::new(&exe).arg(work_dir("ensemble-c-work")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(", 0 failures"), "{text}");
    eprintln!("{text}");
}

#[test]
fn c_ensemble_suite_is_clean_under_valgrind() {
    if std::env::var("DYNLIB_SKIP_VALGRIND").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: DYNLIB_SKIP_VALGRIND=1");
        return;
    }
    let exe = build_suite("test_ensemble_vg");
    let out = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite",
            "--quiet",
        ])
        .arg(&exe)
        .arg(work_dir("ensemble-c-valgrind"))
        .output()
        .expect("valgrind is needed (apt-get install valgrind), or set DYNLIB_SKIP_VALGRIND=1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(", 0 failures"),
        "valgrind reported errors or definite leaks ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("valgrind: clean; {}", stdout.trim());
}
