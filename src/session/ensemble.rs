//! `Ensemble`: N sessions (members) of one model run with one set of options on a thread pool.
//!
//! Each member is an ordinary [`Sim`]; a run calls [`Sim::run`] on every member, so member i's
//! final state, events and recorded samples are bit-identical to a single `Sim` given the same
//! inputs — whatever the thread count or schedule, since members share nothing mutable.
//! Members whose runs are plain fixed-grid runs (fixed-step explicit method, no recording)
//! are advanced in batches by the lock-step kernel (`model::jit::batch`, driven by
//! `session::lockstep`) between the two halves of `Sim::run` (`start_run` / `finish_run`);
//! per lane its arithmetic is the single fused loop's, so the bits are the same.
//! A member that fails keeps its previous state (a failed `Sim::run` changes nothing) and
//! records its error; the others complete.
//!
//! Checkpoints: one `.npz` file for the whole ensemble (format `dynlib-ensemble-v1`), the
//! per-member arrays of `dynlib-snapshot-v1` stacked along a leading member axis, plus the
//! ensemble's reductions; written atomically, checked completely before an import changes
//! anything.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{json, Value};

use super::sim::{RunOptions, Sim};
use super::snapshot_file::{state_from_file, state_to_file};
use super::state::{SessionPins, SessionState};
use crate::error::{suggestion_suffix, Error, ErrorKind, Result};
use crate::model::Model;
use crate::persist::atomic::write_atomic;
use crate::persist::npy::{NpyArray, NpyData};
use crate::persist::npz::{read_npz, write_npz_storing, Limits};
use crate::persist::snapshot::{self, FilePins, SnapshotFile, SnapshotMeta};
use crate::persist::timestamp::now_iso8601;
use crate::stepper::{WsArray, WsData};

/// The `schema` of ensemble checkpoint files.
pub const ENSEMBLE_SCHEMA: &str = "dynlib-ensemble-v1";

/// One member: its session and the outcome of its last run.
#[derive(Debug, Clone)]
struct Member {
    sim: Sim,
    /// The error of this member's last run; `None` = it succeeded (or has not run yet).
    error: Option<Error>,
    /// Events fired since the member's last fresh run (resumes add to it).
    events: u64,
    /// Set when the member's run panicked: its session is no longer trusted or run.
    poisoned: bool,
}

impl Member {
    fn new(sim: Sim) -> Self {
        Member {
            sim,
            error: None,
            events: 0,
            poisoned: false,
        }
    }

    /// One member's step of an ensemble run: exactly `Sim::run`, then the reductions.
    fn run(&mut self, opts: &RunOptions, keep_results: bool) {
        if self.poisoned {
            return; // keeps its error
        }
        let before = self.events_logged(opts);
        match catch_unwind(AssertUnwindSafe(|| self.sim.run(opts))) {
            Ok(outcome) => self.conclude(outcome, before, opts, keep_results),
            Err(payload) => self.poison(payload.as_ref()),
        }
    }

    /// Events in the member's log that this run's count starts from.
    fn events_logged(&self, opts: &RunOptions) -> usize {
        if opts.resume {
            self.sim.results().map_or(0, |r| r.events.len())
        } else {
            0
        }
    }

    /// The reductions after a run that returned `outcome`.
    fn conclude(&mut self, outcome: Result<()>, before: usize, opts: &RunOptions, keep: bool) {
        match outcome {
            Ok(()) => {
                let after = self.sim.results().map_or(0, |r| r.events.len());
                let fired = after.saturating_sub(before) as u64;
                self.events = if opts.resume { self.events } else { 0 } + fired;
                if !keep {
                    // Reduction-only: drop the event log and its buffer (samples were not
                    // recorded), so between runs the member holds O(states) however long the
                    // ensemble runs; during a run its event log grows with the events fired.
                    self.sim.release_results();
                }
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn poison(&mut self, payload: &(dyn std::any::Any + Send)) {
        self.poisoned = true;
        self.error = Some(Error::internal(format!(
            "internal error: this member's run panicked ({}); the member refuses further \
             runs, please report this",
            crate::error::panic_message(payload)
        )));
    }
}

/// Members per lock-step batch by default for a model with events (see
/// `Ensemble::set_lockstep_lanes`), chosen with `examples/ensemble_bench.rs`: every lane
/// that fires makes the whole batch stop for that step, so narrower batches stop less often.
pub const DEFAULT_LOCKSTEP_LANES: usize = 8;

/// The default for a model without events, whose batches only stop at the end: more
/// independent chains in flight (Lorenz rk4: 16 lanes 3-6% faster than 8; README).
pub const DEFAULT_LOCKSTEP_LANES_NO_EVENTS: usize = 16;

/// The default lane count for members of `model`.
pub fn default_lockstep_lanes(model: &Model) -> usize {
    if model.events.is_empty() {
        DEFAULT_LOCKSTEP_LANES_NO_EVENTS
    } else {
        DEFAULT_LOCKSTEP_LANES
    }
}

/// N members of one model, run together.
#[derive(Debug)]
pub struct Ensemble {
    members: Vec<Member>,
    /// The thread pool of the last run, reused while the thread count stays the same.
    pool: Option<(usize, Arc<rayon::ThreadPool>)>,
    /// Members per lock-step batch; 0 runs every member on its own.
    lockstep_lanes: usize,
    /// Member-steps the lock-step kernel took in the last run.
    lockstep_steps: u64,
}

impl Clone for Ensemble {
    fn clone(&self) -> Self {
        Ensemble {
            members: self.members.clone(),
            pool: self.pool.clone(),
            lockstep_lanes: self.lockstep_lanes,
            lockstep_steps: self.lockstep_steps,
        }
    }
}

fn check_n(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            "n_members is 0: an ensemble needs at least one member",
        ));
    }
    Ok(())
}

impl Ensemble {
    /// `n` members, each a new session of `model` with its default stepper and values.
    pub fn new(model: &Model, n: usize) -> Result<Ensemble> {
        Ensemble::with_stepper(model, None, n)
    }

    /// `n` members with stepper `stepper` (name or alias; `None` = the model's default).
    pub fn with_stepper(model: &Model, stepper: Option<&str>, n: usize) -> Result<Ensemble> {
        check_n(n)?;
        Ensemble::from_sim(&Sim::with_stepper(model, stepper)?, n)
    }

    /// `n` members that copy `sim`'s session: its state (time, values, stepper history), its
    /// snapshots and its recording selection, but not its recorded samples.
    pub fn from_sim(sim: &Sim, n: usize) -> Result<Ensemble> {
        check_n(n)?;
        let mut template = sim.clone();
        template.release_results();
        Ok(Ensemble {
            members: vec![Member::new(template); n],
            pool: None,
            lockstep_lanes: default_lockstep_lanes(sim.model()),
            lockstep_steps: 0,
        })
    }

    pub fn n_members(&self) -> usize {
        self.members.len()
    }
    pub fn model(&self) -> &Model {
        self.members[0].sim.model()
    }
    pub fn n_states(&self) -> usize {
        self.model().n_states()
    }
    pub fn n_params(&self) -> usize {
        self.model().n_params()
    }

    fn index(&self, i: usize) -> Result<usize> {
        if i < self.members.len() {
            Ok(i)
        } else {
            Err(Error::invalid(format!(
                "member index {i} out of range: the ensemble has {} members (0..{})",
                self.members.len(),
                self.members.len() - 1
            )))
        }
    }

    /// Member `i`'s session (borrowed).
    pub fn member(&self, i: usize) -> Result<&Sim> {
        Ok(&self.members[self.index(i)?].sim)
    }

    /// Member `i` as an ordinary, independent session (a copy).
    pub fn member_sim(&self, i: usize) -> Result<Sim> {
        self.member(i).cloned()
    }

    /// The error of member `i`'s last run (`None`: it succeeded, or has not run).
    pub fn member_error(&self, i: usize) -> Result<Option<&Error>> {
        Ok(self.members[self.index(i)?].error.as_ref())
    }

    /// Members whose last run failed.
    pub fn n_failed(&self) -> usize {
        self.members.iter().filter(|m| m.error.is_some()).count()
    }

    // ------------------------------------------------------------ inputs

    fn check_matrix(
        &self,
        what: &str,
        data: &[f64],
        rows: usize,
        cols: usize,
        names: &[String],
    ) -> Result<()> {
        let n = self.members.len();
        if rows != n {
            return Err(Error::invalid(format!(
                "{what} matrix has {rows} rows; the ensemble has {n} members (one row per member)"
            )));
        }
        if cols != names.len() {
            return Err(Error::invalid(format!(
                "{what} matrix has {cols} columns; the model has {} {what} ({})",
                names.len(),
                names.join(", ")
            )));
        }
        if Some(data.len()) != rows.checked_mul(cols) {
            return Err(Error::invalid(format!(
                "{what} matrix of {rows} rows x {cols} columns needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        if let Some(k) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "{what} matrix [row {}, column {}] ('{}') is {}; values must be finite \
                 (nothing was changed)",
                k / cols,
                k % cols,
                names[k % cols],
                data[k]
            )));
        }
        Ok(())
    }

    /// Assigns the validated `values` (row-major, one row per member) to `names` of every
    /// member, like [`Sim::assign`].
    fn apply_rows(&mut self, names: &[String], values: &[f64]) -> Result<()> {
        let cols = names.len();
        if cols == 0 {
            return Ok(());
        }
        for (m, row) in self.members.iter_mut().zip(values.chunks(cols)) {
            let pairs: Vec<(&str, f64)> = names
                .iter()
                .map(String::as_str)
                .zip(row.iter().copied())
                .collect();
            m.sim
                .assign(&pairs, false)
                .map_err(|e| Error::internal(format!("assign after validation failed: {e}")))?;
        }
        Ok(())
    }

    /// Sets every member's parameters from a row-major `rows x cols` matrix (rows = members,
    /// cols = the model's parameters in order). Everything is checked before anything changes.
    pub fn set_params(&mut self, data: &[f64], rows: usize, cols: usize) -> Result<()> {
        let names = self.model().param_names.clone();
        self.check_matrix("params", data, rows, cols, &names)?;
        self.apply_rows(&names, data)
    }

    /// Sets every member's state (initial condition of the next fresh run) from a row-major
    /// `rows x cols` matrix (rows = members, cols = the model's states in order).
    pub fn set_ic(&mut self, data: &[f64], rows: usize, cols: usize) -> Result<()> {
        let names = self.model().state_names.clone();
        self.check_matrix("ic", data, rows, cols, &names)?;
        self.apply_rows(&names, data)
    }

    /// Sets one named parameter or state across the members (`values[i]` for member i).
    pub fn set_column(&mut self, name: &str, values: &[f64]) -> Result<()> {
        let m = self.model();
        if m.param_index(name).is_none() && m.state_index(name).is_none() {
            return Err(Error::unknown(format!(
                "unknown state/param name '{name}'{}; states: [{}], params: [{}]",
                suggestion_suffix(
                    name,
                    m.state_names
                        .iter()
                        .chain(&m.param_names)
                        .map(String::as_str)
                ),
                m.state_names.join(", "),
                m.param_names.join(", ")
            )));
        }
        let names = vec![name.to_string()];
        self.check_matrix_column(name, values)?;
        self.apply_rows(&names, values)
    }

    /// Sets one named parameter across the members.
    pub fn set_param_column(&mut self, name: &str, values: &[f64]) -> Result<()> {
        let m = self.model();
        if m.param_index(name).is_none() {
            return Err(Error::unknown(format!(
                "unknown parameter '{name}'{}; params: [{}]",
                suggestion_suffix(name, m.param_names.iter().map(String::as_str)),
                m.param_names.join(", ")
            )));
        }
        self.set_column(name, values)
    }

    fn check_matrix_column(&self, name: &str, values: &[f64]) -> Result<()> {
        let n = self.members.len();
        if values.len() != n {
            return Err(Error::invalid(format!(
                "column '{name}' has {} values; the ensemble has {n} members (one value per member)",
                values.len()
            )));
        }
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "column '{name}' [row {k}] is {}; values must be finite (nothing was changed)",
                values[k]
            )));
        }
        Ok(())
    }

    // ------------------------------------------------------------ run

    fn pool(&mut self, n_threads: usize) -> Result<Arc<rayon::ThreadPool>> {
        if let Some((n, p)) = &self.pool {
            if *n == n_threads {
                return Ok(p.clone());
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads) // 0 = one per available core
            .thread_name(|i| format!("dynlib-ensemble-{i}"))
            .build()
            .map_err(|e| Error::internal(format!("cannot start the thread pool: {e}")))?;
        let pool = Arc::new(pool);
        self.pool = Some((n_threads, pool.clone()));
        Ok(pool)
    }

    /// Runs every member with `opts` on `n_threads` threads (0 = one per core). Options that
    /// no member could accept (bad values, `ic` with resume, ...) are refused before any
    /// member runs, and nothing changes. Otherwise every member runs; the call fails when any
    /// member failed, saying how many — the others' results are kept, and
    /// [`member_error`](Self::member_error) gives each failure.
    ///
    /// With `record` off, members keep no event log either (only the event counts), so a
    /// reduction-only run needs O(states) memory per member.
    pub fn run(&mut self, opts: &RunOptions, n_threads: usize) -> Result<()> {
        if opts.checkpoint.is_some() {
            return Err(Error::invalid(
                "an ensemble run does not take a checkpoint policy (its members would write \
                 to one directory); run in pieces with resume and export_checkpoint instead",
            ));
        }
        self.members[0].sim.validate_run(opts)?;
        let pool = self.pool(n_threads)?;
        self.run_members(opts, &pool);
        self.summarise()
    }

    /// The per-member step of a run: `Sim::run` on each member, spread over the pool. A batched
    /// kernel can replace this for members sharing a step grid, as long as every member ends
    /// in the state its own `Sim::run` would give.
    ///
    /// Members whose runs are plain fixed-grid runs go through the lock-step kernel in
    /// batches of `lockstep_lanes` (see `session::lockstep`); each ends exactly where its
    /// own `Sim::run` would.
    fn run_members(&mut self, opts: &RunOptions, pool: &rayon::ThreadPool) {
        let keep = opts.record.unwrap_or(self.model().sim.record);
        self.lockstep_steps = 0;
        #[cfg(feature = "jit")]
        if let Some(kernel) = self.batch_kernel() {
            let steps = std::sync::atomic::AtomicU64::new(0);
            pool.install(|| {
                self.members
                    .par_chunks_mut(kernel.lanes())
                    .for_each(|chunk| {
                        let n = run_batch(chunk, opts, keep, &kernel);
                        steps.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    })
            });
            self.lockstep_steps = steps.into_inner();
            return;
        }
        pool.install(|| {
            self.members
                .par_iter_mut()
                .with_min_len(1)
                .for_each(|m| m.run(opts, keep))
        });
    }

    /// Members per lock-step batch (rounded up to a whole number of vectors; at most
    /// `batch::MAX_LANES`); 0 turns the lock-step kernel off. The results are the same bits
    /// whatever the value: it only changes how fast they come.
    pub fn set_lockstep_lanes(&mut self, lanes: usize) -> Result<()> {
        #[cfg(feature = "jit")]
        {
            use crate::model::jit::batch::{MAX_LANES, VECTOR_LANES};
            if lanes > MAX_LANES {
                return Err(Error::invalid(format!(
                    "lock-step lanes = {lanes}: at most {MAX_LANES} (0 turns lock-step off)"
                )));
            }
            self.lockstep_lanes = lanes.div_ceil(VECTOR_LANES) * VECTOR_LANES;
        }
        #[cfg(not(feature = "jit"))]
        {
            self.lockstep_lanes = lanes;
        }
        Ok(())
    }

    pub fn lockstep_lanes(&self) -> usize {
        self.lockstep_lanes
    }

    /// Member-steps the lock-step kernel took in the last run (the rest went through each
    /// member's own runner): a diagnostic, the results do not depend on it.
    pub fn last_run_lockstep_steps(&self) -> u64 {
        self.lockstep_steps
    }

    /// The lock-step kernel for the members' model and stepper, when lock-step is on and
    /// one can be built (kept with the model, so a fresh ensemble of it does not compile
    /// again inside its run).
    #[cfg(feature = "jit")]
    fn batch_kernel(&self) -> Option<Arc<crate::model::jit::batch::BatchKernel>> {
        let sim = &self.members[0].sim;
        let (model, info) = (sim.model(), sim.stepper());
        if self.lockstep_lanes == 0 || model.native.is_none() {
            return None;
        }
        let form = crate::stepper::create(info, model.n_states()).step_form()?;
        // No wider than the ensemble: lanes beyond the members would only repeat slot 0.
        let vectors = self
            .members
            .len()
            .div_ceil(crate::model::jit::batch::VECTOR_LANES);
        let lanes = self
            .lockstep_lanes
            .min(vectors * crate::model::jit::batch::VECTOR_LANES);
        model.batch_kernel(info.name, form, lanes)
    }

    fn summarise(&self) -> Result<()> {
        let failed: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].error.is_some())
            .collect();
        let Some(&first) = failed.first() else {
            return Ok(());
        };
        let e = self.members[first].error.as_ref().expect("failed member");
        Err(Error::new(
            e.kind(),
            format!(
                "{} of {} members failed (the others completed); first failure: member \
                 {first}: {}",
                failed.len(),
                self.members.len(),
                e.message()
            ),
        ))
    }

    // ------------------------------------------------------------ reductions

    /// Final states, row-major `n_members x n_states`.
    pub fn final_states(&self) -> Vec<f64> {
        self.members
            .iter()
            .flat_map(|m| m.sim.state().iter().copied())
            .collect()
    }

    /// Parameters, row-major `n_members x n_params`.
    pub fn params(&self) -> Vec<f64> {
        self.members
            .iter()
            .flat_map(|m| m.sim.params().iter().copied())
            .collect()
    }

    /// Each member's current (absolute) time.
    pub fn times(&self) -> Vec<f64> {
        self.members.iter().map(|m| m.sim.time()).collect()
    }

    /// Each member's committed steps since its last fresh run.
    pub fn step_counts(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.sim.step_count()).collect()
    }

    /// Events each member fired since its last fresh run.
    pub fn event_counts(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.events).collect()
    }

    // ------------------------------------------------------------ checkpoints

    /// The whole ensemble's session states as one `.npz` image.
    pub fn serialize_checkpoint(&self) -> Result<Vec<u8>> {
        let n = self.members.len();
        let files: Vec<SnapshotFile> = self
            .members
            .iter()
            .map(|m| {
                let s = &m.sim;
                state_to_file(
                    s.model(),
                    s.stepper(),
                    s.pins(),
                    s.session_state(),
                    "member",
                    "",
                    String::new(),
                )
            })
            .collect();
        let first = &files[0];
        let stack = |rows: Vec<&Vec<f64>>| -> Result<NpyArray> {
            let width = rows[0].len();
            NpyArray::f64(
                vec![n, width],
                rows.into_iter().flatten().copied().collect(),
            )
        };
        let mut members = vec![
            (
                "y".to_string(),
                stack(files.iter().map(|f| &f.y).collect())?,
            ),
            (
                "params".to_string(),
                stack(files.iter().map(|f| &f.params).collect())?,
            ),
            (
                "stepper_config".to_string(),
                stack(files.iter().map(|f| &f.config).collect())?,
            ),
            ("t".to_string(), NpyArray::f64(vec![n], self.times())?),
            (
                "event_counts".to_string(),
                NpyArray::i64(
                    vec![n],
                    self.members.iter().map(|m| m.events as i64).collect(),
                )?,
            ),
        ];
        for (bucket, get) in [
            (
                "stepper",
                (|f: &SnapshotFile| &f.stepper_ws) as fn(&SnapshotFile) -> &Vec<WsArray>,
            ),
            ("runtime", |f: &SnapshotFile| &f.runtime_ws),
        ] {
            for (k, a) in get(first).iter().enumerate() {
                // (members, elements): .npy members are at most 2-D; the per-member shape
                // is the stepper's layout, which the importing session knows.
                let shape = vec![n, a.shape.iter().product()];
                let array = match &a.data {
                    WsData::F64(_) => NpyArray::f64(
                        shape,
                        files
                            .iter()
                            .flat_map(|f| match &get(f)[k].data {
                                WsData::F64(v) => v.clone(),
                                WsData::I64(_) => Vec::new(),
                            })
                            .collect(),
                    ),
                    WsData::I64(_) => NpyArray::i64(
                        shape,
                        files
                            .iter()
                            .flat_map(|f| match &get(f)[k].data {
                                WsData::I64(v) => v.clone(),
                                WsData::F64(_) => Vec::new(),
                            })
                            .collect(),
                    ),
                }
                .map_err(|e| {
                    Error::internal(format!(
                        "workspace '{}' differs between members: {e}",
                        a.name
                    ))
                })?;
                members.push((format!("workspace/{bucket}/{}", a.name), array));
            }
        }
        let m = &first.meta;
        let errors: Vec<Value> = self
            .members
            .iter()
            .map(|m| match &m.error {
                None => Value::Null,
                Some(e) => json!({"kind": format!("{:?}", e.kind()), "message": e.message()}),
            })
            .collect();
        let meta = json!({
            "schema": ENSEMBLE_SCHEMA,
            "created_at": now_iso8601(),
            "n_members": n,
            "n_state": first.y.len(),
            "n_params": first.params.len(),
            "state_names": m.state_names,
            "param_names": m.param_names,
            "stepper_config_names": m.stepper_config_names,
            "pins": {
                "spec_hash": m.pins.spec_hash,
                "stepper_name": m.pins.stepper_name,
                "workspace_sig": m.pins.workspace_sig,
                "dtype_token": m.pins.dtype_token,
                "dynlib_version": m.pins.dynlib_version,
            },
            "member_errors": errors,
        });
        let text = serde_json::to_string_pretty(&meta)
            .map_err(|e| Error::internal(format!("cannot serialise meta.json: {e}")))?;
        members.insert(
            0,
            (
                "meta.json".to_string(),
                NpyArray::u8(vec![text.len()], text.into_bytes())?,
            ),
        );
        write_npz_storing(&members, |key| key == "meta.json")
    }

    /// Writes [`serialize_checkpoint`](Self::serialize_checkpoint) to `path` atomically
    /// (readers see the old file or the new one); missing parent directories are created.
    pub fn export_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.serialize_checkpoint()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(format!(
                    "cannot create directory '{}' for the checkpoint: {e}",
                    dir.display()
                ))
            })?;
        }
        write_atomic(path, &bytes)
    }

    /// Replaces every member's session state by the checkpoint's (results cleared, snapshots
    /// kept), after checking all of it: schema, member count, names, pins, layouts, values.
    pub fn deserialize_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        let (states, events, errors) = self.decode_checkpoint(bytes)?;
        for (((m, st), ev), err) in self.members.iter_mut().zip(states).zip(events).zip(errors) {
            m.sim.replace_state(st);
            m.events = ev;
            m.error = err;
            m.poisoned = false;
        }
        Ok(())
    }

    /// Reads a checkpoint file written by [`export_checkpoint`](Self::export_checkpoint).
    pub fn import_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = snapshot::read_file(path)?;
        self.deserialize_checkpoint(&bytes)
            .map_err(|e| e.context(format!("'{}'", path.display())))
    }

    #[allow(clippy::type_complexity)]
    fn decode_checkpoint(
        &self,
        bytes: &[u8],
    ) -> Result<(Vec<SessionState>, Vec<u64>, Vec<Option<Error>>)> {
        let n = self.members.len();
        let limits = Limits {
            max_members: 4096,
            max_member_bytes: 1 << 30,
            max_total_bytes: 4 << 30,
        };
        let mut arrays = read_npz(bytes, &limits)?;
        let mut take = |key: &str| -> Result<NpyArray> {
            let i = arrays.iter().position(|(k, _)| k == key).ok_or_else(|| {
                Error::corrupt(format!("missing member '{key}' in the ensemble checkpoint"))
            })?;
            Ok(arrays.swap_remove(i).1)
        };
        let meta = take("meta.json")?;
        let NpyData::U8(raw) = &meta.data else {
            return Err(Error::corrupt("member 'meta.json' must be a uint8 array"));
        };
        let meta: Value = serde_json::from_slice(raw)
            .map_err(|e| Error::corrupt(format!("meta.json is not valid JSON: {e}")))?;
        let field = |k: &str| {
            meta.get(k)
                .ok_or_else(|| Error::corrupt(format!("meta.json has no '{k}' field")))
        };
        match field("schema")?.as_str() {
            Some(ENSEMBLE_SCHEMA) => {}
            Some(s) if s == snapshot::SCHEMA => {
                return Err(Error::corrupt(format!(
                    "this is a single-sim snapshot ('{s}'), not an ensemble checkpoint \
                     ('{ENSEMBLE_SCHEMA}')"
                )))
            }
            other => {
                return Err(Error::corrupt(format!(
                    "unsupported schema {other:?} (this version reads '{ENSEMBLE_SCHEMA}')"
                )))
            }
        }
        let file_n = field("n_members")?
            .as_u64()
            .ok_or_else(|| Error::corrupt("meta.json 'n_members' must be a count"))?;
        if file_n != n as u64 {
            return Err(Error::new(
                ErrorKind::Incompatible,
                format!(
                    "the checkpoint holds {file_n} members, this ensemble has {n}; create the \
                     ensemble with {file_n} members to import it"
                ),
            ));
        }
        let strings = |k: &str| -> Result<Vec<String>> {
            field(k)?
                .as_array()
                .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                .ok_or_else(|| Error::corrupt(format!("meta.json '{k}' must be a list of strings")))
        };
        let pins = field("pins")?;
        let pin = |k: &str| -> Result<String> {
            pins.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::corrupt(format!("meta.json 'pins.{k}' must be a string")))
        };
        let file_pins = FilePins {
            spec_hash: pin("spec_hash")?,
            stepper_name: pin("stepper_name")?,
            workspace_sig: pin("workspace_sig")?,
            dtype_token: pin("dtype_token")?,
            dynlib_version: pin("dynlib_version")?,
        };
        let template = &self.members[0].sim;
        let (model, info, pins) = (template.model(), template.stepper(), template.pins());
        let diff = pins.diff(&SessionPins {
            spec_hash: file_pins.spec_hash.clone(),
            stepper_name: file_pins.stepper_name.clone(),
            workspace_sig: file_pins.workspace_sig.clone(),
            dtype: file_pins.dtype_token.clone(),
            dynlib_version: file_pins.dynlib_version.clone(),
        });
        if !diff.is_empty() {
            let parts: Vec<String> = diff
                .iter()
                .map(|(n, ours, theirs)| format!("{n} is '{theirs}' in the file, '{ours}' here"))
                .collect();
            return Err(Error::new(
                ErrorKind::Incompatible,
                format!("incompatible ensemble checkpoint: {}", parts.join("; ")),
            ));
        }
        let (state_names, param_names, knob_names) = (
            strings("state_names")?,
            strings("param_names")?,
            strings("stepper_config_names")?,
        );
        let member_errors: Vec<Option<Error>> = match meta.get("member_errors") {
            Some(Value::Array(list)) if list.len() == n => list
                .iter()
                .map(|v| {
                    v.get("message").and_then(Value::as_str).map(|msg| {
                        Error::new(
                            ErrorKind::StepFailed,
                            format!("(before the checkpoint) {msg}"),
                        )
                    })
                })
                .collect(),
            _ => vec![None; n],
        };

        // Unstack along the member axis: rows of each array.
        let rows_f64 = |key: &str, a: NpyArray| -> Result<(Vec<usize>, Vec<f64>)> {
            match a.data {
                NpyData::F64(v) if a.shape.first() == Some(&n) => Ok((a.shape[1..].to_vec(), v)),
                _ => Err(Error::corrupt(format!(
                    "member '{key}' must be a float64 array with {n} rows (one per member)"
                ))),
            }
        };
        let split = |shape: &[usize], v: &[f64], i: usize| -> Vec<f64> {
            let w: usize = shape.iter().product();
            v[i * w..(i + 1) * w].to_vec()
        };
        let (ys, y) = rows_f64("y", take("y")?)?;
        let (ps, p) = rows_f64("params", take("params")?)?;
        let (cs, c) = rows_f64("stepper_config", take("stepper_config")?)?;
        if ys.len() != 1 || ps.len() != 1 || cs.len() != 1 {
            return Err(Error::corrupt(
                "members 'y', 'params' and 'stepper_config' must be 2-D",
            ));
        }
        let events = match take("event_counts")?.data {
            NpyData::I64(v) if v.len() == n && v.iter().all(|x| *x >= 0) => {
                v.into_iter().map(|x| x as u64).collect::<Vec<u64>>()
            }
            _ => {
                return Err(Error::corrupt(format!(
                    "member 'event_counts' must be {n} non-negative int64 values"
                )))
            }
        };
        let _ = take("t"); // for people; the clock is in workspace/runtime/clock
        let boot = SessionState::bootstrap(model, info);
        let (template_stepper, template_runtime) = (boot.stepper_ws.clone(), boot.runtime_ws());
        let mut ws: Vec<(String, String, Vec<usize>, WsData)> = Vec::new();
        for (key, a) in arrays {
            let (bucket, name) = match key
                .strip_prefix("workspace/")
                .and_then(|r| r.split_once('/'))
            {
                Some((b, name)) if (b == "stepper" || b == "runtime") && !name.contains('/') => {
                    (b.to_string(), name.to_string())
                }
                _ => {
                    return Err(Error::corrupt(format!(
                        "unexpected member '{}' in the ensemble checkpoint",
                        key.escape_debug()
                    )))
                }
            };
            if a.shape.first() != Some(&n) {
                return Err(Error::corrupt(format!(
                    "member '{key}' must have {n} rows (one per member)"
                )));
            }
            let data = match a.data {
                NpyData::F64(v) => WsData::F64(v),
                NpyData::I64(v) => WsData::I64(v),
                NpyData::U8(_) => {
                    return Err(Error::corrupt(format!(
                        "member '{key}' is uint8; workspace arrays are float64 or int64"
                    )))
                }
            };
            let width: usize = a.shape[1..].iter().product();
            let known = if bucket == "stepper" {
                template_stepper.iter().find(|t| t.name == name)
            } else {
                template_runtime.iter().find(|t| t.name == name)
            };
            let shape = match known {
                Some(t) if t.shape.iter().product::<usize>() == width => t.shape.clone(),
                _ => vec![width],
            };
            ws.push((bucket, name, shape, data));
        }
        let mut states = Vec::with_capacity(n);
        for i in 0..n {
            let bucket_ws = |b: &str| -> Vec<WsArray> {
                ws.iter()
                    .filter(|(bk, ..)| bk == b)
                    .map(|(_, name, shape, data)| {
                        let w: usize = shape.iter().product();
                        WsArray {
                            name: name.clone(),
                            shape: shape.clone(),
                            data: match data {
                                WsData::F64(v) => WsData::F64(v[i * w..(i + 1) * w].to_vec()),
                                WsData::I64(v) => WsData::I64(v[i * w..(i + 1) * w].to_vec()),
                            },
                        }
                    })
                    .collect()
            };
            let stepper_ws = bucket_ws("stepper");
            let runtime_ws = bucket_ws("runtime");
            // The per-member meta repeats the clock so that the single-sim checks apply.
            let mut probe = SessionState::bootstrap(model, info);
            probe
                .load_runtime_ws(&runtime_ws, model)
                .map_err(|e| e.context(format!("member {i}")))?;
            let file = SnapshotFile {
                meta: SnapshotMeta {
                    created_at: String::new(),
                    name: format!("member {i}"),
                    description: String::new(),
                    pins: file_pins.clone(),
                    state_names: state_names.clone(),
                    param_names: param_names.clone(),
                    t_curr: probe.t,
                    dt_curr: probe.dt,
                    step_count: probe.step,
                    status: probe.status.code(),
                    time_shift: probe.time_shift,
                    nominal_dt: probe.nominal_dt,
                    stepper_config_names: knob_names.clone(),
                },
                y: split(&ys, &y, i),
                params: split(&ps, &p, i),
                config: split(&cs, &c, i),
                stepper_ws,
                runtime_ws,
            };
            states.push(
                state_from_file(model, info, pins, &file)
                    .map_err(|e| e.context(format!("member {i}")))?,
            );
        }
        Ok((states, events, member_errors))
    }
}

/// One chunk of members through the lock-step kernel: each member's run is started, the
/// plain ones advanced together, then every run finished by its own runner. Returns the
/// member-steps the kernel took. A panic poisons the chunk's members whose runs were open.
#[cfg(feature = "jit")]
fn run_batch(
    chunk: &mut [Member],
    opts: &RunOptions,
    keep: bool,
    kernel: &crate::model::jit::batch::BatchKernel,
) -> u64 {
    use super::lockstep::{advance, LaneEnd};
    let model = chunk[0].sim.model().clone();
    let mut open = vec![false; chunk.len()];
    let mut steps = 0;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // Runs (moved as few times as possible: a started run is large) and, beside them,
        // (member, events logged before).
        let mut runs = Vec::with_capacity(chunk.len());
        let mut who = Vec::with_capacity(chunk.len());
        for (i, m) in chunk.iter_mut().enumerate() {
            if m.poisoned || !Arc::ptr_eq(&m.sim.model().0, &model.0) {
                continue;
            }
            let before = m.events_logged(opts);
            match m.sim.start_run(opts, &model) {
                Ok(run) => {
                    open[i] = true;
                    who.push((i, before));
                    runs.push(run);
                }
                Err(e) => m.conclude(Err(e), before, opts, keep),
            }
        }
        let (ends, taken) = advance(kernel, &mut runs);
        steps = taken;
        for (((i, before), mut run), end) in who.into_iter().zip(runs).zip(ends) {
            let outcome = match end {
                LaneEnd::Continue => run.runner.run(&mut run.st, &run.plan, &mut run.rec),
                LaneEnd::Finished => Ok(()),
                LaneEnd::Failed(e) => Err(e),
            };
            let m = &mut chunk[i];
            let outcome = m.sim.finish_run(run, outcome);
            m.conclude(outcome, before, opts, keep);
            open[i] = false;
        }
        // Members skipped above (another model) run on their own.
        for m in chunk.iter_mut() {
            if !Arc::ptr_eq(&m.sim.model().0, &model.0) {
                m.run(opts, keep);
            }
        }
    }));
    if let Err(payload) = outcome {
        for (m, _) in chunk.iter_mut().zip(&open).filter(|(_, o)| **o) {
            m.poison(payload.as_ref());
        }
    }
    steps
}
