//! Recorded results, events and segments.

use std::ffi::c_char;

use super::boundary::{boundary, Failure, FfiResult};
use super::buffers::{cstr, write_iter, write_out, write_slice, write_str};
use super::handles::{with_sim, DynlibSim};
use super::status::*;
use crate::session::{Recording, SegmentRef, Sim};

fn recording(s: &Sim) -> FfiResult<&Recording> {
    Ok(s.results()?)
}

/// Number of recorded samples of the current recording (`DYNLIB_ERR_NO_RESULTS` before the
/// first run and after reset, import or `assign` with `clear_history`; 0 after a run that
/// recorded nothing).
///
/// # Safety
/// `sim` a sim handle; `n` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_n_samples(sim: *mut DynlibSim, n: *mut usize) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_out(n, recording(s)?.len(), "n")))
}

/// Sample times in the recording frame (warm-up excluded), output buffer protocol in doubles.
///
/// # Safety
/// `buf` NULL or writable for `cap` doubles; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_t(
    sim: *mut DynlibSim,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_slice(&recording(s)?.t, buf, cap, needed)))
}

/// Step label of each sample (output buffer protocol, in uint64 values).
///
/// # Safety
/// As `dynlib_sim_results_t`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_step(
    sim: *mut DynlibSim,
    buf: *mut u64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            let labels = &recording(s)?.step;
            write_iter(labels.len(), labels.iter(), buf, cap, needed)
        })
    })
}

/// 1 for a sample produced by dense interpolation at a resume seam (adaptive steppers), else
/// 0 (output buffer protocol, in bytes).
///
/// # Safety
/// As `dynlib_sim_results_t`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_interpolated(
    sim: *mut DynlibSim,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            let rec = recording(s)?;
            let flags = (0..rec.len()).map(|i| u8::from(rec.interpolated.get(i)));
            write_iter(rec.len(), flags, buf, cap, needed)
        })
    })
}

/// The recorded series of variable `name` (a recorded state or aux; "aux.name" also works).
///
/// # Safety
/// As `dynlib_sim_results_t`; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_var(
    sim: *mut DynlibSim,
    name: *const c_char,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| {
            write_slice(recording(s)?.column(name)?, buf, cap, needed)
        })
    })
}

/// Borrows `values` as a read-only array for the caller: `data` and `n` are written only
/// when both are writable, so a failed call writes nothing. An empty array is `NULL`, 0.
unsafe fn write_view(values: &[f64], data: *mut *const f64, n: *mut usize) -> FfiResult {
    if data.is_null() {
        return Err(Failure::null("data"));
    }
    if n.is_null() {
        return Err(Failure::null("n"));
    }
    data.write(if values.is_empty() {
        std::ptr::null()
    } else {
        values.as_ptr()
    });
    n.write(values.len());
    Ok(())
}

/// Zero-copy read of the sample times: `*data` points at the library's own array of `*n`
/// doubles (what `dynlib_sim_results_t` would copy), read-only. Like
/// `sqlite3_column_blob`, the pointer stays valid until the next call that replaces or
/// extends this sim's recording, or frees the sim: `dynlib_sim_run` (even one that fails),
/// `_reset`, `_assign`, `_apply_preset`, `_import_snapshot`, `_deserialize_snapshot`,
/// `_free`. Queries (state, other results, segments, exporting snapshots) keep it valid.
/// It saves copying the recording when the caller only reads it.
///
/// # Safety
/// `sim` a sim handle; `data` and `n` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_t_view(
    sim: *mut DynlibSim,
    data: *mut *const f64,
    n: *mut usize,
) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_view(&recording(s)?.t, data, n)))
}

/// Zero-copy read of the recorded series of variable `name` (as `dynlib_sim_results_var`),
/// with the lifetime rule of `dynlib_sim_results_t_view`.
///
/// # Safety
/// As `dynlib_sim_results_t_view`; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_var_view(
    sim: *mut DynlibSim,
    name: *const c_char,
    data: *mut *const f64,
    n: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| write_view(recording(s)?.column(name)?, data, n))
    })
}

/// Number of recorded variables.
///
/// # Safety
/// `sim` a sim handle; `n` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_n_vars(
    sim: *mut DynlibSim,
    n: *mut usize,
) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_out(n, recording(s)?.names.len(), "n")))
}

/// Name of recorded variable `index`, in recording order (output buffer protocol).
///
/// # Safety
/// As `dynlib_sim_results_t`, in bytes.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_results_var_name(
    sim: *mut DynlibSim,
    index: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            let names = &recording(s)?.names;
            let name = names.get(index).ok_or_else(|| {
                Failure::invalid(format!(
                    "variable index {index} is out of range: {} variables are recorded",
                    names.len()
                ))
            })?;
            write_str(name, buf, cap, needed)
        })
    })
}

/// The event log as a JSON array of `{event, t, step, sample, values}`.
///
/// # Safety
/// As `dynlib_sim_results_t`, in bytes.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_events_json(
    sim: *mut DynlibSim,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            write_str(&s.events_json()?.to_string(), buf, cap, needed)
        })
    })
}

/// One recorded segment (a run's contribution to the recording).
#[repr(C)]
pub struct DynlibSegmentInfo {
    /// First and last sample time (recording frame).
    pub t_start: f64,
    pub t_end: f64,
    /// First and last step label.
    pub step_start: u64,
    pub step_end: u64,
    /// Sample range: `sample_start .. sample_start + sample_len`.
    pub sample_start: u64,
    pub sample_len: u64,
    /// Event range in the event log.
    pub event_start: u64,
    pub event_len: u64,
    /// Whether the segment came from a resumed run.
    pub resume: bool,
}

/// Number of segments of the current recording (0 when there is none).
///
/// # Safety
/// `sim` a sim handle; `n` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_n_segments(sim: *mut DynlibSim, n: *mut usize) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_out(n, s.segments().len(), "n")))
}

fn segment_at(s: &Sim, index: usize) -> FfiResult<&crate::session::Segment> {
    s.segments().get(index).ok_or_else(|| {
        if s.segments().is_empty() {
            Failure::new(DYNLIB_ERR_NO_RESULTS, "no recorded segments")
        } else {
            Failure::invalid(format!(
                "segment index {index} is out of range: there are {} segments",
                s.segments().len()
            ))
        }
    })
}

/// Segment `index` (0-based).
///
/// # Safety
/// `sim` a sim handle; `info` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_segment_info(
    sim: *mut DynlibSim,
    index: usize,
    info: *mut DynlibSegmentInfo,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            let g = segment_at(s, index)?;
            let value = DynlibSegmentInfo {
                t_start: g.t_start,
                t_end: g.t_end,
                step_start: g.step_start,
                step_end: g.step_end,
                sample_start: g.sample_start as u64,
                sample_len: g.sample_len as u64,
                event_start: g.event_start as u64,
                event_len: g.event_len as u64,
                resume: g.resume,
            };
            write_out(info, value, "info")
        })
    })
}

/// Name of segment `index`: its tag or rename, else `run#<index>` (output buffer protocol).
///
/// # Safety
/// `buf` NULL or writable for `cap` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_segment_name(
    sim: *mut DynlibSim,
    index: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            segment_at(s, index)?;
            write_str(&s.segment_name(SegmentRef::Index(index))?, buf, cap, needed)
        })
    })
}

/// Renames segment `index`; a taken name gets `-2`, `-3`, … appended.
///
/// # Safety
/// `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_name_segment(
    sim: *mut DynlibSim,
    index: usize,
    name: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| {
            segment_at(s, index)?;
            s.name_segment(SegmentRef::Index(index), name)?;
            Ok(())
        })
    })
}

/// Renames the last segment.
///
/// # Safety
/// `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_name_last_segment(
    sim: *mut DynlibSim,
    name: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| {
            s.name_last_segment(name)?;
            Ok(())
        })
    })
}
