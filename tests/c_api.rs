//! Drives the C side: compiles the header alone (C99 and C++17), the API conformance file, the
//! C suite (`tests/c/test_c_api.c`, also under valgrind, built with AddressSanitizer +
//! UndefinedBehaviorSanitizer, and linked statically), the C++ RAII
//! wrapper's test and the C examples, all against the library `cargo test` just built, and
//! checks that the exported symbols are exactly the functions the header declares.

use std::path::PathBuf;

mod common;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` with libdynlib.so/.a up to date.
fn lib_dir() -> PathBuf {
    common::c_library_dir()
}

/// `target/<profile>/c-tests`: the compiled C and C++ programs.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("c-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

const C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"];
const CXX_FLAGS: &[&str] = &[
    "-std=c++17",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-g",
];

/// Compiles and links C sources against the shared library (with an rpath to it).
fn build_c(name: &str, sources: &[PathBuf]) -> PathBuf {
    let out = build_dir().join(name);
    let lib = lib_dir();
    run(Command::new(tool("CC", "cc"))
        .args(C_FLAGS)
        .arg("-I")
        .arg(repo().join("include"))
        .args(sources)
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ldynlib", "-lpthread", "-lm"]));
    out
}

fn work_dir(name: &str) -> PathBuf {
    let dir = build_dir().join(format!("{name}-work"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn header_compiles_alone_as_c99_and_cxx17() {
    let dir = build_dir();
    for (file, compiler, flags) in [
        ("alone.c", tool("CC", "cc"), C_FLAGS),
        ("alone.cpp", tool("CXX", "c++"), CXX_FLAGS),
    ] {
        let src = dir.join(file);
        // Twice: the include guard must make a second inclusion harmless.
        std::fs::write(&src, "#include \"dynlib.h\"\n#include \"dynlib.h\"\n").unwrap();
        run(Command::new(compiler)
            .args(flags)
            .arg("-I")
            .arg(repo().join("include"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(dir.join(format!("{file}.o"))));
    }
}

#[test]
fn api_surface_conformance_file_compiles() {
    run(Command::new(tool("CC", "cc"))
        .args(C_FLAGS)
        .arg("-I")
        .arg(repo().join("include"))
        .arg("-c")
        .arg(repo().join("tests/c/api_surface.c"))
        .arg("-o")
        .arg(build_dir().join("api_surface.o")));
}

fn suite_output(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn c_suite_passes() {
    let exe = build_c("test_c_api", &[repo().join("tests/c/test_c_api.c")]);
    let out = run(Command::new(&exe).arg(work_dir("c-suite")));
    let text = suite_output(&out);
    assert!(text.contains(", 0 failures"), "{text}");
    eprintln!("{text}");
}

#[test]
fn c_suite_is_clean_under_valgrind() {
    if std::env::var("DYNLIB_SKIP_VALGRIND").is_ok_and(|v| v == "1") {
        common::skip("c_suite_is_clean_under_valgrind", "DYNLIB_SKIP_VALGRIND=1");
        return;
    }
    let exe = build_c("test_c_api_vg", &[repo().join("tests/c/test_c_api.c")]);
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
        .arg(work_dir("c-suite-valgrind"))
        .output()
        .expect("valgrind is needed (apt-get install valgrind), or set DYNLIB_SKIP_VALGRIND=1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "valgrind reported errors or definite leaks ({}):\n{}\n{stderr}",
        out.status,
        suite_output(&out)
    );
    assert!(suite_output(&out).contains(", 0 failures"));
    eprintln!("valgrind: clean; {}", suite_output(&out).trim());
}

const SANITIZE: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=all",
];

/// Builds C sources with ASan + UBSan against the shared library. The Rust library itself is
/// not instrumented, but its allocations go through the sanitizer's malloc, so invalid and
/// double frees inside it are caught as well as every error on the C side.
fn build_sanitized(name: &str, source: &str) -> PathBuf {
    let out = build_dir().join(name);
    let lib = lib_dir();
    run(Command::new(tool("CC", "cc"))
        .args(C_FLAGS)
        .args(SANITIZE)
        .arg("-I")
        .arg(repo().join("include"))
        .arg(repo().join(source))
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ldynlib", "-lpthread", "-lm"]));
    out
}

/// Runs a program with the sanitizers' options, killing it after `limit`; returns the exit
/// status (None when killed), stdout and stderr.
fn run_sanitized(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86",
        )
        .env(
            "UBSAN_OPTIONS",
            "print_stacktrace=1:halt_on_error=1:exitcode=87",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    (
        status.and_then(|s| s.code()),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn c_suite_is_clean_under_asan_and_ubsan() {
    if std::env::var("DYNLIB_SKIP_SANITIZERS").is_ok_and(|v| v == "1") {
        common::skip(
            "c_suite_is_clean_under_asan_and_ubsan",
            "DYNLIB_SKIP_SANITIZERS=1",
        );
        return;
    }
    // The build really detects errors: each canary must fail and name its error.
    let canary = build_sanitized("sanitizer_canary", "tests/c/sanitizer_canary.c");
    for (mode, report) in [
        ("heap", "heap-buffer-overflow"),
        ("free", "attempting double-free"),
        ("ub", "signed integer overflow"),
    ] {
        let (code, _, stderr) =
            run_sanitized(Command::new(&canary).arg(mode), Duration::from_secs(60));
        assert!(
            code.is_some_and(|c| c != 0) && stderr.contains(report),
            "the sanitizer build missed a deliberate {report} ({code:?}):\n{stderr}"
        );
    }
    let (code, _, stderr) = run_sanitized(&mut Command::new(&canary), Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "the canary without an error fails:\n{stderr}"
    );

    let exe = build_sanitized("test_c_api_asan", "tests/c/test_c_api.c");
    let limit = Duration::from_secs(300);
    let (code, stdout, stderr) =
        run_sanitized(Command::new(&exe).arg(work_dir("c-suite-asan")), limit);
    assert!(
        code.is_some(),
        "the sanitizer build of the C suite did not finish within {limit:?}:\n{stdout}\n{stderr}"
    );
    assert!(
        code == Some(0) && stdout.contains(", 0 failures"),
        "ASan/UBSan reported errors or the suite failed ({code:?}):\n{stdout}\n{stderr}"
    );
    eprintln!("ASan + UBSan (leak checking on): clean; {}", stdout.trim());
}

#[test]
fn c_suite_links_statically() {
    let lib = lib_dir().join("libdynlib.a");
    let exe = build_dir().join("test_c_api_static");
    run(Command::new(tool("CC", "cc"))
        .args(C_FLAGS)
        .arg("-I")
        .arg(repo().join("include"))
        .arg(repo().join("tests/c/test_c_api.c"))
        .arg("-o")
        .arg(&exe)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"]));
    let out = run(Command::new(&exe).arg(work_dir("c-suite-static")));
    assert!(suite_output(&out).contains(", 0 failures"));
}

/// Function names declared in the header.
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(repo().join("include/dynlib.h")).unwrap();
    let mut names = Vec::new();
    let mut rest = header.as_str();
    while let Some(i) = rest.find("dynlib_") {
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let preceded_by_ident = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded_by_ident && tail[len..].starts_with('(') {
            names.push(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn exported_symbols_are_exactly_the_header_functions() {
    let so = lib_dir().join("libdynlib.so");
    let out = run(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    let mut exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("dynlib_"))
        .map(str::to_string)
        .collect();
    exported.sort();
    let declared = header_functions();
    assert!(declared.len() >= 50, "{declared:?}");
    assert_eq!(exported, declared);
}

#[test]
fn cpp_wrapper_suite_passes() {
    let exe = build_dir().join("test_dynlib_hpp");
    let lib = lib_dir();
    run(Command::new(tool("CXX", "c++"))
        .args(CXX_FLAGS)
        .arg("-I")
        .arg(repo().join("include"))
        .arg("-I")
        .arg(repo().join("bindings/cpp"))
        .arg(repo().join("tests/cpp/test_dynlib_hpp.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ldynlib", "-lpthread"]));
    let out = run(Command::new(&exe).arg(work_dir("cpp-suite")));
    let text = suite_output(&out);
    assert!(text.contains(", 0 failures"), "{text}");
}

#[test]
fn c_examples_build_and_run() {
    let dir = repo().join("examples/c");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 4, "{examples:?}");
    for src in examples {
        let name = src.file_stem().unwrap().to_string_lossy().into_owned();
        let exe = build_c(&format!("example_{name}"), std::slice::from_ref(&src));
        let out = run(Command::new(&exe).current_dir(work_dir(&format!("example-{name}"))));
        let text = suite_output(&out);
        assert!(!text.trim().is_empty(), "{name} printed nothing");
        assert!(
            text.contains("ok"),
            "{name} should end by printing its check: {text}"
        );
    }
}
