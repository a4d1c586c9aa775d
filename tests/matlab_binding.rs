//! The MATLAB / GNU Octave binding (bindings/matlab), tested in GNU Octave: builds the MEX
//! gateway against the freshly built `target/release/libdynlib.so` with `mkoctfile --mex`
//! and runs `bindings/matlab/tests/run_tests.m` with `octave-cli`; a second test checks that
//! `build_mex.m` builds a working MEX by itself.
//!
//! Needs `apt-get install -y octave liboctave-dev` (`.ci/run` installs them); without Octave
//! the tests fail unless `DYNLIB_SKIP_OCTAVE=1` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL_HINT: &str = "GNU Octave is needed for the MATLAB binding tests: \
     apt-get install -y octave liboctave-dev (or set DYNLIB_SKIP_OCTAVE=1 to skip them)";

fn skipped(test: &str) -> bool {
    if std::env::var("DYNLIB_SKIP_OCTAVE").is_ok_and(|v| v == "1") {
        common::skip(test, "DYNLIB_SKIP_OCTAVE=1");
        return true;
    }
    false
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of an up-to-date `libdynlib` cdylib to link the MEX against.
fn lib_dir() -> PathBuf {
    common::c_library_dir()
}

/// Runs a tool, failing with the install hint when it is not installed.
fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{:?} not found. {INSTALL_HINT}", cmd.get_program())
        }
        Err(e) => panic!("cannot run {:?}: {e}", cmd.get_program()),
    }
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A path as an Octave single-quoted string literal.
fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

fn octave(cwd: &Path, code: &str) -> Output {
    run(Command::new("octave-cli")
        .args(["--no-history", "--no-gui", "--no-init-file", "--eval", code])
        .current_dir(cwd))
}

#[test]
fn octave_runs_the_binding_tests() {
    if skipped("octave_runs_the_binding_tests") {
        return;
    }
    let lib = lib_dir();
    let work = tempfile::tempdir().unwrap();
    let mex = work.path().join("dynlib_mex.mex");
    let source = repo().join("bindings/matlab/dynlib_mex.c");
    let build = run(Command::new("mkoctfile")
        .arg("--mex")
        .arg("-DMX_HAS_INTERLEAVED_COMPLEX=1")
        .arg(format!("-I{}", repo().join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-ldynlib")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&mex)
        .arg(&source)
        .current_dir(work.path()));
    assert!(build.status.success(), "mkoctfile failed\n{}", text(&build));
    assert!(mex.exists(), "mkoctfile did not write {}", mex.display());

    let code = format!(
        "addpath({}); addpath({}); run_tests",
        quoted(work.path()),
        quoted(&repo().join("bindings/matlab/tests"))
    );
    let out = octave(work.path(), &code);
    let report = text(&out);
    eprintln!("{report}");
    assert!(out.status.success(), "the Octave tests failed\n{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(" 0 failed") && !stdout.contains("FAIL "),
        "unexpected Octave output\n{report}"
    );
}

#[test]
fn build_mex_script_builds_a_working_mex() {
    if skipped("build_mex_script_builds_a_working_mex") {
        return;
    }
    let lib = lib_dir();
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("mex out");
    let code = format!(
        "addpath({}); f = build_mex({}, {}); addpath(fileparts(f)); \
         printf('version=%s\\n', dynlib.version()); \
         s = dynlib.Sim('builtin://ode/lorenz'); s.run('T', 0.1); r = s.results(); \
         printf('samples=%d\\n', numel(r.t));",
        quoted(&repo().join("bindings/matlab")),
        quoted(&lib),
        quoted(&out_dir)
    );
    let out = octave(work.path(), &code);
    let report = text(&out);
    assert!(out.status.success(), "build_mex.m failed\n{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("version={}", env!("CARGO_PKG_VERSION"))),
        "{report}"
    );
    assert!(stdout.contains("samples=11"), "{report}");
}
