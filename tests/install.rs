//! The library installed like a C library: `cargo cinstall` (cargo-c) into a temporary prefix,
//! then a C program built with `pkg-config --cflags --libs dynlib` (shared, and `--static`
//! against an install of the archive only) and a C++ program built with CMake
//! (`find_package(dynlib CONFIG)`, target `dynlib::dynlib`), each run.
//!
//! Needs cargo-c (`cargo install cargo-c --version 0.10.24 --locked`), pkg-config, cmake and a
//! C/C++ compiler. Without cargo-c the install tests print `SKIPPED ...` with the reason (set
//! `DYNLIB_REQUIRE_CARGO_C=1`, as .ci/run does, to make that a failure instead).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install")
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert!(out.status.success(), "{cmd:?} failed\n{}", text(&out));
    out
}

/// Why cargo-c cannot be used here, if it cannot.
fn cargo_c_missing() -> Option<String> {
    let out = Command::new(env!("CARGO"))
        .args(["cinstall", "--version"])
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "cargo-c is not installed (`cargo cinstall --version`: {}); install it with \
             `cargo install cargo-c --version 0.10.24 --locked`",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
        )),
        Err(e) => Some(format!("cannot run cargo: {e}")),
    }
}

/// Skips (visibly) when cargo-c is missing, unless DYNLIB_REQUIRE_CARGO_C=1.
fn cargo_c_or_skip(test: &str) -> bool {
    match cargo_c_missing() {
        None => true,
        Some(why) if std::env::var("DYNLIB_REQUIRE_CARGO_C").is_ok_and(|v| v == "1") => {
            panic!("DYNLIB_REQUIRE_CARGO_C=1 but {why}")
        }
        Some(why) => {
            common::skip(test, &why);
            false
        }
    }
}

/// `cargo cinstall --release` into `prefix` (once per library type and test run).
fn cinstall(prefix: &Path, library_type: Option<&str>) {
    let _ = std::fs::remove_dir_all(prefix);
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["cinstall", "--release", "--locked", "--libdir", "lib"])
        .arg("--prefix")
        .arg(prefix)
        .arg("--manifest-path")
        .arg(repo().join("Cargo.toml"));
    if let Some(t) = library_type {
        cmd.args(["--library-type", t]);
    }
    run(&mut cmd);
}

fn shared_prefix() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = work().join("prefix");
        cinstall(&p, None);
        p
    })
}

fn static_prefix() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        // After the full install, so the two never build at the same time.
        shared_prefix();
        let p = work().join("prefix-static");
        cinstall(&p, Some("staticlib"));
        p
    })
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = run(Command::new("pkg-config")
        .args(args)
        .arg("dynlib")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// ELF dynamic section entries of `what` (e.g. "NEEDED", "SONAME").
fn dynamic_entries(file: &Path, what: &str) -> Vec<String> {
    let out = run(Command::new("readelf").arg("-d").arg(file));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("({what})")))
        .filter_map(|l| {
            let a = l.find('[')?;
            let b = l.rfind(']')?;
            Some(l[a + 1..b].to_string())
        })
        .collect()
}

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include "dynlib.h"
int main(void) {
  DynlibModel *m; DynlibSim *s; DynlibRunOptions o; double t = 0;
  if (strcmp(dynlib_version(), DYNLIB_VERSION_STRING) != 0) return 3;
  if (dynlib_model_load("builtin://ode/lorenz", NULL, &m) != DYNLIB_OK) return 4;
  if (dynlib_sim_new(m, &s) != DYNLIB_OK) return 5;
  dynlib_run_options_init(&o);
  o.T = 1.0;
  if (dynlib_sim_run(s, &o) != DYNLIB_OK) { fprintf(stderr, "%s\n", dynlib_last_error()); return 6; }
  dynlib_sim_time(s, &t);
  printf("dynlib %s ran to t = %g\n", dynlib_version(), t);
  dynlib_sim_free(s); dynlib_model_free(m);
  return 0;
}
"#;

fn build_c(dir: &Path, flags: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join("app.c");
    std::fs::write(&src, C_PROGRAM).unwrap();
    let exe = dir.join("app");
    run(
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .arg("-std=c99")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .args(flags),
    );
    exe
}

fn expect_ran(exe: &Path) {
    let out = run(Command::new(exe).env_remove("LD_LIBRARY_PATH"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "dynlib {} ran to t = 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{stdout}"
    );
}

#[test]
fn cmake_version_file_matches_the_crate_version() {
    let v = std::fs::read_to_string(repo().join("cmake/dynlibConfigVersion.cmake")).unwrap();
    assert!(
        v.contains(&format!(
            "set(PACKAGE_VERSION \"{}\")",
            env!("CARGO_PKG_VERSION")
        )),
        "cmake/dynlibConfigVersion.cmake does not say version {}",
        env!("CARGO_PKG_VERSION")
    );
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
    assert!(v.contains(&format!("NOT PACKAGE_FIND_VERSION_MINOR EQUAL {minor}")));
}

#[test]
fn cinstall_installs_a_versioned_library_header_pkg_config_and_cmake_files() {
    if !cargo_c_or_skip("cinstall_installs_a_versioned_library_header_pkg_config_and_cmake_files") {
        return;
    }
    let p = shared_prefix();
    let lib = p.join("lib");
    let so = lib.join("libdynlib.so");
    assert!(lib.join("libdynlib.a").is_file());
    assert!(
        std::fs::symlink_metadata(&so)
            .unwrap()
            .file_type()
            .is_symlink(),
        "libdynlib.so should link to the versioned file"
    );
    let soname = dynamic_entries(&so, "SONAME");
    let (major, minor) = (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
    );
    let expected = if major == "0" {
        format!("libdynlib.so.0.{minor}")
    } else {
        format!("libdynlib.so.{major}")
    };
    assert_eq!(soname, std::slice::from_ref(&expected));
    assert!(lib.join(&expected).exists(), "{expected} is not installed");
    assert_eq!(
        std::fs::read(p.join("include/dynlib.h")).unwrap(),
        std::fs::read(repo().join("include/dynlib.h")).unwrap(),
        "the installed header is not include/dynlib.h"
    );
    let pc = std::fs::read_to_string(lib.join("pkgconfig/dynlib.pc")).unwrap();
    let private = pc
        .lines()
        .find(|l| l.starts_with("Libs.private:"))
        .unwrap_or_else(|| panic!("no Libs.private in dynlib.pc:\n{pc}"));
    for l in ["-lm", "-lpthread", "-ldl"] {
        assert!(private.split_whitespace().any(|x| x == l), "{private}");
    }
    assert!(
        pc.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{pc}"
    );
    for f in ["dynlibConfig.cmake", "dynlibConfigVersion.cmake"] {
        let installed = p.join("share/cmake/dynlib").join(f);
        assert_eq!(
            std::fs::read(&installed).unwrap_or_default(),
            std::fs::read(repo().join("cmake").join(f)).unwrap(),
            "{} is not cmake/{f}",
            installed.display()
        );
    }
    common::report(&format!(
        "cargo cinstall: {} (SONAME {expected}); {}",
        p.display(),
        private
    ));
}

#[test]
fn c_program_builds_with_pkg_config_against_the_shared_library() {
    if !cargo_c_or_skip("c_program_builds_with_pkg_config_against_the_shared_library") {
        return;
    }
    let p = shared_prefix();
    let mut flags = pkg_config(p, &["--cflags", "--libs"]);
    assert!(flags.iter().any(|f| f == "-ldynlib"), "{flags:?}");
    let libdir = pkg_config(p, &["--variable=libdir"]);
    flags.push(format!("-Wl,-rpath,{}", libdir[0]));
    let exe = build_c(&work().join("c-shared"), &flags);
    let needed = dynamic_entries(&exe, "NEEDED");
    assert!(
        needed.iter().any(|n| n.starts_with("libdynlib.so.")),
        "the program should need the versioned SONAME: {needed:?}"
    );
    expect_ran(&exe);
}

#[test]
fn c_program_links_statically_with_pkg_config_static() {
    if !cargo_c_or_skip("c_program_links_statically_with_pkg_config_static") {
        return;
    }
    let p = static_prefix();
    assert!(!p.join("lib/libdynlib.so").exists());
    let flags = pkg_config(p, &["--cflags", "--libs", "--static"]);
    assert!(flags.iter().any(|f| f == "-lm"), "{flags:?}");
    let exe = build_c(&work().join("c-static"), &flags);
    let needed = dynamic_entries(&exe, "NEEDED");
    assert!(
        !needed.iter().any(|n| n.contains("dynlib")),
        "linked statically, yet it needs {needed:?}"
    );
    expect_ran(&exe);
}

#[test]
fn cxx_program_builds_with_cmake_find_package() {
    if !cargo_c_or_skip("cxx_program_builds_with_cmake_find_package") {
        return;
    }
    let p = shared_prefix();
    let dir = work().join("cmake-app");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("CMakeLists.txt"),
        r#"cmake_minimum_required(VERSION 3.16)
project(dynlib_consumer CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(dynlib 0.1 CONFIG REQUIRED)
add_executable(app main.cpp)
target_include_directories(app PRIVATE "${DYNLIB_CPP_DIR}")
target_link_libraries(app PRIVATE dynlib::dynlib)
add_executable(app_static main.cpp)
target_include_directories(app_static PRIVATE "${DYNLIB_CPP_DIR}")
target_link_libraries(app_static PRIVATE dynlib::dynlib_static)
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("main.cpp"),
        r#"#include <cstdio>
#include "dynlib.hpp"
int main() {
  dynlib::Model model = dynlib::Model::load("builtin://ode/lorenz");
  dynlib::Sim sim(model);
  if (sim.run(dynlib::RunOptions().T(1.0))) return 2;
  std::printf("dynlib %s ran to t = %g\n", dynlib_version(), sim.time());
  return 0;
}
"#,
    )
    .unwrap();
    let build = dir.join("build");
    run(Command::new("cmake")
        .arg("-S")
        .arg(&dir)
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", p.display()))
        .arg(format!(
            "-DDYNLIB_CPP_DIR={}",
            repo().join("bindings/cpp").display()
        )));
    run(Command::new("cmake").arg("--build").arg(&build));
    expect_ran(&build.join("app"));
    expect_ran(&build.join("app_static"));
    assert!(dynamic_entries(&build.join("app"), "NEEDED")
        .iter()
        .any(|n| n.starts_with("libdynlib.so.")));
    assert!(!dynamic_entries(&build.join("app_static"), "NEEDED")
        .iter()
        .any(|n| n.contains("dynlib")));

    // The version file refuses an incompatible request.
    std::fs::write(
        dir.join("CMakeLists.txt"),
        "cmake_minimum_required(VERSION 3.16)\nproject(v NONE)\n\
         find_package(dynlib 0.2 CONFIG)\n\
         if(dynlib_FOUND)\n  message(FATAL_ERROR \"0.2 accepted\")\nendif()\n",
    )
    .unwrap();
    let build2 = dir.join("build-version");
    run(Command::new("cmake")
        .arg("-S")
        .arg(&dir)
        .arg("-B")
        .arg(&build2)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", p.display())));
}

#[test]
fn python_finds_the_installed_library_through_pkg_config() {
    if !cargo_c_or_skip("python_finds_the_installed_library_through_pkg_config") {
        return;
    }
    if std::env::var("DYNLIB_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        common::skip(
            "python_finds_the_installed_library_through_pkg_config",
            "DYNLIB_SKIP_PYTHON=1",
        );
        return;
    }
    let p = shared_prefix();
    // The module alone, outside the repository (so no repository build is found).
    let dir = work().join("python-module");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo().join("bindings/python/dynlib.py"),
        dir.join("dynlib.py"),
    )
    .unwrap();
    let out = run(Command::new("python3")
        .args(["-m", "dynlib"])
        .current_dir(&dir)
        .env("PYTHONPATH", &dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DYNLIB_LIBRARY")
        .env("PKG_CONFIG_PATH", p.join("lib/pkgconfig")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "library: {} (found via install prefix (pkg-config))",
        p.join("lib/libdynlib.so").display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
}
