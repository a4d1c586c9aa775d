//! Ensembles: N sims of one model with per-member inputs, run together on a thread pool.

use std::ffi::c_char;

use super::boundary::{boundary, Failure, FfiResult};
use super::buffers::{cstr, slice, write_out, write_slice, write_str};
use super::handles::{
    free_ensemble, model_ref, new_ensemble_handle, new_sim_handle, with_ensemble, with_sim,
    DynlibEnsemble, DynlibModel, DynlibSim,
};
use super::sim::{read_run_options, DynlibRunOptions};
use super::status::*;
use crate::session::Ensemble;

/// Most threads one ensemble run may ask for (0 = one per core).
const MAX_THREADS: usize = 4096;

/// Creates an ensemble of `n_members` sessions of `model` (the stepper chosen at load), each
/// starting from the model's defaults. `n_members = 0` is `DYNLIB_ERR_INVALID_ARGUMENT`. On
/// success `*ens_out` owns a new handle (free with `dynlib_ensemble_free`).
///
/// # Safety
/// `model` a model handle; `ens_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_new(
    model: *const DynlibModel,
    n_members: usize,
    ens_out: *mut *mut DynlibEnsemble,
) -> DynlibStatus {
    boundary(|| {
        let m = model_ref(model, "model")?;
        if ens_out.is_null() {
            return Err(Failure::null("ens_out"));
        }
        let ens = Ensemble::with_stepper(&m.model, m.stepper.as_deref(), n_members)?;
        write_out(ens_out, new_ensemble_handle(ens)?, "ens_out")
    })
}

/// Creates an ensemble of `n_members` copies of `sim`'s session: its state (time, values,
/// stepper history), snapshots and recording selection, not its recorded samples.
///
/// # Safety
/// `sim` a sim handle; `ens_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_from_sim(
    sim: *mut DynlibSim,
    n_members: usize,
    ens_out: *mut *mut DynlibEnsemble,
) -> DynlibStatus {
    boundary(|| {
        if ens_out.is_null() {
            return Err(Failure::null("ens_out"));
        }
        let ens = with_sim(sim, |s| Ok(Ensemble::from_sim(s, n_members)?))?;
        write_out(ens_out, new_ensemble_handle(ens)?, "ens_out")
    })
}

/// Frees an ensemble and all its members. NULL and handles that are not live ensembles are
/// ignored; a busy ensemble is not freed (the handle stays valid, `dynlib_last_error` says why).
///
/// # Safety
/// None beyond the handle rules.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_free(ens: *mut DynlibEnsemble) {
    let _ = boundary(|| free_ensemble(ens));
}

/// Number of members.
///
/// # Safety
/// `ens` an ensemble handle; `n` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_n_members(
    ens: *mut DynlibEnsemble,
    n: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_out(n, e.n_members(), "n")))
}

/// Number of members whose last run failed.
///
/// # Safety
/// As `dynlib_ensemble_n_members`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_n_failed(
    ens: *mut DynlibEnsemble,
    n: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_out(n, e.n_failed(), "n")))
}

/// # Safety
/// `data` NULL (with rows·cols = 0) or `rows * cols` readable doubles.
unsafe fn matrix<'a>(data: *const f64, rows: usize, cols: usize) -> FfiResult<&'a [f64]> {
    let len = rows.checked_mul(cols).ok_or_else(|| {
        Failure::invalid(format!("matrix of {rows} x {cols} values is too large"))
    })?;
    slice(data, len, "data")
}

/// Sets every member's parameters from a row-major matrix: `rows` = members, `cols` = the
/// model's parameters in order. Shapes and values (finite) are checked first; on error
/// nothing changes. Like `dynlib_sim_assign`, this restarts multistep history.
///
/// # Safety
/// `ens` an ensemble handle; `data` `rows * cols` readable doubles.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_set_params(
    ens: *mut DynlibEnsemble,
    data: *const f64,
    rows: usize,
    cols: usize,
) -> DynlibStatus {
    boundary(|| {
        let values = matrix(data, rows, cols)?;
        with_ensemble(ens, |e| Ok(e.set_params(values, rows, cols)?))
    })
}

/// Sets every member's state (the initial condition of the next fresh run) from a row-major
/// matrix: `rows` = members, `cols` = the model's states in order. Checked as
/// `dynlib_ensemble_set_params`.
///
/// # Safety
/// As `dynlib_ensemble_set_params`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_set_ic(
    ens: *mut DynlibEnsemble,
    data: *const f64,
    rows: usize,
    cols: usize,
) -> DynlibStatus {
    boundary(|| {
        let values = matrix(data, rows, cols)?;
        with_ensemble(ens, |e| Ok(e.set_ic(values, rows, cols)?))
    })
}

/// Sets parameter `name` of member i to `values[i]` (`n` must equal the member count).
///
/// # Safety
/// `name` NUL-terminated; `values` `n` readable doubles.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_set_param_column(
    ens: *mut DynlibEnsemble,
    name: *const c_char,
    values: *const f64,
    n: usize,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        let values = slice(values, n, "values")?;
        with_ensemble(ens, |e| Ok(e.set_param_column(name, values)?))
    })
}

/// Sets state or parameter `name` of member i to `values[i]` (`n` = the member count).
///
/// # Safety
/// As `dynlib_ensemble_set_param_column`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_set_column(
    ens: *mut DynlibEnsemble,
    name: *const c_char,
    values: *const f64,
    n: usize,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        let values = slice(values, n, "values")?;
        with_ensemble(ens, |e| Ok(e.set_column(name, values)?))
    })
}

/// Runs every member with the same options (`opts` NULL = defaults; `resume = true` continues
/// every member exactly) on `n_threads` threads (0 = one per available core). Member i ends
/// bit-identical to a single sim run with its inputs, whatever the thread count. Options no
/// member accepts (and checkpoint fields: use `dynlib_ensemble_export_checkpoint`) are refused
/// before any member runs, changing nothing. Returns `DYNLIB_OK` when every member succeeded;
/// otherwise the first failed member's status with a message saying how many failed — the
/// others' results are kept, and `dynlib_ensemble_member_status`/`_error` give each member's.
/// With a callback model and `n_threads != 1`, the callbacks are called from several threads
/// at once (one member per thread at a time): their `user_data` must allow that.
///
/// # Safety
/// `ens` an ensemble handle; `opts` NULL or an initialised `DynlibRunOptions`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_run(
    ens: *mut DynlibEnsemble,
    opts: *const DynlibRunOptions,
    n_threads: usize,
) -> DynlibStatus {
    boundary(|| {
        let options = read_run_options(opts)?;
        if n_threads > MAX_THREADS {
            return Err(Failure::invalid(format!(
                "n_threads is {n_threads}; at most {MAX_THREADS} (0 = one per core)"
            )));
        }
        with_ensemble(ens, |e| Ok(e.run(&options, n_threads)?))
    })
}

/// Members per lock-step batch (see the README's ensemble section): members whose runs are
/// plain fixed-grid runs are advanced `lanes` at a time by one native loop. `lanes` is
/// rounded up to an even number; 0 turns lock-step off; more than 64 is
/// `DYNLIB_ERR_INVALID_ARGUMENT` (nothing changes). The results are the same bits whatever
/// the value; only the speed changes. The default is 16 for a model without events, 8 for one
/// with events; a batch is never wider than the member count (rounded up to even).
///
/// # Safety
/// `ens` an ensemble handle.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_set_lockstep_lanes(
    ens: *mut DynlibEnsemble,
    lanes: usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| Ok(e.set_lockstep_lanes(lanes)?)))
}

/// Members per lock-step batch, as set (rounded) by `dynlib_ensemble_set_lockstep_lanes`.
///
/// # Safety
/// `ens` an ensemble handle; `lanes` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_lockstep_lanes(
    ens: *mut DynlibEnsemble,
    lanes: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_out(lanes, e.lockstep_lanes(), "lanes")))
}

/// Member-steps the lock-step kernel took in the last run (the others went through each
/// member's own single-sim loop): a diagnostic; the results do not depend on it.
///
/// # Safety
/// `ens` an ensemble handle; `steps` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_last_run_lockstep_steps(
    ens: *mut DynlibEnsemble,
    steps: *mut u64,
) -> DynlibStatus {
    boundary(|| {
        with_ensemble(ens, |e| {
            write_out(steps, e.last_run_lockstep_steps(), "steps")
        })
    })
}

/// The status of member `i`'s last run (`DYNLIB_OK` if it succeeded or has not run).
///
/// # Safety
/// `ens` an ensemble handle; `status` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_member_status(
    ens: *mut DynlibEnsemble,
    i: usize,
    status: *mut DynlibStatus,
) -> DynlibStatus {
    boundary(|| {
        with_ensemble(ens, |e| {
            let s = e
                .member_error(i)?
                .map_or(DYNLIB_OK, |err| status_of(err.kind()));
            write_out(status, s, "status")
        })
    })
}

/// The message of member `i`'s last run failure ("" if it succeeded), output buffer protocol.
///
/// # Safety
/// `buf` NULL or writable for `cap` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_member_error(
    ens: *mut DynlibEnsemble,
    i: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_ensemble(ens, |e| {
            let text = e.member_error(i)?.map_or("", |err| err.message());
            write_str(text, buf, cap, needed)
        })
    })
}

/// Every member's current state, row-major `n_members x n_states` doubles (buffer protocol).
///
/// # Safety
/// `buf` NULL or writable for `cap` doubles; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_final_states(
    ens: *mut DynlibEnsemble,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_slice(&e.final_states(), buf, cap, needed)))
}

/// Every member's parameters, row-major `n_members x n_params` doubles (buffer protocol).
///
/// # Safety
/// As `dynlib_ensemble_final_states`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_params(
    ens: *mut DynlibEnsemble,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_slice(&e.params(), buf, cap, needed)))
}

/// Every member's current absolute time, `n_members` doubles (buffer protocol).
///
/// # Safety
/// As `dynlib_ensemble_final_states`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_times(
    ens: *mut DynlibEnsemble,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_slice(&e.times(), buf, cap, needed)))
}

/// Events each member fired since its last fresh run, `n_members` uint64 values (buffer
/// protocol). Counted also when `record = 0`, where no event log is kept.
///
/// # Safety
/// `buf` NULL or writable for `cap` values; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_event_counts(
    ens: *mut DynlibEnsemble,
    buf: *mut u64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_slice(&e.event_counts(), buf, cap, needed)))
}

/// Committed steps of each member since its last fresh run, `n_members` uint64 values.
///
/// # Safety
/// As `dynlib_ensemble_event_counts`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_step_counts(
    ens: *mut DynlibEnsemble,
    buf: *mut u64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_ensemble(ens, |e| write_slice(&e.step_counts(), buf, cap, needed)))
}

/// Member `i` as an ordinary sim: a new handle holding its own copy (session, snapshots,
/// recorded results), independent of the ensemble. Free it with `dynlib_sim_free`.
///
/// # Safety
/// `ens` an ensemble handle; `sim_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_member_sim(
    ens: *mut DynlibEnsemble,
    i: usize,
    sim_out: *mut *mut DynlibSim,
) -> DynlibStatus {
    boundary(|| {
        if sim_out.is_null() {
            return Err(Failure::null("sim_out"));
        }
        let sim = with_ensemble(ens, |e| Ok(e.member_sim(i)?))?;
        write_out(sim_out, new_sim_handle(sim)?, "sim_out")
    })
}

/// Writes every member's session state to one `.npz` file (`dynlib-ensemble-v1`: the
/// snapshot arrays stacked along a leading member axis, event counts and `meta.json`),
/// atomically; missing parent directories are created.
///
/// # Safety
/// `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_export_checkpoint(
    ens: *mut DynlibEnsemble,
    path: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let path = cstr(path, "path")?;
        with_ensemble(ens, |e| Ok(e.export_checkpoint(path)?))
    })
}

/// Replaces every member's session state by a checkpoint's, after checking all of it (member
/// count, pins, names, layouts, values); results are cleared, snapshots kept. On error
/// nothing changes. Resuming then continues the checkpointed run bit for bit.
///
/// # Safety
/// `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_ensemble_import_checkpoint(
    ens: *mut DynlibEnsemble,
    path: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let path = cstr(path, "path")?;
        with_ensemble(ens, |e| Ok(e.import_checkpoint(path)?))
    })
}
