//! Session states as snapshot files and back: the file image of a state, and the checks an
//! import makes — sizes, names, pins, workspace layouts, that `meta.json` agrees with the
//! arrays — before anything changes. Free of `Sim`, so the runner's checkpoints use it too.

use std::path::Path;

use super::state::{SessionPins, SessionState, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::persist::snapshot::{self, FileLayout, FilePins, SnapshotFile, SnapshotMeta};
use crate::stepper::workspace::{check_finite, check_layout};
use crate::stepper::{self, StepperInfo, Workspace, WsArray, WsData};

/// Builds the file image of a session state.
pub(crate) fn state_to_file(
    model: &Model,
    info: &'static StepperInfo,
    pins: &SessionPins,
    state: &SessionState,
    name: &str,
    description: &str,
    created_at: String,
) -> SnapshotFile {
    SnapshotFile {
        meta: SnapshotMeta {
            created_at,
            name: name.to_string(),
            description: description.to_string(),
            pins: FilePins {
                spec_hash: pins.spec_hash.clone(),
                stepper_name: pins.stepper_name.clone(),
                workspace_sig: pins.workspace_sig.clone(),
                dtype_token: pins.dtype.clone(),
                dynlib_version: pins.dynlib_version.clone(),
            },
            // Compact (v2) files do not list the names: no copy of them is made.
            state_names: listed_names(model, &model.state_names),
            param_names: listed_names(model, &model.param_names),
            t_curr: state.t,
            dt_curr: state.dt,
            step_count: state.step,
            status: state.status.code(),
            time_shift: state.time_shift,
            nominal_dt: state.nominal_dt,
            stepper_config_names: info.config.iter().map(|k| k.name.to_string()).collect(),
        },
        y: state.y.clone(),
        params: state.params.clone(),
        config: state.config.clone(),
        stepper_ws: state.stepper_ws.clone(),
        runtime_ws: state.runtime_ws(),
    }
}

/// The names a snapshot file of `model` lists: all of them, or none for compact files.
fn listed_names(model: &Model, names: &[String]) -> Vec<String> {
    if snapshot::compact_sizes(model.n_states(), model.n_params()) {
        Vec::new()
    } else {
        names.to_vec()
    }
}

fn incompatible(msg: String) -> Error {
    Error::new(ErrorKind::Incompatible, msg)
}

/// What a snapshot file for a session of `model` with stepper `info` holds, built without
/// state-sized arrays; `stepper_template` is the workspace of a fresh stepper.
pub(crate) fn file_layout<'a>(
    model: &'a Model,
    info: &'static StepperInfo,
    stepper_template: &[WsArray],
) -> FileLayout<'a> {
    let compact = snapshot::compact_sizes(model.n_states(), model.n_params());
    let listed = |names: &'a [String]| if compact { &[][..] } else { names };
    let mut members: Vec<_> = stepper_template
        .iter()
        .map(|a| FileLayout::workspace_member("stepper", a))
        .collect();
    for (name, dtype, shape) in SessionState::runtime_layout(model) {
        members.push((format!("workspace/runtime/{name}"), dtype, shape));
    }
    FileLayout {
        n_states: model.n_states(),
        n_params: model.n_params(),
        state_names: listed(&model.state_names),
        param_names: listed(&model.param_names),
        config_names: info.config.iter().map(|k| k.name).collect(),
        members,
    }
}

/// Checks a decoded file against a session of `model` with stepper `info` and builds the
/// state it describes. Nothing is changed on failure (there is nothing to change yet).
pub(crate) fn state_from_file(
    model: &Model,
    info: &'static StepperInfo,
    pins: &SessionPins,
    file: &SnapshotFile,
) -> Result<SessionState> {
    let mut s = stepper::create(info, model.n_states());
    let template = s.save();
    let owned = (file.clone(), false);
    state_from_owned_file(model, info, pins, owned, &template, Some(&mut *s))
}

/// [`state_from_file`] taking the file, so its arrays move into the state. `stepper_template`
/// is the workspace of a fresh stepper, `s` a fresh stepper, which loads the file's
/// workspace and so checks it; it may be left out (`None`) for a stepper that is not
/// adaptive and carries nothing (`stepper_template` empty): its workspace must be empty.
/// With the file comes whether its `runtime/pending_y` is all zeros and left out (see
/// `snapshot::decode_for_layout_deferring`).
pub(crate) fn state_from_owned_file(
    model: &Model,
    info: &'static StepperInfo,
    pins: &SessionPins,
    (file, pending_y_is_zero): (SnapshotFile, bool),
    stepper_template: &[WsArray],
    mut s: Option<&mut (dyn stepper::Stepper + 'static)>,
) -> Result<SessionState> {
    let mut file = file;
    upgrade_legacy(model, info, pins, &mut file);
    check_vectors(model, info, pins, &file)?;
    let SnapshotFile {
        meta: m,
        y,
        params,
        config,
        stepper_ws,
        runtime_ws,
    } = file;
    // Empty workspace arrays are optional members (writers may leave them out).
    let mut stepper_ws = with_empty_members(stepper_ws, stepper_template);
    match s.as_deref_mut() {
        Some(s) => s.load(&stepper_ws),
        None if stepper_template.is_empty() && !info.adaptive => {
            check_layout(&stepper_ws, &[], "stepper")
        }
        None => Err(Error::internal(
            "a snapshot of this stepper needs a stepper to load it",
        )),
    }
    .map_err(|e| e.context("workspace/stepper"))?;
    check_finite(&stepper_ws, "stepper")?;
    if let Some(s) = s.as_deref() {
        // Saving gives the canonical order.
        stepper_ws = s.save();
    }
    let runtime_template: Vec<WsArray> = SessionState::runtime_layout(model)
        .into_iter()
        .filter(|(_, _, shape)| shape.contains(&0))
        .map(|(name, dtype, shape)| empty_array(name, dtype, shape))
        .collect();
    let runtime_ws = with_empty_members(runtime_ws, &runtime_template);
    let mut st = SessionState {
        t: 0.0,
        y,
        params,
        dt: 0.0,
        step: 0,
        grid_t0: 0.0,
        grid_k0: 0,
        nominal_dt: 0.0,
        time_shift: 0.0,
        step_shift: 0,
        stepper_ws,
        lag_ring: Vec::new(),
        lag_head: Vec::new(),
        pending: None,
        config,
        status: Status::Ready,
    };
    st.take_runtime_ws_zeroing(runtime_ws, model, pending_y_is_zero)?;
    st.validate_shape_against(model, info, stepper_template)?;
    st.validate_clock(info)?;
    if let Some(p) = &st.pending {
        if !info.adaptive {
            return Err(Error::corrupt(format!(
                "workspace/runtime has a pending step, but stepper '{}' is not adaptive",
                info.name
            )));
        }
        if p.y_new.iter().any(|v| !v.is_finite())
            || !p.t_new.is_finite()
            || p.t_new.partial_cmp(&st.t) != Some(std::cmp::Ordering::Greater)
        {
            return Err(Error::corrupt(
                "the pending step in workspace/runtime is not finite or not ahead of t",
            ));
        }
        if !(p.h_next > 0.0 && p.h_next.is_normal()) {
            return Err(Error::corrupt(format!(
                "the pending step in workspace/runtime proposes the next step size {}; it must \
                 be a positive normal number",
                p.h_next
            )));
        }
        // A resume either commits the pending step or interpolates inside it again: the
        // stepper's dense output must cover it.
        let s = s.ok_or_else(|| Error::internal("a pending step needs a stepper to check it"))?;
        let mut probe = vec![0.0; model.n_states()];
        for t in [st.t, p.t_new] {
            if !s.interpolate(t, &mut probe) || probe.iter().any(|v| !v.is_finite()) {
                return Err(Error::corrupt(format!(
                    "the dense output in workspace/stepper cannot produce the pending step at \
                     t = {t} (empty or degenerate span)"
                )));
            }
        }
    }

    // meta.json is for people; the arrays are exact. They must say the same thing.
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits();
    let checks = [
        ("t_curr", same(m.t_curr, st.t), st.t),
        ("dt_curr", same(m.dt_curr, st.dt), st.dt),
        (
            "time_shift",
            same(m.time_shift, st.time_shift),
            st.time_shift,
        ),
        (
            "nominal_dt",
            same(m.nominal_dt, st.nominal_dt),
            st.nominal_dt,
        ),
    ];
    if let Some((key, _, exact)) = checks.iter().find(|c| !c.1) {
        return Err(Error::corrupt(format!(
            "meta.json '{key}' disagrees with workspace/runtime/clock ({exact})"
        )));
    }
    if m.step_count != st.step {
        return Err(Error::corrupt(format!(
            "meta.json 'step_count' is {} but workspace/runtime/counters says {}",
            m.step_count, st.step
        )));
    }
    if Status::from_code(m.status) != Some(st.status) {
        return Err(Error::corrupt(format!(
            "meta.json 'status' is {} but workspace/runtime/counters says {}",
            m.status,
            st.status.code()
        )));
    }
    Ok(st)
}

/// A file written with the stepper's legacy workspace layout ([`stepper::LegacyLayout`]:
/// its knob names and the workspace signature of that layout, nothing else) is read as
/// today's (`upgrade`). Any other file is left for the checks to judge.
fn upgrade_legacy(
    model: &Model,
    info: &'static StepperInfo,
    pins: &SessionPins,
    file: &mut SnapshotFile,
) {
    if file.meta.pins.stepper_name != info.name {
        return;
    }
    let Some(legacy) = info
        .legacy
        .into_iter()
        .flat_map(|l| l.chain())
        .find(|legacy| {
            let legacy_names = (legacy.knob_names)();
            file.meta.stepper_config_names == legacy_names
                && file.config.len() == legacy_names.len()
                && layout_sig(model, info, legacy) == file.meta.pins.workspace_sig
        })
    else {
        return;
    };
    (legacy.upgrade)(&mut file.stepper_ws, &mut file.config);
    file.meta.stepper_config_names = info.config.iter().map(|k| k.name.to_string()).collect();
    file.meta.pins.workspace_sig = pins.workspace_sig.clone();
}

/// The `workspace_sig`s files of `model` had in the stepper's legacy layouts (none for a
/// stepper without one): such files are read as today's (see `upgrade_legacy`).
pub(crate) fn legacy_workspace_sigs(model: &Model, info: &'static StepperInfo) -> Vec<String> {
    info.legacy
        .into_iter()
        .flat_map(|l| l.chain())
        .map(|legacy| layout_sig(model, info, legacy))
        .collect()
}

/// The `workspace_sig` of `model`'s files in the legacy layout `legacy`.
fn layout_sig(model: &Model, info: &'static StepperInfo, legacy: &stepper::LegacyLayout) -> String {
    let template = (legacy.template)(model.n_states());
    SessionPins::with_template(model, info, &template).workspace_sig
}

/// The checks of a file's vectors, names, pins and stepper config against the session.
fn check_vectors(
    model: &Model,
    info: &'static StepperInfo,
    pins: &SessionPins,
    file: &SnapshotFile,
) -> Result<()> {
    let m = &file.meta;
    if file.y.len() != model.n_states() {
        return Err(incompatible(format!(
            "state vector has {} entries, the model has {}",
            file.y.len(),
            model.n_states()
        )));
    }
    if file.params.len() != model.n_params() {
        return Err(incompatible(format!(
            "parameter vector has {} entries, the model has {}",
            file.params.len(),
            model.n_params()
        )));
    }
    // A compact file lists no names: the spec_hash pin (checked below) covers them.
    let listed = !(snapshot::compact_sizes(file.y.len(), file.params.len())
        && m.state_names.is_empty()
        && m.param_names.is_empty());
    for (what, theirs, ours) in [
        ("state", &m.state_names, &model.state_names),
        ("parameter", &m.param_names, &model.param_names),
    ] {
        if listed && theirs != ours {
            return Err(incompatible(format!(
                "{what} names differ: the file has [{}], the model has [{}]",
                theirs.join(", "),
                ours.join(", ")
            )));
        }
    }
    let file_pins = SessionPins {
        spec_hash: m.pins.spec_hash.clone(),
        stepper_name: m.pins.stepper_name.clone(),
        workspace_sig: m.pins.workspace_sig.clone(),
        dtype: m.pins.dtype_token.clone(),
        dynlib_version: m.pins.dynlib_version.clone(),
    };
    let diff = pins.diff(&file_pins);
    if !diff.is_empty() {
        let parts: Vec<String> = diff
            .iter()
            .map(|(n, ours, theirs)| format!("{n} is '{theirs}' in the file, '{ours}' here"))
            .collect();
        return Err(incompatible(format!(
            "incompatible snapshot: {}",
            parts.join("; ")
        )));
    }
    let knob_names: Vec<&str> = info.config.iter().map(|k| k.name).collect();
    if m.stepper_config_names != knob_names {
        return Err(Error::corrupt(format!(
            "stepper config names in the file are [{}], stepper '{}' has [{}]",
            m.stepper_config_names.join(", "),
            info.name,
            knob_names.join(", ")
        )));
    }
    if let Some(i) = file.config.iter().position(|v| v.is_nan()) {
        return Err(Error::corrupt(format!(
            "stepper config '{}' is NaN",
            knob_names[i]
        )));
    }
    stepper::validate_config(info, &file.config)
        .map_err(|e| Error::corrupt(format!("member 'stepper_config': {}", e.message())))?;
    for (what, values, names) in [
        ("state", &file.y, &model.state_names),
        ("parameter", &file.params, &model.param_names),
    ] {
        if let Some(i) = first_non_finite(values) {
            return Err(Error::corrupt(format!(
                "{what} '{}' is {} in the file; values must be finite",
                names[i], values[i]
            )));
        }
    }
    Ok(())
}

/// Reads the `meta.json` of a snapshot file without touching any session.
pub fn inspect_snapshot(path: impl AsRef<Path>) -> Result<serde_json::Value> {
    let path = path.as_ref();
    let bytes = snapshot::read_file(path)?;
    snapshot::decode_meta(&bytes).map_err(|e| e.context(format!("'{}'", path.display())))
}

/// Reads the `meta.json` of a snapshot held in memory.
pub fn inspect_snapshot_bytes(bytes: &[u8]) -> Result<serde_json::Value> {
    snapshot::decode_meta(bytes)
}

/// The bytes of a serialization whose caller's buffer was too small (the C ABI's size
/// query), kept for the call that follows with a large enough buffer, so the pair
/// serializes once. Valid while the source is unchanged: a stored snapshot never changes, the
/// current state is compared bit for bit.
#[derive(Debug, Clone)]
pub(crate) struct SizedBytes {
    pub(crate) source: Option<String>,
    /// The session state they were made from (`source = None`).
    pub(crate) state: Option<SessionState>,
    pub(crate) pins: SessionPins,
    pub(crate) bytes: Vec<u8>,
}

/// `ws` plus every zero-length array of `template` it lacks.
fn with_empty_members(mut ws: Workspace, template: &[WsArray]) -> Workspace {
    for t in template {
        if t.shape.contains(&0) && !ws.iter().any(|a| a.name == t.name) {
            ws.push(t.clone());
        }
    }
    ws
}

/// An array of `dtype` and `shape` without values (a dimension is 0).
fn empty_array(name: &str, dtype: &str, shape: Vec<usize>) -> WsArray {
    let data = if dtype == "int64" {
        WsData::I64(Vec::new())
    } else {
        WsData::F64(Vec::new())
    };
    WsArray {
        name: name.to_string(),
        shape,
        data,
    }
}

/// The index of the first value of `v` that is infinite or NaN. Blocks are scanned without
/// an early exit (so the scan vectorizes); a state of 10^6 values takes a fraction of a copy.
fn first_non_finite(v: &[f64]) -> Option<usize> {
    const BLOCK: usize = 64;
    let bad = |x: &f64| x.to_bits() & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000;
    v.chunks(BLOCK)
        .position(|block| block.iter().fold(false, |any, x| any | bad(x)))
        .map(|b| b * BLOCK + v[b * BLOCK..].iter().position(bad).expect("in this block"))
}
