//! Snapshot import from arbitrary bytes: see `dynlib::fuzzing::snapshot_import`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dynlib::fuzzing::snapshot_import(data);
});
