//! The preset bank, preset files, persistent run defaults and the stepper configuration.

use std::ffi::c_char;

use super::boundary::{boundary, Failure};
use super::buffers::{cstr, opt_cstr, slice, str_list, write_slice, write_str};
use super::handles::{with_sim, DynlibSim};
use super::status::*;
use crate::session::{ConfigValue, OnConflict, SaveMode};

/// Writes `n` to `out` when `out` is not NULL.
unsafe fn maybe_count(out: *mut usize, n: usize) {
    if !out.is_null() {
        out.write(n);
    }
}

/// The preset bank as a JSON array of `{name, params: {name: value}, states: {name: value}}`,
/// in bank order (the model's `[presets.*]` first), for names matching the glob `pattern`
/// (`*`, `?`, `[...]`; NULL = all).
///
/// # Safety
/// `sim` a sim handle; `pattern` NULL or NUL-terminated; `buf` NULL or writable for `cap`
/// bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_list_presets_json(
    sim: *mut DynlibSim,
    pattern: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let pattern = opt_cstr(pattern, "pattern")?.unwrap_or("*");
        with_sim(sim, |s| {
            write_str(&s.presets_json(pattern).to_string(), buf, cap, needed)
        })
    })
}

/// Adds preset `name` to the bank: the `n` given states/parameters by name (checked like
/// `dynlib_sim_assign`), or with `n = 0` every state and parameter of the current session.
/// An existing name is `DYNLIB_ERR_DUPLICATE_NAME` unless `overwrite`.
///
/// # Safety
/// `name` NUL-terminated; `names`/`values` NULL (with n = 0) or `n` valid entries.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_add_preset(
    sim: *mut DynlibSim,
    name: *const c_char,
    names: *const *const c_char,
    values: *const f64,
    n: usize,
    overwrite: bool,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        let names = str_list(names, n, "names")?;
        let values = slice(values, n, "values")?;
        let pairs: Vec<(&str, f64)> = names.into_iter().zip(values.iter().copied()).collect();
        with_sim(sim, |s| {
            Ok(s.add_preset(name, (n > 0).then_some(&pairs[..]), overwrite)?)
        })
    })
}

/// Removes preset `name` from the bank.
///
/// # Safety
/// `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_remove_preset(
    sim: *mut DynlibSim,
    name: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| Ok(s.remove_preset(name)?))
    })
}

/// Loads the presets of a preset file (TOML, `dynlib-presets-v1`, or a model file's
/// `[presets.*]`) whose names match the glob `pattern` (NULL = all) into the bank.
/// `on_conflict` is "error" (NULL), "keep" or "replace" for names already in the bank. Every
/// preset is checked against the model first; nothing changes on error. `*n_loaded` (if not
/// NULL) gets the number of presets added or replaced.
///
/// # Safety
/// `path` NUL-terminated; `pattern`, `on_conflict` NULL or NUL-terminated; `n_loaded` NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_load_presets(
    sim: *mut DynlibSim,
    path: *const c_char,
    pattern: *const c_char,
    on_conflict: *const c_char,
    n_loaded: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let path = cstr(path, "path")?;
        let pattern = opt_cstr(pattern, "pattern")?.unwrap_or("*");
        let mode = OnConflict::parse(opt_cstr(on_conflict, "on_conflict")?.unwrap_or("error"))?;
        with_sim(sim, |s| {
            let names = s.load_presets(path, pattern, mode)?;
            maybe_count(n_loaded, names.len());
            Ok(())
        })
    })
}

/// Writes the bank's presets matching `pattern` (NULL = all) to a preset file, atomically.
/// `mode` "append" (NULL: keep the file's presets; a name already in it is an error),
/// "replace" (keep them, replace same-named ones) or "overwrite" (a new file). `*n_saved` (if not NULL) gets the number written.
///
/// # Safety
/// As `dynlib_sim_load_presets`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_save_presets(
    sim: *mut DynlibSim,
    path: *const c_char,
    pattern: *const c_char,
    mode: *const c_char,
    n_saved: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let path = cstr(path, "path")?;
        let pattern = opt_cstr(pattern, "pattern")?.unwrap_or("*");
        let mode = SaveMode::parse(opt_cstr(mode, "mode")?.unwrap_or("append"))?;
        with_sim(sim, |s| {
            let names = s.save_presets(path, pattern, mode)?;
            maybe_count(n_saved, names.len());
            Ok(())
        })
    })
}

/// Sets persistent run defaults from a JSON object: `dt` (number), `max_steps`,
/// `record_interval` (whole numbers >= 1), `record` (true/false), and stepper knobs by name
/// (numbers); `null` returns an item to its default. Unknown names are
/// `DYNLIB_ERR_UNKNOWN_NAME` with a did-you-mean; nothing changes on error. `dt` applies to
/// fresh runs only.
///
/// # Safety
/// `json` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_config_set_json(
    sim: *mut DynlibSim,
    json: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let text = cstr(json, "json")?;
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Failure::invalid(format!("json is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Failure::invalid("json must be a JSON object {\"name\": value}"))?;
        let mut items = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let value = match v {
                serde_json::Value::Null => ConfigValue::Unset,
                serde_json::Value::Bool(b) => ConfigValue::Bool(*b),
                serde_json::Value::Number(n) => ConfigValue::Number(n.as_f64().unwrap_or(f64::NAN)),
                other => {
                    return Err(Failure::invalid(format!(
                        "config '{k}' must be a number, true/false or null, got {other}"
                    )))
                }
            };
            items.push((k.as_str(), value));
        }
        with_sim(sim, |s| Ok(s.config(&items)?))
    })
}

/// The effective defaults of the next run as JSON: `dt`, `max_steps`, `record`,
/// `record_interval` each as `{value, set}` (`set`: given by config), and `stepper_config`
/// as `{knob: value}`.
///
/// # Safety
/// `buf` NULL or writable for `cap` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_config_json(
    sim: *mut DynlibSim,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            write_str(&s.config_json().to_string(), buf, cap, needed)
        })
    })
}

/// Sets `n` stepper knobs persistently (later runs, snapshots and snapshot files carry them).
/// A NaN value restores the knob's default. A name the stepper does not have is
/// `DYNLIB_ERR_UNKNOWN_NAME` (for every stepper, also one without knobs); nothing changes on
/// error.
///
/// # Safety
/// `names`/`values` NULL (with n = 0) or `n` valid entries.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_stepper_config_set(
    sim: *mut DynlibSim,
    names: *const *const c_char,
    values: *const f64,
    n: usize,
) -> DynlibStatus {
    boundary(|| {
        let names = str_list(names, n, "names")?;
        let values = slice(values, n, "values")?;
        let items: Vec<(&str, Option<f64>)> = names
            .into_iter()
            .zip(values.iter().map(|v| (!v.is_nan()).then_some(*v)))
            .collect();
        with_sim(sim, |s| Ok(s.set_stepper_config(&items)?))
    })
}

/// The session's stepper configuration values in knob order (output buffer protocol, in
/// doubles; 0 values for a stepper without knobs).
///
/// # Safety
/// `buf` NULL or writable for `cap` doubles; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_stepper_config(
    sim: *mut DynlibSim,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_slice(s.stepper_config(), buf, cap, needed)))
}

/// The stepper's knobs as a JSON array of `{name, value, default, help}` (`value` is the
/// session's, `default` the model's).
///
/// # Safety
/// As `dynlib_sim_config_json`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_stepper_config_json(
    sim: *mut DynlibSim,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            write_str(&s.stepper_knobs_json().to_string(), buf, cap, needed)
        })
    })
}
