//! `Sim`: a live simulation session — run, resume, snapshots, reset, assign, segments.

use super::checkpoint::{CheckpointPolicy, Checkpointer};
use super::presets::{self, OnConflict, Preset, SaveMode};
use super::progress::{Hook, Hooks};
use super::results::{RecVar, Recording, Segment};
use super::runner::{fixed_horizon, Horizon, RunPlan, RunStats, Runner};
pub use super::snapshot_store::Snapshot;
use super::state::{config_hash, SessionPins, SessionState, Status};
use crate::error::{suggestion_suffix, Error, ErrorKind, Result};
use crate::model::{Model, ModelKind};
use crate::persist::timestamp::now_iso8601_shared;
use crate::stepper::initial_step::{estimate, InitialStep};
use crate::stepper::{self, knob, knob_index, StepperInfo};
use std::path::Path;

/// Options of one `run`. `None` means the default (explained per field).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// ODE: absolute end time (default `[sim].t_end`). Maps: alternative to `n`.
    pub t_end: Option<f64>,
    /// Maps: iterations since the recorded start (default: from `t_end`, else `max_steps`).
    pub n: Option<u64>,
    /// Step size (sticky: later fresh runs reuse it). Refused on resume.
    pub dt: Option<f64>,
    /// Start time of a fresh run (default `[sim].t0`). Refused on resume.
    pub t0: Option<f64>,
    /// Initial state of a fresh run (default: the current session state). Refused on resume.
    pub ic: Option<Vec<f64>>,
    /// Parameters of a fresh run (default: the current session values). Refused on resume.
    pub params: Option<Vec<f64>>,
    /// Record samples (default `[sim].record`).
    pub record: Option<bool>,
    /// Record every k-th step (default 1).
    pub record_interval: Option<u64>,
    /// States and aux to record, in this order (`aux.` prefix accepted); default all states.
    /// Refused on resume: the first recorded run after a reset fixes the selection.
    pub record_vars: Option<Vec<String>>,
    /// Warm-up before recording (ODE: time; map: iterations). Refused on resume.
    pub transient: Option<f64>,
    /// Step budget of this call (default `[sim].max_steps`).
    pub max_steps: Option<u64>,
    /// Name of the recorded segment.
    pub tag: Option<String>,
    /// Continue the session instead of starting a new recording pass.
    pub resume: bool,
    /// Stepper-config overrides (knob name, value), applied on top of the session's config.
    pub config: Vec<(String, f64)>,
    /// Periodic checkpoint files written during the run (after warm-up).
    pub checkpoint: Option<CheckpointPolicy>,
    /// Take every step in the general engine, never in a fused native loop. The results
    /// are the same bits either way; this exists to check exactly that, and to measure.
    pub general_engine: bool,
    /// Called during the run (after warm-up) at a bounded rate with the time, step and
    /// fraction done; returning `Control::Stop` ends the run there (status `USER_BREAK`,
    /// resumable exactly).
    pub progress: Option<Hook>,
    /// Called every K steps with the committed state; may stop the run like `progress`.
    pub observer: Option<Hook>,
}

impl RunOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// ODE end time (or map horizon in time units).
    pub fn t(mut self, t_end: f64) -> Self {
        self.t_end = Some(t_end);
        self
    }
    /// Map iterations.
    pub fn n(mut self, n: u64) -> Self {
        self.n = Some(n);
        self
    }
    pub fn dt(mut self, dt: f64) -> Self {
        self.dt = Some(dt);
        self
    }
    pub fn t0(mut self, t0: f64) -> Self {
        self.t0 = Some(t0);
        self
    }
    pub fn ic(mut self, ic: &[f64]) -> Self {
        self.ic = Some(ic.to_vec());
        self
    }
    pub fn params(mut self, p: &[f64]) -> Self {
        self.params = Some(p.to_vec());
        self
    }
    pub fn record(mut self, on: bool) -> Self {
        self.record = Some(on);
        self
    }
    pub fn record_interval(mut self, k: u64) -> Self {
        self.record_interval = Some(k);
        self
    }
    pub fn record_vars(mut self, vars: &[&str]) -> Self {
        self.record_vars = Some(vars.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn transient(mut self, x: f64) -> Self {
        self.transient = Some(x);
        self
    }
    pub fn max_steps(mut self, n: u64) -> Self {
        self.max_steps = Some(n);
        self
    }
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_string());
        self
    }
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }
    pub fn checkpoint(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoint = Some(policy);
        self
    }
    pub fn config(mut self, knob: &str, value: f64) -> Self {
        self.config.push((knob.to_string(), value));
        self
    }
    pub fn general_engine(mut self, on: bool) -> Self {
        self.general_engine = on;
        self
    }
    pub fn progress(mut self, hook: Hook) -> Self {
        self.progress = Some(hook);
        self
    }
    pub fn observer(mut self, hook: Hook) -> Self {
        self.observer = Some(hook);
        self
    }
}

/// One row of `list_snapshots`.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub name: String,
    pub t: f64,
    pub step: u64,
    pub created_at: String,
    pub description: String,
}

/// A segment addressed by index or by name.
#[derive(Debug, Clone, Copy)]
pub enum SegmentRef<'a> {
    Index(usize),
    Name(&'a str),
}

impl From<usize> for SegmentRef<'_> {
    fn from(i: usize) -> Self {
        SegmentRef::Index(i)
    }
}

impl<'a> From<&'a str> for SegmentRef<'a> {
    fn from(s: &'a str) -> Self {
        SegmentRef::Name(s)
    }
}

/// A simulation session over one model and one stepper.
#[derive(Debug, Clone)]
pub struct Sim {
    model: Model,
    info: &'static StepperInfo,
    /// Shared with every snapshot of the session (they are taken under these pins).
    pins: std::sync::Arc<SessionPins>,
    pub(crate) state: SessionState,
    snapshots: super::snapshot_store::SnapshotStore,
    /// Bytes of the last too-large serialization (see `Sim::with_serialized`).
    pub(crate) sized_bytes: Option<super::snapshot_file::SizedBytes>,
    /// The last run's stepper and buffers, for the next run (see `RunSpares`).
    spares: super::runner::RunSpares,
    initial_created: bool,
    rec: Option<Recording>,
    /// The recording selection fixed by the first recorded run after a reset.
    selection: Option<Selection>,
    /// How the last successful run took its steps.
    last_run: RunStats,
    /// The buffers of the recording a fresh run replaced, kept (up to
    /// `SPARE_RECORDING_BYTES`) for the next fresh run to reuse.
    spare_rec: Option<Recording>,
    /// The preset bank: the model's `[presets.*]`, then added and loaded ones.
    presets: Vec<Preset>,
    /// Persistent run defaults set by [`Sim::config`].
    defaults: RunDefaults,
    /// The workspace of a fresh stepper: the layout imported workspaces must have (made once,
    /// so an import of a fixed-step state creates no stepper).
    pub(crate) stepper_template: crate::stepper::Workspace,
    /// The selection of every state (the default), made at the first run that needs it.
    all_states: std::sync::OnceLock<Selection>,
}

/// Recorded variables and their names, shared by the session and its recordings.
type Selection = (std::sync::Arc<[RecVar]>, std::sync::Arc<[String]>);

/// A run between [`Sim::start_run`] and [`Sim::finish_run`].
pub(crate) struct StartedRun<'m> {
    pub(crate) runner: Runner<'m>,
    /// The session state being advanced.
    pub(crate) st: SessionState,
    pub(crate) plan: RunPlan,
    pub(crate) rec: Recording,
    /// Of the run's options, what its end needs: resumed or fresh, the segment's tag, and
    /// whether checkpoints or hooks are due during it.
    resume: bool,
    tag: Option<String>,
    hooked: bool,
    mark: crate::session::results::Mark,
    /// Samples and events recorded before this run.
    start_lens: (usize, usize),
    /// The initial snapshot, packed from the starting state (a Sim's first fresh run only;
    /// boxed, so that every started run is not a snapshot larger): one allocation, where a
    /// copy of the state to pack at the end took one per vector.
    initial: Option<Box<Snapshot>>,
    selection: Selection,
    had_rec: bool,
    /// Steps taken outside `runner` (by a lock-step kernel, with the fused loops' bits),
    /// counted into the run's statistics.
    pub(crate) outside_steps: u64,
}

impl StartedRun<'_> {
    /// When this run is a plain fixed-grid run that a lock-step kernel may advance: the
    /// step before which it must hand back to `runner` (an off-grid last step is left to
    /// it). Plain means no recording, no checkpoints or hooks, fused loops allowed, a
    /// positive finite step, and a step budget the whole run fits in (so no step of it
    /// can fail on the budget).
    pub(crate) fn lockstep_end(&self) -> Option<u64> {
        let (Horizon::Steps { end_step, clip_to }, true) =
            (self.plan.horizon, self.plan.record_interval.is_none())
        else {
            return None;
        };
        let dt = self.st.nominal_dt;
        let plain = self.plan.fused
            && !self.hooked
            && dt > 0.0
            && dt.is_finite()
            && end_step.saturating_sub(self.st.step) <= self.plan.max_steps;
        plain.then(|| end_step - u64::from(clip_to.is_some()))
    }
}

/// Persistent defaults for later runs, set by [`Sim::config`]. A run's own option wins, then
/// these, then the model's `[sim]` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunDefaults {
    /// Step size of fresh runs (resumed runs keep the session's step size).
    pub dt: Option<f64>,
    pub max_steps: Option<u64>,
    pub record: Option<bool>,
    pub record_interval: Option<u64>,
}

/// The option names [`Sim::config`] accepts besides stepper knobs.
pub const CONFIG_KEYS: [&str; 4] = ["dt", "max_steps", "record", "record_interval"];

/// One value for [`Sim::config`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConfigValue {
    Number(f64),
    Bool(bool),
    /// Back to the default (the model's `[sim]` value, or the stepper's default knob value).
    Unset,
}

/// One stepper knob as [`Sim::stepper_knobs`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct KnobState {
    pub name: &'static str,
    /// The session's current value (used by the next run).
    pub value: f64,
    /// The model's default (stepper default, then `[sim]`).
    pub default: f64,
    pub help: &'static str,
}

/// Largest replaced recording kept for reuse: repeated runs of up to this size allocate
/// nothing; larger memory goes back to the allocator at once.
const SPARE_RECORDING_BYTES: usize = 256 << 20;

impl Sim {
    /// A session with the model's default stepper.
    pub fn new(model: &Model) -> Result<Sim> {
        Sim::with_stepper(model, None)
    }

    /// A session with a given stepper (name or alias); `None` = the model's default.
    pub fn with_stepper(model: &Model, stepper_name: Option<&str>) -> Result<Sim> {
        let info = resolve_stepper(model, stepper_name)?;
        stepper::validate_config(info, &model.sim.stepper_config(info))
            .map_err(|e| e.context("the model's [sim] defaults"))?;
        let stepper_template = stepper::create(info, model.n_states()).save();
        Ok(Sim {
            model: model.clone(),
            info,
            pins: SessionPins::with_template(model, info, &stepper_template).into(),
            state: SessionState::bootstrap(model, info),
            snapshots: Default::default(),
            sized_bytes: None,
            spares: Default::default(),
            initial_created: false,
            rec: None,
            selection: None,
            last_run: RunStats::default(),
            spare_rec: None,
            presets: model
                .presets
                .iter()
                .map(|p| Preset {
                    name: p.name.clone(),
                    params: p.params.clone(),
                    states: p.states.clone(),
                })
                .collect(),
            defaults: RunDefaults::default(),
            stepper_template,
            all_states: Default::default(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn stepper(&self) -> &'static StepperInfo {
        self.info
    }
    pub fn pins(&self) -> &SessionPins {
        &self.pins
    }
    pub fn session_state(&self) -> &SessionState {
        &self.state
    }
    /// Current absolute time of the session.
    pub fn time(&self) -> f64 {
        self.state.t
    }
    pub fn step_count(&self) -> u64 {
        self.state.step
    }
    pub fn state(&self) -> &[f64] {
        &self.state.y
    }
    pub fn params(&self) -> &[f64] {
        &self.state.params
    }
    /// How the last successful run took its steps.
    pub fn last_run_stats(&self) -> RunStats {
        self.last_run
    }

    pub fn status(&self) -> Status {
        self.state.status
    }

    /// Value of one state or parameter by name.
    pub fn value(&self, name: &str) -> Result<f64> {
        match self.resolve_assignable(name) {
            Some(Assignable::State(i)) => Ok(self.state.y[i]),
            Some(Assignable::Param(i)) => Ok(self.state.params[i]),
            None => Err(self.unknown_names_error(&[name])),
        }
    }

    // ---------------------------------------------------------------- run

    /// Runs the simulation. On error nothing changes: session, snapshots and results stay as
    /// they were before the call.
    pub fn run(&mut self, opts: &RunOptions) -> Result<()> {
        let model = self.model.clone();
        let mut run = self.start_run(opts, &model)?;
        let outcome = run.runner.run(&mut run.st, &run.plan, &mut run.rec);
        self.finish_run(run, outcome)
    }

    /// The first half of [`run`](Self::run): options checked and resolved, the starting
    /// state set up (warm-up included), the plan and the recording ready. Stepping
    /// `run.st` with `run.runner` and then [`finish_run`](Self::finish_run) is `run`; an
    /// ensemble's lock-step kernel advances several members' `st` together in between.
    /// The session is unchanged until `finish_run` (except that a resumed recording is
    /// held by `run`).
    pub(crate) fn start_run<'m>(
        &mut self,
        opts: &RunOptions,
        model: &'m Model,
    ) -> Result<StartedRun<'m>> {
        self.check_runnable(opts)?;
        let settings = RunSettings::of(opts, &self.defaults, model);
        let info = self.info;
        let mut st = self.spares.working_copy(&self.state);
        apply_knobs(info, &mut st, opts)?;
        let mut initial = None;
        if !opts.resume {
            initial = self.fresh_start(&mut st, opts, settings.dt, model);
        }
        let mut runner = Runner::reusing(model, info, &st, &mut self.spares)?;
        if !opts.resume {
            runner.restart();
        }
        let t0 = st.t;
        // Adaptive fresh runs pick their first step; resumed runs continue the controller.
        let t_end_user = opts.t_end.unwrap_or(model.sim.t_end);
        if !opts.resume && info.adaptive {
            let first_horizon = t0 + opts.transient.unwrap_or(0.0).max(0.0) + (t_end_user - t0);
            st.dt = self.initial_step(&st, first_horizon, settings.dt)?;
        }
        if let Some(tr) = opts.transient.filter(|x| *x > 0.0) {
            warm_up(
                &mut runner,
                &mut st,
                model,
                info,
                tr,
                settings.max_steps,
                opts,
            )?;
        }
        let horizon = match model.kind {
            ModelKind::Ode => ode_horizon(&st, opts, info, t0, t_end_user)?,
            ModelKind::Map => map_horizon(&st, opts, settings.max_steps)?,
        };
        if let Some(policy) = &opts.checkpoint {
            let cp = Checkpointer::new(policy, model, info, &self.pins, &st)?;
            runner.set_checkpoint(Some(cp));
        }
        if opts.progress.is_some() || opts.observer.is_some() {
            runner.set_hooks(Hooks::new(
                opts.progress.iter().chain(&opts.observer).cloned(),
            ));
        }
        let plan = RunPlan {
            horizon,
            max_steps: settings.max_steps,
            record_interval: settings.record.then_some(settings.record_interval),
            record_start: true,
            fused: !opts.general_engine,
        };
        let (selection, had_rec, rec) = self.recording_for(opts)?;
        Ok(StartedRun {
            runner,
            st,
            plan,
            mark: rec.mark(),
            start_lens: (rec.len(), rec.events.len()),
            rec,
            resume: opts.resume,
            tag: self.spares.tag_copy(opts.tag.as_deref()),
            hooked: opts.checkpoint.is_some() || opts.progress.is_some() || opts.observer.is_some(),
            initial,
            selection,
            had_rec,
            outside_steps: 0,
        })
    }

    /// A model with states and valid options (hooks included), or the error saying why not.
    fn check_runnable(&self, opts: &RunOptions) -> Result<()> {
        if self.model.n_states() == 0 {
            return Err(Error::invalid(format!(
                "{} has no states, so there is nothing to run; a parameters-only model serves \
                 presets, assign and snapshots",
                if self.model.name.is_empty() {
                    "this model".to_string()
                } else {
                    format!("model '{}'", self.model.name)
                }
            )));
        }
        self.validate_run(opts)?;
        if let Some(h) = &opts.progress {
            h.validate("progress")?;
        }
        if let Some(h) = &opts.observer {
            h.validate("observer")?;
        }
        Ok(())
    }

    /// A fresh run's starting state in `st`: t0, initial conditions, parameters, step,
    /// grid, lags and stepper workspace. Returns the initial snapshot, which only a Sim's
    /// first run takes.
    fn fresh_start(
        &self,
        st: &mut SessionState,
        opts: &RunOptions,
        dt: Option<f64>,
        model: &Model,
    ) -> Option<Box<Snapshot>> {
        st.t = opts.t0.unwrap_or(model.sim.t0);
        if let Some(ic) = &opts.ic {
            st.y = ic.clone();
        }
        if let Some(p) = &opts.params {
            st.params = p.clone();
        }
        if let Some(dt) = dt {
            st.nominal_dt = dt;
        }
        st.dt = st.nominal_dt;
        st.step = 0;
        st.grid_t0 = st.t;
        st.grid_k0 = 0;
        st.time_shift = 0.0;
        st.step_shift = 0;
        st.pending = None;
        st.status = Status::Ready;
        st.init_lag(model);
        st.stepper_ws.clone_from(&self.stepper_template);
        (!self.initial_created).then(|| Box::new(self.initial_snapshot(st)))
    }

    /// The recorded selection, whether a recording existed, and the recording the run
    /// writes: a fresh run starts a new one; a resume appends to the current one.
    fn recording_for(&mut self, opts: &RunOptions) -> Result<(Selection, bool, Recording)> {
        let selection = if opts.resume {
            match &self.selection {
                Some(s) => s.clone(),
                None => self.resolve_record_vars(None)?,
            }
        } else {
            self.resolve_record_vars(opts.record_vars.as_deref())?
        };
        let had_rec = self.rec.is_some();
        let rec = if opts.resume {
            self.rec
                .take()
                .unwrap_or_else(|| Recording::new(selection.0.clone(), selection.1.clone()))
        } else {
            Recording::reusing(
                self.spare_rec.take(),
                selection.0.clone(),
                selection.1.clone(),
            )
        };
        Ok((selection, had_rec, rec))
    }

    /// The second half of [`run`](Self::run): commits `run` when `outcome` (its stepping)
    /// succeeded, otherwise leaves the session as it was and returns the error.
    #[inline]
    pub(crate) fn finish_run(&mut self, run: StartedRun<'_>, outcome: Result<()>) -> Result<()> {
        let StartedRun {
            runner,
            mut st,
            mark,
            mut rec,
            resume,
            tag,
            initial,
            selection,
            had_rec,
            outside_steps,
            start_lens: (ms, me),
            ..
        } = run;
        if let Err(e) = outcome {
            self.spares.keep_state(st);
            self.spares.keep_tag(tag);
            rec.rollback(mark);
            if resume && had_rec {
                self.rec = Some(rec);
            }
            return Err(e);
        }
        self.last_run = runner.stats();
        self.last_run.steps += outside_steps;
        self.last_run.fused_steps += outside_steps;
        runner.finish(&mut st, &mut self.spares);

        if rec.len() > ms {
            let last = rec.len() - 1;
            let name = tag.as_deref().map(|t| rec.unique_segment_name(t, None));
            self.spares.keep_tag(tag);
            rec.push_segment(Segment {
                name,
                t_start: rec.t[ms],
                t_end: rec.t[last],
                step_start: rec.step.get(ms),
                step_end: rec.step.get(last),
                sample_start: ms,
                sample_len: rec.len() - ms,
                event_start: me,
                event_len: rec.events.len() - me,
                resume,
                cfg_hash: self.spares.config_digest(&st.config),
            });
        }

        // Commit.
        if !self.initial_created {
            self.push_initial(initial.map(|s| *s));
        }
        let replaced = std::mem::replace(&mut self.state, st);
        self.spares.keep_state(replaced);
        if let Some(old) = self.rec.replace(rec) {
            if !resume && old.capacity_bytes() <= SPARE_RECORDING_BYTES {
                self.spare_rec = Some(old);
            }
        }
        if !resume || self.selection.is_none() {
            self.selection = Some(selection);
        }
        Ok(())
    }

    fn initial_step(&self, st: &SessionState, t_end: f64, user_dt: Option<f64>) -> Result<f64> {
        let info = self.info;
        let dt_max = knob(info, &st.config, "dt_max");
        let cap = user_dt.unwrap_or(f64::INFINITY);
        let cap = if dt_max.is_finite() { dt_max } else { cap };
        let mut eval = crate::model::ModelEval::new(&self.model.0);
        struct F<'a, 'm> {
            eval: &'a mut crate::model::ModelEval<'m>,
            p: &'a [f64],
            lag: crate::model::LagView<'a>,
        }
        impl crate::stepper::Rhs for F<'_, '_> {
            fn eval(&mut self, t: f64, y: &[f64], out: &mut [f64]) -> Result<()> {
                self.eval.rhs(
                    &crate::model::Env {
                        t,
                        y,
                        p: self.p,
                        lag: self.lag,
                    },
                    out,
                )
            }
        }
        let mut f = F {
            eval: &mut eval,
            p: &st.params,
            lag: crate::model::LagView {
                ring: &st.lag_ring,
                heads: &st.lag_head,
                layout: &self.model.lag_layout,
                shift: 0,
            },
        };
        estimate(
            &mut f,
            &InitialStep {
                t0: st.t,
                y0: &st.y,
                t_end,
                order: info.embedded_order.unwrap_or(info.order),
                atol: knob(info, &st.config, "atol"),
                rtol: knob(info, &st.config, "rtol"),
                cap,
                stepper: info,
            },
        )
    }

    pub(crate) fn validate_run(&self, o: &RunOptions) -> Result<()> {
        let kind = self.model.kind;
        if let Some(tag) = &o.tag {
            if tag.is_empty() {
                return Err(Error::invalid("tag cannot be empty"));
            }
        }
        if o.resume {
            let refuse = |what: &str, why: &str| {
                Err(Error::invalid(format!(
                    "run(resume = true) does not accept '{what}': {why}"
                )))
            };
            if o.ic.is_some() {
                return refuse("ic", "a resumed run continues from the session state; change states with assign() before resuming, or run without resume");
            }
            if o.params.is_some() {
                return refuse("params", "a resumed run keeps the session parameters; change them with assign() before resuming, or run without resume");
            }
            if o.t0.is_some() {
                return refuse("t0", "a resumed run continues from the current time; run without resume to start at another time");
            }
            if o.dt.is_some() {
                return refuse(
                    "dt",
                    "a resumed run keeps the session's step size; run without resume to change dt",
                );
            }
            if o.transient.is_some_and(|x| x > 0.0) {
                return refuse(
                    "transient",
                    "a resumed segment continues immediately; warm-up is only for fresh runs",
                );
            }
            if o.record_vars.is_some() {
                return refuse("record_vars", "the recorded variables are fixed for the whole recording; call reset() first to choose new ones");
            }
        }
        if let Some(dt) = o.dt {
            if !(dt > 0.0 && dt.is_finite()) {
                return Err(Error::invalid(format!(
                    "dt must be positive and finite, got {dt}"
                )));
            }
        }
        for (what, v) in [("T", o.t_end), ("t0", o.t0), ("transient", o.transient)] {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err(Error::invalid(format!("{what} must be finite, got {v}")));
                }
            }
        }
        if o.transient.is_some_and(|x| x < 0.0) {
            return Err(Error::invalid("transient must be non-negative"));
        }
        if o.record_interval == Some(0) {
            return Err(Error::invalid("record_interval must be at least 1"));
        }
        if o.max_steps == Some(0) {
            return Err(Error::invalid("max_steps must be at least 1"));
        }
        match kind {
            ModelKind::Ode if o.n.is_some() => {
                return Err(Error::invalid(
                    "N counts map iterations; for an ODE model give the end time T",
                ))
            }
            ModelKind::Map if o.n.is_some() && o.t_end.is_some() => {
                return Err(Error::invalid(
                    "give either N (iterations) or T (time) for a map, not both",
                ))
            }
            _ => {}
        }
        let check_len = |what: &str, v: &Option<Vec<f64>>, names: &[String]| -> Result<()> {
            if let Some(v) = v {
                if v.len() != names.len() {
                    return Err(Error::invalid(format!(
                        "{what} has {} values; the model has {} ({})",
                        v.len(),
                        names.len(),
                        names.join(", ")
                    )));
                }
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::invalid(format!(
                        "{what} value for '{}' is {}; values must be finite",
                        names[i], v[i]
                    )));
                }
            }
            Ok(())
        };
        check_len("ic", &o.ic, &self.model.state_names)?;
        check_len("params", &o.params, &self.model.param_names)?;
        Ok(())
    }

    fn resolve_record_vars(&self, vars: Option<&[String]>) -> Result<Selection> {
        let m = &self.model;
        let Some(vars) = vars else {
            let all = self.all_states.get_or_init(|| {
                (
                    (0..m.n_states()).map(RecVar::State).collect(),
                    m.state_names.as_slice().into(),
                )
            });
            return Ok(all.clone());
        };
        let mut out: (Vec<RecVar>, Vec<String>) = (Vec::new(), Vec::new());
        for v in vars {
            let var = if let Some(a) = v.strip_prefix("aux.") {
                m.aux_index(a).map(RecVar::Aux).ok_or_else(|| {
                    Error::unknown(format!(
                        "record_vars: '{a}' is not an aux variable{}; aux: {}",
                        suggestion_suffix(a, m.aux_names.iter().map(String::as_str)),
                        list_or_none(&m.aux_names)
                    ))
                })?
            } else if let Some(i) = m.state_index(v) {
                RecVar::State(i)
            } else if let Some(i) = m.aux_index(v) {
                RecVar::Aux(i)
            } else {
                return Err(Error::unknown(format!(
                    "record_vars: unknown variable '{v}'{}; states: {}; aux: {}",
                    suggestion_suffix(
                        v,
                        m.state_names.iter().chain(&m.aux_names).map(String::as_str)
                    ),
                    list_or_none(&m.state_names),
                    list_or_none(&m.aux_names)
                )));
            };
            let name = match var {
                RecVar::State(i) => m.state_names[i].clone(),
                RecVar::Aux(i) => m.aux_names[i].clone(),
            };
            out.0.push(var);
            out.1.push(name);
        }
        Ok((out.0.into(), out.1.into()))
    }

    // ---------------------------------------------------------------- snapshots

    /// The automatic "initial" snapshot, of `seed` or else of the current state.
    /// Adds the "initial" snapshot (`initial`, or the current state) unless one exists.
    fn push_initial(&mut self, initial: Option<Snapshot>) {
        self.initial_created = true;
        if self.snapshots.contains("initial") {
            return;
        }
        let initial = initial.unwrap_or_else(|| self.initial_snapshot(&self.state));
        self.snapshots.insert_first(initial);
    }

    fn initial_snapshot(&self, state: &SessionState) -> Snapshot {
        Snapshot::new(
            "initial".into(),
            "auto-created before the first run".into(),
            now_iso8601_shared(),
            state,
            self.pins.clone(),
        )
    }

    fn ensure_initial(&mut self) {
        if !self.initial_created {
            self.push_initial(None);
        }
    }

    /// Saves the current state under `name`.
    pub fn create_snapshot(&mut self, name: &str, description: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("snapshot name cannot be empty"));
        }
        if self.snapshots.contains(name) {
            return Err(Error::duplicate(format!(
                "snapshot '{name}' already exists; pick another name"
            )));
        }
        if !self.initial_created {
            self.push_initial(None);
            if self.snapshots.contains(name) {
                return Err(Error::duplicate(format!(
                    "snapshot '{name}' already exists; pick another name"
                )));
            }
        }
        self.snapshots.push(Snapshot::new(
            name.to_string(),
            description.to_string(),
            now_iso8601_shared(),
            &self.state,
            self.pins.clone(),
        ));
        Ok(())
    }

    pub fn list_snapshots(&mut self) -> Vec<SnapshotInfo> {
        self.ensure_initial();
        self.snapshots
            .iter()
            .map(|s| SnapshotInfo {
                name: s.name.clone(),
                t: s.t(),
                step: s.step(),
                created_at: s.created_at.to_string(),
                description: s.description.clone(),
            })
            .collect()
    }

    /// Builds the default recording selection (every state) now, so that copies of this
    /// session share it instead of each building its own at its first run (an ensemble's
    /// members are copies of one template).
    pub(crate) fn share_default_selection(&self) {
        let _every_state = self.resolve_record_vars(None);
    }

    /// Drops the recorded samples, events and segments together with their buffers (the
    /// recording selection is kept), as `assign(&[], true)` would but returning the memory:
    /// reduction-only ensemble members keep O(states) between runs.
    pub(crate) fn release_results(&mut self) {
        if let Some(r) = &mut self.rec {
            let holds_memory =
                r.capacity_bytes() > 0 || r.events.capacity() > 0 || r.segments.capacity() > 0;
            if holds_memory {
                *r = Recording::new(r.vars.clone(), r.names.clone());
            } else {
                r.clear(); // nothing to return: no new recording to allocate
            }
        }
        self.spare_rec = None;
    }

    /// Replaces the session state wholesale (import): results and segments are cleared,
    /// snapshots kept.
    pub(crate) fn replace_state(&mut self, state: SessionState) {
        self.state = state;
        self.rec = None;
    }

    /// [`list_snapshots`](Self::list_snapshots) as a JSON array of
    /// `{name, t, step, created_at, description}`.
    pub fn snapshots_json(&mut self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .list_snapshots()
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "t": json_f64(s.t),
                    "step": s.step,
                    "created_at": &*s.created_at,
                    "description": s.description,
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// The recorded event log as a JSON array of `{event, t, step, sample, values}`, where
    /// `values` maps each logged field to its value and `sample` is the index of the last
    /// sample recorded before the event (or null).
    pub fn events_json(&self) -> Result<serde_json::Value> {
        let rec = self.results()?;
        let list: Vec<serde_json::Value> = rec
            .events
            .iter()
            .map(|e| {
                let ev = &self.model.events[e.event];
                let values: serde_json::Map<String, serde_json::Value> = ev
                    .log
                    .iter()
                    .zip(&e.values)
                    .map(|(n, v)| (n.clone(), json_f64(*v)))
                    .collect();
                serde_json::json!({
                    "event": ev.name,
                    "t": json_f64(e.t),
                    "step": e.step,
                    "sample": e.sample,
                    "values": values,
                })
            })
            .collect();
        Ok(serde_json::Value::Array(list))
    }

    pub(crate) fn snapshot(&mut self, name: &str) -> Result<&Snapshot> {
        self.ensure_initial();
        match self.snapshots.get(name) {
            Some(s) => Ok(s),
            None => Err(Error::unknown(format!(
                "unknown snapshot '{name}'{}; snapshots: {}",
                suggestion_suffix(name, self.snapshots.iter().map(|s| s.name.as_str())),
                self.snapshots
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Compares a snapshot's pins with this session's: `(ok, [(pin, ours, theirs)])`.
    pub fn compat_check(&mut self, name: &str) -> Result<(bool, PinDiff)> {
        let pins = self.pins.clone();
        let snap = self.snapshot(name)?;
        let diff = pins.diff(&snap.pins);
        Ok((diff.is_empty(), diff))
    }

    /// Restores a snapshot and clears recorded history, segments and the recording selection.
    pub fn reset(&mut self, name: &str) -> Result<()> {
        let pins = self.pins.clone();
        let snap = self.snapshot(name)?;
        let diff = pins.diff(&snap.pins);
        if !diff.is_empty() {
            return Err(incompatible(name, &diff));
        }
        self.state = snap.state();
        self.rec = None;
        self.selection = None;
        Ok(())
    }

    /// Whether `run(resume = true)` can continue the current state, and why not.
    pub fn can_resume(&self) -> (bool, Option<String>) {
        let now = SessionPins::new(&self.model, self.info);
        let diff = self.pins.diff(&now);
        if diff.is_empty() {
            (true, None)
        } else {
            (false, Some(format!("pin mismatch: {}", format_diff(&diff))))
        }
    }

    /// Summary of the session state as JSON.
    pub fn summary(&self) -> serde_json::Value {
        let (ok, reason) = self.can_resume();
        let cfg = &self.state.config;
        let preview: serde_json::Map<String, serde_json::Value> = self
            .info
            .config
            .iter()
            .zip(cfg)
            .take(3)
            .map(|(k, v)| (k.name.to_string(), json_f64(*v)))
            .collect();
        serde_json::json!({
            "t": self.state.t,
            "step": self.state.step,
            "dt": self.state.dt,
            "nominal_dt": self.state.nominal_dt,
            "time_shift": self.state.time_shift,
            "status": self.state.status.name(),
            "stepper": self.info.name,
            "can_resume": ok,
            "reason": reason,
            "pending_step": self.state.pending.is_some(),
            // The work counters of steppers that keep them (bdf, rk45), for benchmarks.
            "stepper_stats": crate::stepper::stats_json(self.info, &self.state.stepper_ws),
            "stepper_config": {
                "size": cfg.len(),
                "hash": config_hash(cfg),
                "preview": preview,
            },
        })
    }

    // ---------------------------------------------------------------- assign

    fn resolve_assignable(&self, name: &str) -> Option<Assignable> {
        self.model
            .state_index(name)
            .map(Assignable::State)
            .or_else(|| self.model.param_index(name).map(Assignable::Param))
    }

    fn unknown_names_error(&self, names: &[&str]) -> Error {
        let m = &self.model;
        let candidates = || {
            m.state_names
                .iter()
                .chain(&m.param_names)
                .map(String::as_str)
        };
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort();
        let parts: Vec<String> = sorted
            .iter()
            .map(|n| format!("'{n}'{}", suggestion_suffix(n, candidates())))
            .collect();
        Error::unknown(format!(
            "unknown state/param name(s): {}. Valid states: [{}], params: [{}]",
            parts.join(", "),
            m.state_names.join(", "),
            m.param_names.join(", ")
        ))
    }

    /// Sets states and parameters by name (states first, then params). All names are checked
    /// before anything changes. With `clear_history`, recorded results and segments are
    /// dropped (time, workspace and the recording selection are kept).
    ///
    /// Changing the state restarts the stepper's carried history: multistep methods start up
    /// again and an adaptive method drops a step it had taken past the output point, so the
    /// next run continues from the assigned values with a new step sequence.
    pub fn assign(&mut self, values: &[(&str, f64)], clear_history: bool) -> Result<()> {
        let mut resolved = Vec::with_capacity(values.len());
        let mut unknown = Vec::new();
        for (name, v) in values {
            match self.resolve_assignable(name) {
                Some(a) => resolved.push((a, *v, *name)),
                None => unknown.push(*name),
            }
        }
        if !unknown.is_empty() {
            return Err(self.unknown_names_error(&unknown));
        }
        let mut seen = std::collections::HashSet::with_capacity(resolved.len());
        if let Some((_, _, name)) = resolved.iter().find(|(a, _, _)| !seen.insert(*a)) {
            return Err(Error::duplicate(format!(
                "'{name}' is assigned more than once in one call; give each state or parameter \
                 once"
            )));
        }
        if let Some((_, v, name)) = resolved.iter().find(|(_, v, _)| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "value for '{name}' is {v}; states and parameters must be finite"
            )));
        }
        if !resolved.is_empty() {
            let mut st = self.state.clone();
            for (a, v, _) in &resolved {
                match a {
                    Assignable::State(i) => st.y[*i] = *v,
                    Assignable::Param(i) => st.params[*i] = *v,
                }
            }
            if let Some(p) = st.pending.take() {
                st.dt = p.h_next;
            }
            let mut s = stepper::create(self.info, self.model.n_states());
            s.load(&st.stepper_ws)?;
            s.restart();
            st.stepper_ws = s.save();
            self.state = st;
        }
        if clear_history {
            // Exactly as after reset: no results until the next recorded run.
            if let Some(old) = self.rec.take() {
                if old.capacity_bytes() <= SPARE_RECORDING_BYTES {
                    self.spare_rec = Some(old);
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- presets

    /// The bank's presets whose names match the glob `pattern` (`*`, `?`, `[...]`), in bank
    /// order (the model's first, then added/loaded ones).
    pub fn list_presets(&self, pattern: &str) -> Vec<&Preset> {
        self.presets
            .iter()
            .filter(|p| presets::glob_match(pattern, &p.name))
            .collect()
    }

    fn preset_names(&self) -> String {
        if self.presets.is_empty() {
            "(none)".to_string()
        } else {
            self.presets
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// One preset of the bank by name.
    pub fn preset(&self, name: &str) -> Result<&Preset> {
        self.presets.iter().find(|p| p.name == name).ok_or_else(|| {
            Error::unknown(format!(
                "unknown preset '{name}'{}; presets: {}",
                suggestion_suffix(name, self.presets.iter().map(|p| p.name.as_str())),
                self.preset_names()
            ))
        })
    }

    /// Checks a preset's names and values against the model (the rules of `assign`: known
    /// names with did-you-mean, finite values) and returns it with states and parameters in
    /// declaration order.
    fn checked_preset(&self, p: &Preset) -> Result<Preset> {
        presets::check_preset_name(&p.name)?;
        let m = &self.model;
        let mut params = Vec::new();
        let mut states = Vec::new();
        for (what, vals, names, out) in [
            ("parameter", &p.params, &m.param_names, &mut params),
            ("state", &p.states, &m.state_names, &mut states),
        ] {
            for (k, v) in vals {
                let Some(i) = names.iter().position(|n| n == k) else {
                    return Err(Error::unknown(format!(
                        "preset '{}': '{k}' is not a {what} of the model{}; {what}s: {}",
                        p.name,
                        suggestion_suffix(k, names.iter().map(String::as_str)),
                        list_or_none(names)
                    )));
                };
                if !v.is_finite() {
                    return Err(Error::invalid(format!(
                        "preset '{}': value for '{k}' is {v}; states and parameters must be finite",
                        p.name
                    )));
                }
                out.push((i, k.clone(), *v));
            }
            out.sort_by_key(|(i, _, _)| *i);
        }
        if params.is_empty() && states.is_empty() {
            return Err(Error::invalid(format!(
                "preset '{}' holds no values",
                p.name
            )));
        }
        let strip = |v: Vec<(usize, String, f64)>| v.into_iter().map(|(_, n, x)| (n, x)).collect();
        Ok(Preset {
            name: p.name.clone(),
            params: strip(params),
            states: strip(states),
        })
    }

    /// Adds preset `name` to the bank: the given `(name, value)` pairs (states or parameters,
    /// checked like `assign`), or with `None` every state and parameter of the current session.
    /// An existing name is an error unless `overwrite`.
    pub fn add_preset(
        &mut self,
        name: &str,
        values: Option<&[(&str, f64)]>,
        overwrite: bool,
    ) -> Result<()> {
        presets::check_preset_name(name)?;
        let raw = match values {
            None => Preset {
                name: name.to_string(),
                params: self
                    .model
                    .param_names
                    .iter()
                    .cloned()
                    .zip(self.state.params.iter().copied())
                    .collect(),
                states: self
                    .model
                    .state_names
                    .iter()
                    .cloned()
                    .zip(self.state.y.iter().copied())
                    .collect(),
            },
            Some(vals) => {
                let unknown: Vec<&str> = vals
                    .iter()
                    .filter(|(n, _)| self.resolve_assignable(n).is_none())
                    .map(|(n, _)| *n)
                    .collect();
                if !unknown.is_empty() {
                    return Err(self.unknown_names_error(&unknown));
                }
                let mut p = Preset {
                    name: name.to_string(),
                    params: Vec::new(),
                    states: Vec::new(),
                };
                for (n, v) in vals {
                    let slot = match self.resolve_assignable(n) {
                        Some(Assignable::State(_)) => &mut p.states,
                        _ => &mut p.params,
                    };
                    match slot.iter_mut().find(|(k, _)| k == n) {
                        Some(e) => e.1 = *v,
                        None => slot.push((n.to_string(), *v)),
                    }
                }
                p
            }
        };
        let p = self.checked_preset(&raw)?;
        match self.presets.iter().position(|q| q.name == name) {
            Some(_) if !overwrite => Err(Error::duplicate(format!(
                "preset '{name}' already exists; pass overwrite to replace it"
            ))),
            Some(i) => {
                self.presets[i] = p;
                Ok(())
            }
            None => {
                self.presets.push(p);
                Ok(())
            }
        }
    }

    /// Removes preset `name` from the bank.
    pub fn remove_preset(&mut self, name: &str) -> Result<()> {
        self.preset(name)?;
        self.presets.retain(|p| p.name != name);
        Ok(())
    }

    /// Loads the presets of a preset file whose names match the glob `pattern` into the bank
    /// and returns their names. Every selected preset is checked against the model first; a
    /// pattern without glob characters must name a preset of the file, a glob must match at
    /// least one. Names already in the bank follow `on_conflict`. Nothing changes on error.
    pub fn load_presets(
        &mut self,
        path: impl AsRef<Path>,
        pattern: &str,
        on_conflict: OnConflict,
    ) -> Result<Vec<String>> {
        let path = path.as_ref();
        let file = presets::read_preset_file(path)?;
        let chosen: Vec<&Preset> = file
            .iter()
            .filter(|p| presets::glob_match(pattern, &p.name))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = file.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::unknown(format!(
                "no preset in '{}' matches '{pattern}'{}; presets in the file: {}",
                path.display(),
                if presets::is_glob(pattern) {
                    String::new()
                } else {
                    suggestion_suffix(pattern, names.iter().copied())
                },
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
        let checked: Vec<Preset> = chosen
            .iter()
            .map(|p| {
                self.checked_preset(p)
                    .map_err(|e| e.context(format!("preset file '{}'", path.display())))
            })
            .collect::<Result<_>>()?;
        if on_conflict == OnConflict::Error {
            if let Some(p) = checked
                .iter()
                .find(|p| self.presets.iter().any(|q| q.name == p.name))
            {
                return Err(Error::duplicate(format!(
                    "preset '{}' from '{}' is already in the bank; use on_conflict = keep or \
                     replace",
                    p.name,
                    path.display()
                )));
            }
        }
        let mut loaded = Vec::new();
        for p in checked {
            match self.presets.iter().position(|q| q.name == p.name) {
                Some(_) if on_conflict == OnConflict::Keep => continue,
                Some(i) => self.presets[i] = p.clone(),
                None => self.presets.push(p.clone()),
            }
            loaded.push(p.name);
        }
        Ok(loaded)
    }

    /// Writes the bank's presets matching `pattern` to a preset file (atomically) and returns
    /// their names. `Append` keeps the presets already in the file (a name in both is an
    /// error); `Replace` keeps them too but replaces same-named ones in place; `Overwrite`
    /// writes a new file. The pattern must match at least one preset.
    pub fn save_presets(
        &self,
        path: impl AsRef<Path>,
        pattern: &str,
        mode: SaveMode,
    ) -> Result<Vec<String>> {
        let path = path.as_ref();
        let chosen: Vec<Preset> = self.list_presets(pattern).into_iter().cloned().collect();
        if chosen.is_empty() {
            return Err(Error::unknown(format!(
                "no preset matches '{pattern}'{}; presets: {}",
                if presets::is_glob(pattern) {
                    String::new()
                } else {
                    suggestion_suffix(pattern, self.presets.iter().map(|p| p.name.as_str()))
                },
                self.preset_names()
            )));
        }
        let mut all = Vec::new();
        if mode == SaveMode::Append && path.exists() {
            all = presets::read_preset_file(path)?;
            if let Some(p) = chosen.iter().find(|p| all.iter().any(|q| q.name == p.name)) {
                return Err(Error::duplicate(format!(
                    "preset '{}' is already in '{}'; save with mode overwrite to write a new \
                     file",
                    p.name,
                    path.display()
                )));
            }
        }
        if mode == SaveMode::Replace && path.exists() {
            all = presets::read_preset_file(path)?;
        }
        let names = chosen.iter().map(|p| p.name.clone()).collect();
        for p in chosen {
            match all.iter().position(|q| q.name == p.name) {
                Some(i) => all[i] = p,
                None => all.push(p),
            }
        }
        crate::persist::atomic::write_atomic(path, presets::format_presets(&all).as_bytes())?;
        Ok(names)
    }

    /// Applies preset `name` of the bank (its parameter values, then its state values) as
    /// [`assign`](Self::assign) would: atomically, restarting multistep history, keeping the
    /// recorded results.
    pub fn apply_preset(&mut self, name: &str) -> Result<()> {
        let preset = self.preset(name)?.clone();
        let values: Vec<(&str, f64)> = preset
            .params
            .iter()
            .chain(&preset.states)
            .map(|(n, v)| (n.as_str(), *v))
            .collect();
        self.assign(&values, false)
    }

    /// The bank as JSON: `[{name, params: {..}, states: {..}}]` for names matching `pattern`.
    pub fn presets_json(&self, pattern: &str) -> serde_json::Value {
        let obj = |v: &[(String, f64)]| -> serde_json::Map<String, serde_json::Value> {
            v.iter().map(|(k, x)| (k.clone(), json_f64(*x))).collect()
        };
        serde_json::Value::Array(
            self.list_presets(pattern)
                .into_iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name,
                        "params": obj(&p.params),
                        "states": obj(&p.states),
                    })
                })
                .collect(),
        )
    }

    // ---------------------------------------------------------------- config

    /// Sets persistent run defaults (`dt`, `max_steps`, `record`, `record_interval`) and
    /// stepper knobs (any other name). Every item is checked before anything changes; an
    /// unknown name is an error with a did-you-mean. `Unset` returns an item to its default.
    /// `dt` applies to fresh runs only (a resumed run keeps the session's step size), so
    /// changing defaults never breaks exact resume.
    pub fn config(&mut self, items: &[(&str, ConfigValue)]) -> Result<()> {
        let mut d = self.defaults.clone();
        let mut knobs: Vec<(&str, Option<f64>)> = Vec::new();
        let num = |k: &str, v: &ConfigValue| -> Result<Option<f64>> {
            match v {
                ConfigValue::Number(x) => Ok(Some(*x)),
                ConfigValue::Unset => Ok(None),
                ConfigValue::Bool(_) => Err(Error::invalid(format!(
                    "config '{k}' must be a number, not a boolean"
                ))),
            }
        };
        let count = |k: &str, v: &ConfigValue| -> Result<Option<u64>> {
            match num(k, v)? {
                None => Ok(None),
                Some(x) if x >= 1.0 && x.fract() == 0.0 && x <= 9.007_199_254_740_992e15 => {
                    Ok(Some(x as u64))
                }
                Some(x) => Err(Error::invalid(format!(
                    "config '{k}' must be a whole number >= 1, got {x}"
                ))),
            }
        };
        for (k, v) in items {
            match *k {
                "dt" => {
                    d.dt = num(k, v)?;
                    if let Some(dt) = d.dt {
                        if !(dt > 0.0 && dt.is_finite()) {
                            return Err(Error::invalid(format!(
                                "config 'dt' must be positive and finite, got {dt}"
                            )));
                        }
                    }
                }
                "max_steps" => d.max_steps = count(k, v)?,
                "record_interval" => d.record_interval = count(k, v)?,
                "record" => {
                    d.record = match v {
                        ConfigValue::Bool(b) => Some(*b),
                        ConfigValue::Unset => None,
                        ConfigValue::Number(_) => {
                            return Err(Error::invalid("config 'record' must be true or false"))
                        }
                    }
                }
                knob => {
                    if knob_index(self.info, knob).is_err() {
                        let cands = CONFIG_KEYS
                            .iter()
                            .copied()
                            .chain(self.info.config.iter().map(|k| k.name));
                        return Err(Error::unknown(format!(
                            "unknown config option '{knob}'{}; options: {}; stepper '{}' knobs: {}",
                            suggestion_suffix(knob, cands),
                            CONFIG_KEYS.join(", "),
                            self.info.name,
                            self.knob_list()
                        )));
                    }
                    knobs.push((knob, num(k, v)?));
                }
            }
        }
        let cfg = self.checked_stepper_config(&knobs)?;
        self.defaults = d;
        self.state.config = cfg;
        Ok(())
    }

    /// The persistent run defaults set by [`config`](Self::config).
    pub fn run_defaults(&self) -> &RunDefaults {
        &self.defaults
    }

    /// The effective defaults of the next run as JSON: for each of `dt`, `max_steps`,
    /// `record`, `record_interval` `{value, set}` (`set`: given by `config`, else the model's
    /// `[sim]` value or the session's step size), and `stepper_config` `{name: value}`.
    pub fn config_json(&self) -> serde_json::Value {
        let d = &self.defaults;
        let m = &self.model.sim;
        let knobs: serde_json::Map<String, serde_json::Value> = self
            .info
            .config
            .iter()
            .zip(&self.state.config)
            .map(|(k, v)| (k.name.to_string(), json_f64(*v)))
            .collect();
        serde_json::json!({
            "dt": {"value": json_f64(d.dt.unwrap_or(self.state.nominal_dt)), "set": d.dt.is_some()},
            "max_steps": {"value": d.max_steps.unwrap_or(m.max_steps), "set": d.max_steps.is_some()},
            "record": {"value": d.record.unwrap_or(m.record), "set": d.record.is_some()},
            "record_interval": {"value": d.record_interval.unwrap_or(1), "set": d.record_interval.is_some()},
            "stepper_config": knobs,
        })
    }

    fn knob_list(&self) -> String {
        if self.info.config.is_empty() {
            "(none)".into()
        } else {
            self.info
                .config
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The config vector with `items` applied (None = the model default), checked.
    fn checked_stepper_config(&self, items: &[(&str, Option<f64>)]) -> Result<Vec<f64>> {
        let defaults = self.model.sim.stepper_config(self.info);
        let mut cfg = self.state.config.clone();
        for (k, v) in items {
            let i = knob_index(self.info, k)?;
            match v {
                Some(x) if x.is_nan() => {
                    return Err(Error::invalid(format!("stepper knob '{k}' cannot be NaN")))
                }
                Some(x) => cfg[i] = *x,
                None => cfg[i] = defaults[i],
            }
        }
        Ok(cfg)
    }

    /// The session's stepper configuration (knob order), used by the next run, carried by
    /// snapshots and snapshot files.
    pub fn stepper_config(&self) -> &[f64] {
        &self.state.config
    }

    /// Sets stepper knobs persistently (`None` = back to the model default). Unknown knob
    /// names are errors (with did-you-mean) for every stepper; a stepper without knobs has
    /// none to set. Nothing changes on error.
    pub fn set_stepper_config(&mut self, items: &[(&str, Option<f64>)]) -> Result<()> {
        self.state.config = self.checked_stepper_config(items)?;
        Ok(())
    }

    /// Every knob of the stepper with its current value and the model default.
    pub fn stepper_knobs(&self) -> Vec<KnobState> {
        let defaults = self.model.sim.stepper_config(self.info);
        self.info
            .config
            .iter()
            .zip(&self.state.config)
            .zip(defaults)
            .map(|((k, v), d)| KnobState {
                name: k.name,
                value: *v,
                default: d,
                help: k.help,
            })
            .collect()
    }

    /// [`stepper_knobs`](Self::stepper_knobs) as JSON `[{name, value, default, help}]`.
    pub fn stepper_knobs_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.stepper_knobs()
                .into_iter()
                .map(|k| {
                    serde_json::json!({
                        "name": k.name,
                        "value": json_f64(k.value),
                        "default": json_f64(k.default),
                        "help": k.help,
                    })
                })
                .collect(),
        )
    }

    // ---------------------------------------------------------------- results

    /// The stitched recording of the current pass.
    pub fn results(&self) -> Result<&Recording> {
        self.rec.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::NoResults,
                "no results: call run() first (reset(), assign(clear_history) and importing a snapshot \
                 clear them)",
            )
        })
    }

    pub fn segments(&self) -> &[Segment] {
        self.rec.as_ref().map_or(&[], |r| &r.segments)
    }

    fn segment_index(&self, seg: SegmentRef<'_>) -> Result<usize> {
        let rec = self
            .rec
            .as_ref()
            .filter(|r| !r.segments.is_empty())
            .ok_or_else(|| Error::new(ErrorKind::NoResults, "no recorded segments"))?;
        match seg {
            SegmentRef::Index(i) if i < rec.segments.len() => Ok(i),
            SegmentRef::Index(i) => Err(Error::invalid(format!(
                "segment index {i} out of range: there are {} segments",
                rec.segments.len()
            ))),
            SegmentRef::Name(n) => rec.segment_index(n),
        }
    }

    /// Effective name of a segment (its tag or rename, else `run#<index>`).
    pub fn segment_name(&self, seg: SegmentRef<'_>) -> Result<String> {
        let i = self.segment_index(seg)?;
        Ok(self.results()?.segment_name(i))
    }

    /// Sample range of a segment, to slice any recorded series.
    pub fn segment_samples(&self, seg: SegmentRef<'_>) -> Result<std::ops::Range<usize>> {
        let i = self.segment_index(seg)?;
        let s = &self.results()?.segments[i];
        Ok(s.sample_start..s.sample_start + s.sample_len)
    }

    /// Renames a segment; the name is made unique with `-2`, `-3`, … if needed. Returns it.
    pub fn name_segment(&mut self, seg: SegmentRef<'_>, new_name: &str) -> Result<String> {
        if new_name.is_empty() {
            return Err(Error::invalid("segment name cannot be empty"));
        }
        let i = self.segment_index(seg)?;
        let rec = self
            .rec
            .as_mut()
            .ok_or_else(|| Error::internal("segments without a recording"))?;
        let unique = rec.unique_segment_name(new_name, Some(i));
        rec.rename_segment(i, unique.clone());
        Ok(unique)
    }

    pub fn name_last_segment(&mut self, new_name: &str) -> Result<String> {
        let n = self.segments().len();
        if n == 0 {
            return Err(Error::new(
                ErrorKind::NoResults,
                "no recorded segments to rename",
            ));
        }
        self.name_segment(SegmentRef::Index(n - 1), new_name)
    }
}

/// The stepper a session of `model` would use: `name` (or alias), or the model's default;
/// refused when its kind (ODE or map) differs from the model's.
pub fn resolve_stepper(model: &Model, name: Option<&str>) -> Result<&'static StepperInfo> {
    let name = name.unwrap_or(&model.sim.stepper);
    let info = stepper::lookup(name)?;
    if info.kind != model.kind {
        return Err(Error::invalid(format!(
            "stepper '{}' is for {} models, but '{}' is a {} model",
            info.name,
            info.kind.as_str(),
            if model.name.is_empty() {
                "this model"
            } else {
                &model.name
            },
            model.kind.as_str()
        )));
    }
    Ok(info)
}

/// Differing pins as (pin name, this session's value, the snapshot's value).
pub type PinDiff = Vec<(&'static str, String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Assignable {
    State(usize),
    Param(usize),
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

pub(crate) fn format_diff(diff: &[(&'static str, String, String)]) -> String {
    diff.iter()
        .map(|(n, ours, theirs)| format!("{n} is '{theirs}' in the snapshot, '{ours}' here"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn incompatible(name: &str, diff: &[(&'static str, String, String)]) -> Error {
    Error::new(
        ErrorKind::Incompatible,
        format!("incompatible snapshot '{name}': {}", format_diff(diff)),
    )
}

/// JSON number, or a string for non-finite values (JSON has no infinity).
pub(crate) fn json_f64(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::json!(v.to_string())
    }
}

/// The run options that the session's defaults and the model fill in.
struct RunSettings {
    /// The fixed step asked for (a resumed run keeps its step unless given one).
    dt: Option<f64>,
    max_steps: u64,
    record: bool,
    record_interval: u64,
}

impl RunSettings {
    fn of(opts: &RunOptions, d: &RunDefaults, model: &Model) -> Self {
        RunSettings {
            dt: if opts.resume {
                opts.dt
            } else {
                opts.dt.or(d.dt)
            },
            max_steps: opts
                .max_steps
                .or(d.max_steps)
                .unwrap_or(model.sim.max_steps),
            record: opts.record.or(d.record).unwrap_or(model.sim.record),
            record_interval: opts.record_interval.or(d.record_interval).unwrap_or(1),
        }
    }
}

/// The run's stepper knobs (`opts.config`) set in `st`, checked by name, value and together.
fn apply_knobs(info: &StepperInfo, st: &mut SessionState, opts: &RunOptions) -> Result<()> {
    for (k, v) in &opts.config {
        let i = knob_index(info, k)?;
        if v.is_nan() {
            return Err(Error::invalid(format!("stepper knob '{k}' cannot be NaN")));
        }
        st.config[i] = *v;
    }
    if !opts.config.is_empty() {
        stepper::validate_config(info, &st.config).map_err(|e| e.context("run config"))?;
    }
    Ok(())
}

/// Runs the transient `tr` (unrecorded) and shifts the session's clock past it.
fn warm_up(
    runner: &mut Runner<'_>,
    st: &mut SessionState,
    model: &Model,
    info: &StepperInfo,
    tr: f64,
    max_steps: u64,
    opts: &RunOptions,
) -> Result<()> {
    let t0 = st.t;
    let horizon = match model.kind {
        ModelKind::Map => Horizon::Steps {
            end_step: tr.floor() as u64,
            clip_to: None,
        },
        ModelKind::Ode if info.adaptive => Horizon::Time(t0 + tr),
        ModelKind::Ode => {
            let (end_step, clip_to) = fixed_horizon(st, t0 + tr)?;
            Horizon::Steps { end_step, clip_to }
        }
    };
    let plan = RunPlan {
        horizon,
        max_steps,
        record_interval: None,
        record_start: false,
        fused: !opts.general_engine,
    };
    runner
        .run(st, &plan, &mut Recording::default())
        .map_err(|e| e.context("transient warm-up"))?;
    st.time_shift = st.t - t0;
    st.step_shift = st.step;
    Ok(())
}

/// Where an ODE run ends: at T (shifted by a warm-up), which a resume must move past.
fn ode_horizon(
    st: &SessionState,
    opts: &RunOptions,
    info: &StepperInfo,
    t0: f64,
    t_end_user: f64,
) -> Result<Horizon> {
    let t_abs = t_end_user + st.time_shift;
    if opts.resume && t_abs <= st.t {
        return Err(Error::invalid(format!(
            "resume target T = {t_end_user} must exceed the current time {}; a \
             resumed run only moves forward",
            st.t - st.time_shift
        )));
    }
    if !opts.resume && t_end_user < t0 {
        return Err(Error::invalid(format!(
            "T = {t_end_user} is before t0 = {t0}"
        )));
    }
    Ok(if info.adaptive {
        Horizon::Time(t_abs)
    } else {
        let (end_step, clip_to) = fixed_horizon(st, t_abs)?;
        Horizon::Steps { end_step, clip_to }
    })
}

/// Where a map run ends: after N iterations (or those up to T) since the recorded start.
fn map_horizon(st: &SessionState, opts: &RunOptions, max_steps: u64) -> Result<Horizon> {
    let n = match (opts.n, opts.t_end) {
        (Some(n), _) => n,
        (None, Some(t)) => {
            let k = ((t - st.grid_t0) / st.nominal_dt).round_ties_even();
            if k < 0.0 {
                return Err(Error::invalid(format!(
                    "T = {t} is before the start time {}",
                    st.grid_t0
                )));
            }
            k as u64
        }
        (None, None) => max_steps,
    };
    let end_step = n.saturating_add(st.step_shift);
    if opts.resume && end_step <= st.step {
        return Err(Error::invalid(format!(
            "the requested horizon (N = {n} iterations since the recorded start) is \
             already reached: the session is at iteration {}; increase N/T or \
             reset() to start over",
            st.step - st.step_shift
        )));
    }
    if !opts.resume && n == 0 {
        return Err(Error::invalid(
            "N = 0: a map run needs at least one iteration",
        ));
    }
    Ok(Horizon::Steps {
        end_step,
        clip_to: None,
    })
}
