//! libFuzzer target: random C ABI call sequences (create/run/snapshot/reset/assign/export/
//! import/serialize/free with NULLs, freed and garbage handles, bad struct sizes, small
//! buffers and re-entrant callbacks). The interpreter and its rules are shared with the
//! bounded test run: `tests/fuzzing/abi_sequences.rs`.
#![no_main]

#[path = "../../tests/fuzzing/abi_sequences.rs"]
mod abi_sequences;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("dynlib-fuzz-abi-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    let mut stats = abi_sequences::Stats::default();
    abi_sequences::run_sequence(data, dir, &mut stats);
});
