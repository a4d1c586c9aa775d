//! Snapshot files and buffers.

use std::ffi::c_char;

use super::boundary::{boundary, Failure};
use super::buffers::{cstr, opt_cstr, slice, write_slice, write_str};
use super::handles::{with_sim, DynlibSim};
use super::status::*;
use crate::session::{inspect_snapshot, inspect_snapshot_bytes, latest_checkpoint};

/// Writes the current state (`snapshot_name` NULL) or a stored snapshot to `path` as a `.npz`
/// file, atomically; missing parent directories are created.
///
/// # Safety
/// `sim` a sim handle; strings NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_export_snapshot(
    sim: *mut DynlibSim,
    path: *const c_char,
    snapshot_name: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let path = cstr(path, "path")?;
        let name = opt_cstr(snapshot_name, "snapshot_name")?;
        with_sim(sim, |s| Ok(s.export_snapshot(path, name)?))
    })
}

/// Replaces the session state with a snapshot file after checking it completely; results and
/// segments are cleared, stored snapshots kept. Nothing changes on failure.
///
/// # Safety
/// `sim` a sim handle; `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_import_snapshot(
    sim: *mut DynlibSim,
    path: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let path = cstr(path, "path")?;
        with_sim(sim, |s| Ok(s.import_snapshot(path)?))
    })
}

/// The `meta.json` of a snapshot file, without any session (output buffer protocol).
///
/// # Safety
/// `path` NUL-terminated; `buf` NULL or writable for `cap` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_inspect_snapshot(
    path: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let path = cstr(path, "path")?;
        let meta = inspect_snapshot(path)?;
        write_str(
            &serde_json::to_string_pretty(&meta).unwrap_or_default(),
            buf,
            cap,
            needed,
        )
    })
}

/// The `meta.json` of a snapshot held in memory (output buffer protocol).
///
/// # Safety
/// `bytes` NULL (with len 0) or `len` readable bytes; as `dynlib_inspect_snapshot`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_inspect_snapshot_bytes(
    bytes: *const u8,
    len: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let meta = inspect_snapshot_bytes(slice(bytes, len, "bytes")?)?;
        write_str(
            &serde_json::to_string_pretty(&meta).unwrap_or_default(),
            buf,
            cap,
            needed,
        )
    })
}

/// The current state (`snapshot_name` NULL) or a stored snapshot as `.npz` bytes, for hosts
/// that keep checkpoints in their own storage (output buffer protocol, in bytes; the size for
/// an unchanged session is the same from one call to the next). A size query followed by the
/// call with a large enough buffer serializes once: the bytes are kept in between while the
/// session state is unchanged.
///
/// # Safety
/// `buf` NULL or writable for `cap` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_serialize_snapshot(
    sim: *mut DynlibSim,
    snapshot_name: *const c_char,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let name = opt_cstr(snapshot_name, "snapshot_name")?;
        with_sim(sim, |s| {
            s.with_serialized(name, cap, |bytes| write_slice(bytes, buf, cap, needed))?
        })
    })
}

/// Restores bytes from `dynlib_sim_serialize_snapshot`, with the checks of
/// `dynlib_sim_import_snapshot`.
///
/// # Safety
/// `bytes` must be `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_deserialize_snapshot(
    sim: *mut DynlibSim,
    bytes: *const u8,
    len: usize,
) -> DynlibStatus {
    boundary(|| {
        if bytes.is_null() {
            return Err(Failure::null("bytes"));
        }
        let data = slice(bytes, len, "bytes")?;
        with_sim(sim, |s| Ok(s.deserialize_snapshot(data)?))
    })
}

/// Path of the newest checkpoint file in `dir` ("" when the directory holds none;
/// `DYNLIB_ERR_IO` when it cannot be listed, e.g. does not exist), output buffer protocol.
///
/// # Safety
/// `dir` NUL-terminated; as `dynlib_inspect_snapshot`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_latest_checkpoint(
    dir: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let dir = cstr(dir, "dir")?;
        let path = latest_checkpoint(dir)?;
        let text = path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        write_str(&text, buf, cap, needed)
    })
}
