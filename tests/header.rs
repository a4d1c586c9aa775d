//! The committed C header is generated, never hand-edited: this test regenerates it with the
//! pinned cbindgen and fails when the committed file differs (set DYNLIB_BLESS_HEADER=1 to
//! rewrite it). It also checks the header's version macros against Cargo.toml.

use std::path::Path;

fn generate() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn committed_header_matches_a_fresh_generation() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/dynlib.h");
    let fresh = generate();
    if std::env::var("DYNLIB_BLESS_HEADER").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "include/dynlib.h is stale (first difference at line {}): regenerate it with \
             DYNLIB_BLESS_HEADER=1 cargo test --release --test header, and commit it",
            line + 1
        );
    }
}

#[test]
fn version_macros_match_the_crate_version() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/dynlib.h"))
            .unwrap();
    let macro_value = |name: &str| -> String {
        header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} missing from the header"))
            .trim()
            .to_string()
    };
    let (major, minor, patch): (u64, u64, u64) = (
        env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap(),
        env!("CARGO_PKG_VERSION_MINOR").parse().unwrap(),
        env!("CARGO_PKG_VERSION_PATCH").parse().unwrap(),
    );
    assert_eq!(macro_value("DYNLIB_VERSION_MAJOR"), major.to_string());
    assert_eq!(macro_value("DYNLIB_VERSION_MINOR"), minor.to_string());
    assert_eq!(macro_value("DYNLIB_VERSION_PATCH"), patch.to_string());
    assert_eq!(
        macro_value("DYNLIB_VERSION_STRING"),
        format!("\"{}\"", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        macro_value("DYNLIB_VERSION_NUMBER"),
        (major * 10000 + minor * 100 + patch).to_string()
    );
    let runtime = unsafe { std::ffi::CStr::from_ptr(dynlib::ffi::dynlib_version()) };
    assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}
