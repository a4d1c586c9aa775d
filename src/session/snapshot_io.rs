//! Snapshots outside the process: `.npz` files and byte buffers, and periodic checkpoints.
//!
//! Export writes the session state (or a stored snapshot) in the `dynlib-snapshot-v1` format of
//! [`crate::persist::snapshot`]; import checks everything a file says against this session —
//! sizes, names, pins, workspace layouts, that `meta.json` agrees with the arrays — before it
//! changes anything.

use std::path::{Path, PathBuf};

use super::sim::Sim;
use super::state::{SessionPins, SessionState, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::persist::atomic::write_atomic;
use crate::persist::snapshot::{self, FilePins, SnapshotFile, SnapshotMeta};
use crate::stepper::workspace::check_finite;
use crate::stepper::{self, StepperInfo, WsArray};

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

/// Checks a decoded file against a session of `model` with stepper `info` and builds the
/// state it describes. Nothing is changed on failure (there is nothing to change yet).
pub(crate) fn state_from_file(
    model: &Model,
    info: &'static StepperInfo,
    pins: &SessionPins,
    file: &SnapshotFile,
) -> Result<SessionState> {
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
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::corrupt(format!(
                "{what} '{}' is {} in the file; values must be finite",
                names[i], values[i]
            )));
        }
    }

    let mut st = SessionState::bootstrap(model, info);
    st.y = file.y.clone();
    st.params = file.params.clone();
    st.config = file.config.clone();
    // Loading into a fresh stepper checks the layout; saving gives the canonical order.
    let mut s = stepper::create(info, model.n_states());
    // Empty workspace arrays are optional members (writers may leave them out).
    let stepper_ws = with_empty_members(&file.stepper_ws, &s.save());
    s.load(&stepper_ws)
        .map_err(|e| e.context("workspace/stepper"))?;
    check_finite(&file.stepper_ws, "stepper")?;
    st.stepper_ws = s.save();
    let runtime_ws = with_empty_members(&file.runtime_ws, &st.runtime_ws());
    st.load_runtime_ws(&runtime_ws, model)?;
    st.validate_shape(model, info)?;
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
    source: Option<String>,
    /// The session state they were made from (`source = None`).
    state: Option<SessionState>,
    pins: SessionPins,
    bytes: Vec<u8>,
}

impl Sim {
    /// Calls `f` with the serialized bytes of `source` (as
    /// [`serialize_snapshot`](Self::serialize_snapshot)); when they are longer than `cap`,
    /// they are kept so that the next call for the same, unchanged source reuses them.
    pub(crate) fn with_serialized<R>(
        &mut self,
        source: Option<&str>,
        cap: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let kept = self.sized_bytes.take().filter(|k| {
            k.source.as_deref() == source
                && k.pins == *self.pins()
                && k.state
                    .as_ref()
                    .is_none_or(|st| st.bits_eq(self.session_state()))
        });
        let bytes = match kept {
            Some(k) => k.bytes,
            None => self.serialize_snapshot(source)?,
        };
        let r = f(&bytes);
        if bytes.len() > cap {
            self.sized_bytes = Some(SizedBytes {
                source: source.map(str::to_string),
                state: source.is_none().then(|| self.session_state().clone()),
                pins: self.pins().clone(),
                bytes,
            });
        }
        Ok(r)
    }

    fn file_image(&mut self, source: Option<&str>) -> Result<SnapshotFile> {
        let (model, info) = (self.model().clone(), self.stepper());
        match source {
            None => Ok(state_to_file(
                &model,
                info,
                self.pins(),
                self.session_state(),
                "current",
                "Current session state",
                super::sim::now_iso8601(),
            )),
            Some(name) => {
                let snap = self.snapshot(name)?;
                Ok(state_to_file(
                    &model,
                    info,
                    &snap.pins,
                    &snap.state,
                    &snap.name,
                    &snap.description,
                    snap.created_at.clone(),
                ))
            }
        }
    }

    /// The current state (`source = None`) or a stored snapshot as `.npz` bytes, for hosts
    /// that keep checkpoints in their own storage or send them between processes.
    pub fn serialize_snapshot(&mut self, source: Option<&str>) -> Result<Vec<u8>> {
        let image = self.file_image(source)?;
        snapshot::encode(&image)
    }

    /// Writes the current state (`source = None`) or a stored snapshot to `path` as an `.npz`
    /// file, atomically: readers see the old file or the new one, never a partial one. Missing
    /// parent directories are created. Recorded results are never written.
    pub fn export_snapshot(&mut self, path: impl AsRef<Path>, source: Option<&str>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.serialize_snapshot(source)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(format!(
                    "cannot create directory '{}' for the snapshot: {e}",
                    dir.display()
                ))
            })?;
        }
        write_atomic(path, &bytes)
    }

    /// Restores a state serialized by [`serialize_snapshot`](Self::serialize_snapshot): every
    /// check runs first, then the session state is replaced and recorded results and segments
    /// are cleared. Stored snapshots are kept.
    pub fn deserialize_snapshot(&mut self, bytes: &[u8]) -> Result<()> {
        // What a file for this session holds: its members and their sizes bound the reader.
        let template = state_to_file(
            self.model(),
            self.stepper(),
            self.pins(),
            &SessionState::bootstrap(self.model(), self.stepper()),
            "",
            "",
            String::new(),
        );
        let file = snapshot::decode_for(bytes, &template)?;
        let st = state_from_file(self.model(), self.stepper(), self.pins(), &file)?;
        self.replace_state(st);
        Ok(())
    }

    /// Imports a snapshot file written by [`export_snapshot`](Self::export_snapshot); see
    /// [`deserialize_snapshot`](Self::deserialize_snapshot).
    pub fn import_snapshot(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = snapshot::read_file(path)?;
        self.deserialize_snapshot(&bytes)
            .map_err(|e| e.context(format!("'{}'", path.display())))
    }
}

// ------------------------------------------------------------------------- checkpoints

/// When a run writes checkpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckpointEvery {
    /// After every step whose cumulative step count is a multiple of this.
    Steps(u64),
    /// After the first committed step at or past each multiple of this simulated time.
    Time(f64),
}

/// Periodic checkpoints: snapshot files written during a run into `dir`, each atomically,
/// keeping the newest `keep`. A file is named `checkpoint-<step>.npz` with the step count
/// zero-padded, so names sort by step; [`latest_checkpoint`] finds the newest. Importing it
/// and resuming reproduces the uninterrupted run bit for bit.
///
/// Checkpoints written before a run fails stay on disk: they are valid states of the run, and
/// surviving failures is what they are for.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointPolicy {
    pub dir: PathBuf,
    pub every: CheckpointEvery,
    pub keep: usize,
}

impl CheckpointPolicy {
    pub fn every_steps(dir: impl Into<PathBuf>, steps: u64, keep: usize) -> Self {
        CheckpointPolicy {
            dir: dir.into(),
            every: CheckpointEvery::Steps(steps),
            keep,
        }
    }
    pub fn every_time(dir: impl Into<PathBuf>, dt: f64, keep: usize) -> Self {
        CheckpointPolicy {
            dir: dir.into(),
            every: CheckpointEvery::Time(dt),
            keep,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self.every {
            CheckpointEvery::Steps(0) => {
                return Err(Error::invalid(
                    "checkpoint interval must be at least 1 step",
                ))
            }
            CheckpointEvery::Time(dt) if !(dt > 0.0 && dt.is_finite()) => {
                return Err(Error::invalid(format!(
                    "checkpoint interval must be a positive, finite time, got {dt}"
                )))
            }
            _ => {}
        }
        if self.keep == 0 {
            return Err(Error::invalid("checkpoint 'keep' must be at least 1"));
        }
        Ok(())
    }
}

const CHECKPOINT_PREFIX: &str = "checkpoint-";
const CHECKPOINT_SUFFIX: &str = ".npz";

fn checkpoint_step(file_name: &str) -> Option<u64> {
    let digits = file_name
        .strip_prefix(CHECKPOINT_PREFIX)?
        .strip_suffix(CHECKPOINT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checkpoint files in `dir` as (step, path), oldest first: regular files (or symlinks to
/// them) named `checkpoint-<digits>.npz`.
pub fn list_checkpoints(dir: impl AsRef<Path>) -> Result<Vec<(u64, PathBuf)>> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::io(format!(
            "cannot list checkpoint directory '{}': {e}",
            dir.display()
        ))
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(checkpoint_step) else {
            continue;
        };
        // Only regular files (a symlink counts as what it points to): a directory or a FIFO
        // named like a checkpoint is not one.
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest checkpoint in `dir` (highest step count), if any.
pub fn latest_checkpoint(dir: impl AsRef<Path>) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(dir)?.pop().map(|(_, p)| p))
}

/// Writes checkpoints for one run.
pub(crate) struct Checkpointer {
    policy: CheckpointPolicy,
    model: Model,
    info: &'static StepperInfo,
    pins: SessionPins,
    /// Time slot (multiple of the interval) of the last checkpoint, for time-based policies.
    slot: f64,
}

impl Checkpointer {
    /// Prepares the directory. Refuses one holding checkpoints from later steps, which would
    /// be taken for the newest and could make this run's files the ones pruned.
    pub(crate) fn new(
        policy: &CheckpointPolicy,
        model: &Model,
        info: &'static StepperInfo,
        pins: &SessionPins,
        st: &SessionState,
    ) -> Result<Self> {
        policy.validate()?;
        // Refuse up front a run whose checkpoints could not be written (or read back): their
        // size is that of this state's file.
        let probe = state_to_file(
            model,
            info,
            pins,
            st,
            &format!("{CHECKPOINT_PREFIX}{:020}", u64::MAX),
            &format!("periodic checkpoint at t = {}", -f64::MAX),
            super::sim::now_iso8601(),
        );
        snapshot::encode(&probe).map_err(|e| e.context("checkpoints"))?;
        std::fs::create_dir_all(&policy.dir).map_err(|e| {
            Error::io(format!(
                "cannot create checkpoint directory '{}': {e}",
                policy.dir.display()
            ))
        })?;
        if let Some((step, path)) = list_checkpoints(&policy.dir)?.pop() {
            if step > st.step {
                return Err(Error::invalid(format!(
                    "checkpoint directory '{}' already holds '{}' from step {step}, later than \
                     this session's step {}; use another directory or remove those files",
                    policy.dir.display(),
                    path.file_name().unwrap_or_default().to_string_lossy(),
                    st.step
                )));
            }
        }
        let slot = match policy.every {
            CheckpointEvery::Time(dt) => (st.t / dt).floor(),
            CheckpointEvery::Steps(_) => 0.0,
        };
        Ok(Checkpointer {
            policy: policy.clone(),
            model: model.clone(),
            info,
            pins: pins.clone(),
            slot,
        })
    }

    /// For a policy by step count, the first step after `step` that is due (the fused loop
    /// stops there); `None` for a policy by time, which only the general engine follows.
    pub(crate) fn next_due_step(&self, step: u64) -> Option<u64> {
        match self.policy.every {
            CheckpointEvery::Steps(n) => Some((step / n).saturating_add(1).saturating_mul(n)),
            CheckpointEvery::Time(_) => None,
        }
    }

    /// Whether the step just committed (now at `st.t`, `st.step`) is due for a checkpoint.
    pub(crate) fn due(&mut self, st: &SessionState) -> bool {
        match self.policy.every {
            CheckpointEvery::Steps(n) => st.step % n == 0,
            CheckpointEvery::Time(dt) => {
                let slot = (st.t / dt).floor();
                if slot > self.slot {
                    self.slot = slot;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Writes `st` (whose stepper workspace is up to date) and prunes old checkpoints.
    pub(crate) fn write(&mut self, st: &SessionState) -> Result<()> {
        let name = format!("{CHECKPOINT_PREFIX}{:020}", st.step);
        let image = state_to_file(
            &self.model,
            self.info,
            &self.pins,
            st,
            &name,
            &format!("periodic checkpoint at t = {}", st.t - st.time_shift),
            super::sim::now_iso8601(),
        );
        let bytes = snapshot::encode(&image)?;
        let path = self.policy.dir.join(format!("{name}{CHECKPOINT_SUFFIX}"));
        write_atomic(&path, &bytes).map_err(|e| e.context("writing a checkpoint"))?;
        let all = list_checkpoints(&self.policy.dir)?;
        let excess = all.len().saturating_sub(self.policy.keep);
        for (_, old) in all.into_iter().take(excess) {
            std::fs::remove_file(&old).map_err(|e| {
                Error::io(format!(
                    "cannot remove old checkpoint '{}': {e}",
                    old.display()
                ))
            })?;
        }
        Ok(())
    }
}

/// `ws` plus every zero-length array of `template` it lacks.
fn with_empty_members(ws: &[WsArray], template: &[WsArray]) -> Vec<WsArray> {
    let mut out = ws.to_vec();
    for t in template {
        if t.shape.contains(&0) && !out.iter().any(|a| a.name == t.name) {
            out.push(t.clone());
        }
    }
    out
}
