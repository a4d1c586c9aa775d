//! Models: load, inspect, free.

use std::ffi::c_char;

use super::boundary::{boundary, Failure, FfiResult};
use super::buffers::{cstr, opt_cstr, str_list, write_out, write_str};
use super::handles::{free_model, model_ref, new_model_handle, DynlibModel};
use super::status::*;
use crate::model::{Backend, Model};
use crate::session::sim::resolve_stepper;

/// Loads a model. `source` is `builtin://ode/<name>` or `builtin://map/<name>`, a path to a
/// TOML file, or `inline:` followed by TOML text. `stepper` names the stepper sims of this
/// model use (name or alias); NULL = the model's default. On success `*model_out` owns a new
/// handle (free with `dynlib_model_free`); on failure it is not written and
/// `dynlib_last_error()` says what was wrong (with line and column for model text).
///
/// # Safety
/// `source` and `stepper` must be NULL or NUL-terminated; `model_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_load(
    source: *const c_char,
    stepper: *const c_char,
    model_out: *mut *mut DynlibModel,
) -> DynlibStatus {
    boundary(|| {
        let source = cstr(source, "source")?;
        let stepper = opt_cstr(stepper, "stepper")?;
        if model_out.is_null() {
            return Err(Failure::null("model_out"));
        }
        let model = Model::load(source)?;
        let stepper = match stepper {
            Some(s) => Some(resolve_stepper(&model, Some(s))?.name.to_string()),
            None => None,
        };
        write_out(model_out, new_model_handle(model, stepper)?, "model_out")
    })
}

/// Loads a model variant: `source` as for `dynlib_model_load` (a file or `builtin://`
/// source may end in `#mod=NAME`), then the `n_mods` mods of `mods` in order. Each mod is
/// the name of a `[mods.NAME]` table (or the `[mod]` table) of the model file, `inline:`
/// followed by TOML holding one mod, or the path of a mod file (`path#mod=NAME` when it
/// defines several). Verbs run remove → replace → add → set within a mod; the variant's
/// spec hash differs from the base model's, so snapshots of one are refused by the other.
/// `mods` may be NULL when `n_mods` is 0. Ownership and errors as `dynlib_model_load`.
///
/// # Safety
/// As `dynlib_model_load`; `mods` NULL or `n_mods` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_load_mods(
    source: *const c_char,
    mods: *const *const c_char,
    n_mods: usize,
    stepper: *const c_char,
    model_out: *mut *mut DynlibModel,
) -> DynlibStatus {
    boundary(|| {
        let source = cstr(source, "source")?;
        let mods = str_list(mods, n_mods, "mods")?;
        let stepper = opt_cstr(stepper, "stepper")?;
        if model_out.is_null() {
            return Err(Failure::null("model_out"));
        }
        let model = Model::load_with_mods(source, &mods, Backend::Auto)?;
        let stepper = match stepper {
            Some(s) => Some(resolve_stepper(&model, Some(s))?.name.to_string()),
            None => None,
        };
        write_out(model_out, new_model_handle(model, stepper)?, "model_out")
    })
}

/// Validates a model source without loading it, writing JSON into `buf` (output buffer
/// protocol): `{"valid": true|false, "errors": [{"message", "location", "line",
/// "column"}, ...]}`, every problem found (at most 20), `line`/`column` 1-based positions
/// in the model text (0 when not known). An invalid model is not a failure of this call:
/// the status is `DYNLIB_OK` and `valid` is false.
///
/// # Safety
/// `source` NUL-terminated; `buf` NULL or writable for `cap` bytes; `needed` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_validate(
    source: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let source = cstr(source, "source")?;
        let errors = Model::validate(source);
        let json = serde_json::json!({
            "valid": errors.is_empty(),
            "errors": errors,
        });
        write_str(&json.to_string(), buf, cap, needed)
    })
}

/// Frees a model. NULL, and a handle that is not a live model, are ignored. Sims created from
/// the model stay valid.
///
/// # Safety
/// `model` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_free(model: *mut DynlibModel) {
    let _ = boundary(|| {
        free_model(model);
        Ok(())
    });
}

unsafe fn with_model(
    model: *const DynlibModel,
    f: impl FnOnce(&Model) -> FfiResult,
) -> DynlibStatus {
    boundary(|| f(&model_ref(model, "model")?.model))
}

/// Number of states.
///
/// # Safety
/// `model` must be a model handle; `n` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_n_states(
    model: *const DynlibModel,
    n: *mut usize,
) -> DynlibStatus {
    with_model(model, |m| write_out(n, m.n_states(), "n"))
}

/// Number of parameters.
///
/// # Safety
/// As `dynlib_model_n_states`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_n_params(
    model: *const DynlibModel,
    n: *mut usize,
) -> DynlibStatus {
    with_model(model, |m| write_out(n, m.n_params(), "n"))
}

/// Number of aux variables.
///
/// # Safety
/// As `dynlib_model_n_states`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_n_aux(
    model: *const DynlibModel,
    n: *mut usize,
) -> DynlibStatus {
    with_model(model, |m| write_out(n, m.n_aux(), "n"))
}

fn name_at<'a>(names: &'a [String], index: usize, what: &str) -> FfiResult<&'a str> {
    names.get(index).map(String::as_str).ok_or_else(|| {
        Failure::invalid(format!(
            "{what} index {index} is out of range: the model has {}",
            names.len()
        ))
    })
}

/// Name of state `index` (0-based) into `buf` (output buffer protocol).
///
/// # Safety
/// `buf` NULL or writable for `cap` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_state_name(
    model: *const DynlibModel,
    index: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    with_model(model, |m| {
        write_str(name_at(&m.state_names, index, "state")?, buf, cap, needed)
    })
}

/// Name of parameter `index` (0-based) into `buf` (output buffer protocol).
///
/// # Safety
/// As `dynlib_model_state_name`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_param_name(
    model: *const DynlibModel,
    index: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    with_model(model, |m| {
        write_str(
            name_at(&m.param_names, index, "parameter")?,
            buf,
            cap,
            needed,
        )
    })
}

/// Name of aux variable `index` (0-based) into `buf` (output buffer protocol).
///
/// # Safety
/// As `dynlib_model_state_name`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_aux_name(
    model: *const DynlibModel,
    index: usize,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    with_model(model, |m| {
        write_str(name_at(&m.aux_names, index, "aux")?, buf, cap, needed)
    })
}

/// The model as JSON: kind, name, states and parameters with defaults, aux, events, `[sim]`
/// defaults, presets and spec hash.
///
/// # Safety
/// As `dynlib_model_state_name`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_info_json(
    model: *const DynlibModel,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    with_model(model, |m| {
        write_str(&m.info_json().to_string(), buf, cap, needed)
    })
}
