//! The C ABI. Each function checks its arguments, makes one call into the core and maps the
//! result; there is no simulation logic here.
//!
//! Conventions (also at the top of `include/dynlib.h`): every fallible function returns a
//! `DynlibStatus` and leaves a message for `dynlib_last_error()`; handles are opaque, tagged
//! and checked; outputs go to caller-owned buffers `(buf, cap, needed)` and out-parameters
//! are written only on success; no panic crosses the boundary.

pub mod boundary;
pub mod buffers;
pub mod callbacks;
pub mod handles;
pub mod model;
pub mod results;
pub mod sim;
pub mod snapshot;
pub mod status;

use std::ffi::c_char;

use status::{DynlibStatus, STATUS_NAMES};

/// The library version ("MAJOR.MINOR.PATCH"), equal to `DYNLIB_VERSION_STRING` of the header
/// it was built with. Static storage; never NULL.
#[no_mangle]
pub extern "C" fn dynlib_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a status code ("DYNLIB_OK", "DYNLIB_ERR_IO", …), or "DYNLIB_UNKNOWN_STATUS".
/// Static storage; never NULL.
#[no_mangle]
pub extern "C" fn dynlib_status_name(status: DynlibStatus) -> *const c_char {
    STATUS_NAMES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("DYNLIB_UNKNOWN_STATUS\0", |(_, name)| name)
        .as_ptr()
        .cast()
}

/// This thread's message for its last failed call ("" if none failed yet). The pointer stays
/// valid until this thread's next failed call; copy the text to keep it.
#[no_mangle]
pub extern "C" fn dynlib_last_error() -> *const c_char {
    boundary::last_error_ptr()
}
