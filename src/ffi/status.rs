//! Status codes: the one place where library errors become numbers.

use crate::error::ErrorKind;

/// Result of every fallible `dynlib_*` call: `DYNLIB_OK` (0) or one of the `DYNLIB_ERR_*`
/// codes. The numbers are stable and never reused; `dynlib_last_error()` has the details.
pub type DynlibStatus = i32;

/// Success.
pub const DYNLIB_OK: DynlibStatus = 0;
/// A required pointer argument was NULL.
pub const DYNLIB_ERR_NULL_POINTER: DynlibStatus = 1;
/// An argument is out of range, inconsistent, not UTF-8, or refused in this situation.
pub const DYNLIB_ERR_INVALID_ARGUMENT: DynlibStatus = 2;
/// The model text or callback-model definition is invalid.
pub const DYNLIB_ERR_MODEL: DynlibStatus = 3;
/// A state, parameter, variable, snapshot, segment or stepper name is not known.
pub const DYNLIB_ERR_UNKNOWN_NAME: DynlibStatus = 4;
/// A name that must be unique is already taken.
pub const DYNLIB_ERR_DUPLICATE_NAME: DynlibStatus = 5;
/// The output buffer is too small; `*needed` holds the required size, the buffer is untouched.
pub const DYNLIB_ERR_BUFFER_TOO_SMALL: DynlibStatus = 6;
/// A snapshot's pins (model, stepper, workspace layout, dtype, version) do not match.
pub const DYNLIB_ERR_INCOMPATIBLE: DynlibStatus = 7;
/// No recorded results: no run yet, or reset or import cleared them (after
/// assign(clear_history) the recording is empty instead: 0 samples, 0 segments).
pub const DYNLIB_ERR_NO_RESULTS: DynlibStatus = 8;
/// Reading or writing a file failed.
pub const DYNLIB_ERR_IO: DynlibStatus = 9;
/// A snapshot file or buffer is malformed.
pub const DYNLIB_ERR_CORRUPT_SNAPSHOT: DynlibStatus = 10;
/// The stepper could not take a step, a callback returned non-zero, or max_steps ran out.
pub const DYNLIB_ERR_STEP_FAILED: DynlibStatus = 11;
/// A state, time or step size became NaN or infinite.
pub const DYNLIB_ERR_NON_FINITE: DynlibStatus = 12;
/// The handle is not a live handle of the expected type (freed, wrong type, or garbage), or
/// the sim refused further use after an internal panic.
pub const DYNLIB_ERR_BAD_HANDLE: DynlibStatus = 13;
/// A bug in the library (an internal invariant failed or a panic was caught).
pub const DYNLIB_ERR_INTERNAL: DynlibStatus = 14;
/// The sim is busy: another call on it is in progress, from inside one of its own callbacks
/// (a re-entrant call) or from another thread. Nothing was changed; the handle stays valid.
pub const DYNLIB_ERR_BUSY: DynlibStatus = 15;
/// Not an error: a progress or observer callback returned non-zero and the run stopped after
/// the step it saw. The session holds the partial run (status USER_BREAK, results and
/// segments up to that step) and `resume` continues it exactly; `dynlib_last_error()` is not
/// changed.
pub const DYNLIB_INTERRUPTED: DynlibStatus = 16;

/// Every status with its name, in numeric order.
pub(crate) const STATUS_NAMES: [(DynlibStatus, &str); 17] = [
    (DYNLIB_OK, "DYNLIB_OK\0"),
    (DYNLIB_ERR_NULL_POINTER, "DYNLIB_ERR_NULL_POINTER\0"),
    (DYNLIB_ERR_INVALID_ARGUMENT, "DYNLIB_ERR_INVALID_ARGUMENT\0"),
    (DYNLIB_ERR_MODEL, "DYNLIB_ERR_MODEL\0"),
    (DYNLIB_ERR_UNKNOWN_NAME, "DYNLIB_ERR_UNKNOWN_NAME\0"),
    (DYNLIB_ERR_DUPLICATE_NAME, "DYNLIB_ERR_DUPLICATE_NAME\0"),
    (DYNLIB_ERR_BUFFER_TOO_SMALL, "DYNLIB_ERR_BUFFER_TOO_SMALL\0"),
    (DYNLIB_ERR_INCOMPATIBLE, "DYNLIB_ERR_INCOMPATIBLE\0"),
    (DYNLIB_ERR_NO_RESULTS, "DYNLIB_ERR_NO_RESULTS\0"),
    (DYNLIB_ERR_IO, "DYNLIB_ERR_IO\0"),
    (DYNLIB_ERR_CORRUPT_SNAPSHOT, "DYNLIB_ERR_CORRUPT_SNAPSHOT\0"),
    (DYNLIB_ERR_STEP_FAILED, "DYNLIB_ERR_STEP_FAILED\0"),
    (DYNLIB_ERR_NON_FINITE, "DYNLIB_ERR_NON_FINITE\0"),
    (DYNLIB_ERR_BAD_HANDLE, "DYNLIB_ERR_BAD_HANDLE\0"),
    (DYNLIB_ERR_INTERNAL, "DYNLIB_ERR_INTERNAL\0"),
    (DYNLIB_ERR_BUSY, "DYNLIB_ERR_BUSY\0"),
    (DYNLIB_INTERRUPTED, "DYNLIB_INTERRUPTED\0"),
];

/// The status code of an error kind.
pub(crate) fn status_of(kind: ErrorKind) -> DynlibStatus {
    match kind {
        ErrorKind::InvalidArgument => DYNLIB_ERR_INVALID_ARGUMENT,
        ErrorKind::Model => DYNLIB_ERR_MODEL,
        ErrorKind::UnknownName => DYNLIB_ERR_UNKNOWN_NAME,
        ErrorKind::DuplicateName => DYNLIB_ERR_DUPLICATE_NAME,
        ErrorKind::Incompatible => DYNLIB_ERR_INCOMPATIBLE,
        ErrorKind::NoResults => DYNLIB_ERR_NO_RESULTS,
        ErrorKind::Io => DYNLIB_ERR_IO,
        ErrorKind::CorruptSnapshot => DYNLIB_ERR_CORRUPT_SNAPSHOT,
        ErrorKind::StepFailed => DYNLIB_ERR_STEP_FAILED,
        ErrorKind::NonFinite => DYNLIB_ERR_NON_FINITE,
        ErrorKind::Internal => DYNLIB_ERR_INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_in_numeric_order_and_nul_terminated() {
        for (i, (code, name)) in STATUS_NAMES.iter().enumerate() {
            assert_eq!(*code, i as DynlibStatus);
            assert!(name.starts_with("DYNLIB_") && name.ends_with('\0'));
        }
    }
}
