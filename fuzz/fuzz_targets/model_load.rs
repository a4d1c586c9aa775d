//! Model loading from arbitrary text: see `dynlib::fuzzing::model_load`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        dynlib::fuzzing::model_load(text, true);
    }
});
