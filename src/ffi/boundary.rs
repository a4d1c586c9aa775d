//! The panic boundary and the thread-local last-error message.
//!
//! Every exported function runs its body through [`boundary`]: errors become a status code
//! plus a message for `dynlib_last_error()`, and a panic is caught here instead of unwinding
//! into C (which would abort the host process — MATLAB, Julia and Python sessions included).

use crate::error::panic_message;
use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::*;
use crate::error::Error;

/// A failed FFI call: the status to return and the message to keep.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: DynlibStatus,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            status: status_of(e.kind()),
            message: e.message().to_string(),
        }
    }
}

impl Failure {
    pub(crate) fn new(status: DynlibStatus, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn null(what: &str) -> Self {
        Failure::new(
            DYNLIB_ERR_NULL_POINTER,
            format!("argument '{what}' is NULL"),
        )
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(DYNLIB_ERR_INVALID_ARGUMENT, message)
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    /// This thread's message for its last failed call ("" before any failure).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    // A message never holds NUL in practice; if one does, keep the text before it readable.
    let text = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Pointer to this thread's last error message, valid until this thread's next failed call.
pub(crate) fn last_error_ptr() -> *const std::ffi::c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

pub(crate) fn panic_failure(payload: &(dyn std::any::Any + Send)) -> Failure {
    Failure::new(
        DYNLIB_ERR_INTERNAL,
        format!(
            "internal error: the library panicked ({}); please report this",
            panic_message(payload)
        ),
    )
}

/// Runs an entry point's body: maps its failure to a status and the last-error message, and
/// catches any panic.
pub(crate) fn boundary(body: impl FnOnce() -> FfiResult) -> DynlibStatus {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return DYNLIB_OK,
        Ok(Err(f)) => f,
        Err(payload) => panic_failure(payload.as_ref()),
    };
    set_last_error(&failure.message);
    failure.status
}
