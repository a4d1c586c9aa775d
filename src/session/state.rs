//! `SessionState`: everything needed to continue a simulation exactly where it stopped.

use crate::error::{Error, Result};
use crate::model::{Model, ModelKind};
use crate::stepper::workspace::{check_layout, layout_signature, load_f64, load_i64};
use crate::stepper::{self, StepperInfo, Workspace, WsArray, WsData};

/// Outcome of the last successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No run yet.
    Ready,
    /// The horizon was reached.
    Done,
    /// The model's stop condition ended the run early.
    EarlyExit,
    /// A progress or observer callback stopped the run (a resume continues it).
    UserBreak,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ready => "READY",
            Status::Done => "DONE",
            Status::EarlyExit => "EARLY_EXIT",
            Status::UserBreak => "USER_BREAK",
        }
    }
    pub fn code(self) -> i64 {
        match self {
            Status::Ready => 0,
            Status::Done => 9,
            Status::EarlyExit => 7,
            Status::UserBreak => 12,
        }
    }
    pub fn from_code(code: i64) -> Option<Status> {
        match code {
            0 => Some(Status::Ready),
            9 => Some(Status::Done),
            7 => Some(Status::EarlyExit),
            12 => Some(Status::UserBreak),
            _ => None,
        }
    }
}

/// What a snapshot must match to be restored into a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPins {
    /// SHA-256 over the canonical model serialisation.
    pub spec_hash: String,
    pub stepper_name: String,
    /// Digest of the workspace layout (names, dtypes, shapes).
    pub workspace_sig: String,
    pub dtype: String,
    pub dynlib_version: String,
}

impl SessionPins {
    pub fn new(model: &Model, info: &'static StepperInfo) -> Self {
        Self::with_template(model, info, &stepper::create(info, model.n_states()).save())
    }

    /// [`new`](Self::new) given the workspace of a fresh stepper.
    pub fn with_template(
        model: &Model,
        info: &'static StepperInfo,
        stepper_ws: &[WsArray],
    ) -> Self {
        let runtime = SessionState::bootstrap_runtime_layout(model);
        SessionPins {
            spec_hash: model.spec_hash.clone(),
            stepper_name: info.name.to_string(),
            workspace_sig: layout_signature(&[("stepper", stepper_ws), ("runtime", &runtime)]),
            dtype: "float64".to_string(),
            dynlib_version: crate::VERSION.to_string(),
        }
    }

    /// Each differing pin as (name, ours, theirs), in a fixed order.
    pub fn diff(&self, theirs: &SessionPins) -> Vec<(&'static str, String, String)> {
        let pairs = [
            ("spec_hash", &self.spec_hash, &theirs.spec_hash),
            ("stepper_name", &self.stepper_name, &theirs.stepper_name),
            ("workspace_sig", &self.workspace_sig, &theirs.workspace_sig),
            ("dtype", &self.dtype, &theirs.dtype),
            (
                "dynlib_version",
                &self.dynlib_version,
                &theirs.dynlib_version,
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(n, a, b)| (n, a.clone(), b.clone()))
            .collect()
    }
}

/// An accepted adaptive step that ends beyond the last output point. The session's `t`/`y`
/// are the (interpolated) output point; a resume commits this step first, exactly as the
/// uninterrupted run did.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingStep {
    pub t_new: f64,
    pub y_new: Vec<f64>,
    pub h_next: f64,
}

/// The live state of a session. Cloning it is a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    /// Current (absolute) time: the output point.
    pub t: f64,
    pub y: Vec<f64>,
    pub params: Vec<f64>,
    /// Step size of the next step: the nominal dt for fixed-step methods, the controller's
    /// proposal for adaptive ones.
    pub dt: f64,
    /// Committed steps since the last fresh run (warm-up included).
    pub step: u64,
    /// Fixed-step grid origin: step k is at `grid_t0 + (k - grid_k0) * nominal_dt`.
    pub grid_t0: f64,
    pub grid_k0: u64,
    pub nominal_dt: f64,
    /// Warm-up offsets: recorded time = t − time_shift, recorded step = step − step_shift.
    pub time_shift: f64,
    pub step_shift: u64,
    /// The stepper's carried arrays.
    pub stepper_ws: Workspace,
    /// Lag rings (all lagged states, concatenated) and their head indices (per state).
    pub lag_ring: Vec<f64>,
    pub lag_head: Vec<i64>,
    pub pending: Option<PendingStep>,
    /// Stepper configuration, in the stepper's knob order.
    pub config: Vec<f64>,
    pub status: Status,
}

/// A session state with its number vectors (state, parameters, lag rings and heads,
/// configuration) in one allocation: a snapshot's copy, so that taking one allocates once,
/// not once per vector. Unpacking gives back the same bits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedState {
    t: f64,
    dt: f64,
    step: u64,
    grid_t0: f64,
    grid_k0: u64,
    nominal_dt: f64,
    time_shift: f64,
    step_shift: u64,
    stepper_ws: Workspace,
    pending: Option<Box<PendingStep>>,
    status: Status,
    /// `y`, `params`, `lag_ring` and `config` (f64 bits), then `lag_head` (i64 bits).
    words: Box<[u64]>,
    /// Lengths of `y`, `params`, `lag_ring` and `config` in `words`; `lag_head` is the rest.
    lens: [usize; 4],
}

impl PackedState {
    /// Every field is named here and in [`unpack`](Self::unpack), so a new field of the
    /// state cannot be forgotten.
    pub(crate) fn pack(state: &SessionState) -> Self {
        let SessionState {
            t,
            y,
            params,
            dt,
            step,
            grid_t0,
            grid_k0,
            nominal_dt,
            time_shift,
            step_shift,
            stepper_ws,
            lag_ring,
            lag_head,
            pending,
            config,
            status,
        } = state;
        let floats = [y, params, lag_ring, config];
        let mut words =
            Vec::with_capacity(floats.iter().map(|v| v.len()).sum::<usize>() + lag_head.len());
        for v in floats {
            words.extend(v.iter().map(|x| x.to_bits()));
        }
        words.extend(lag_head.iter().map(|&h| h as u64));
        PackedState {
            t: *t,
            dt: *dt,
            step: *step,
            grid_t0: *grid_t0,
            grid_k0: *grid_k0,
            nominal_dt: *nominal_dt,
            time_shift: *time_shift,
            step_shift: *step_shift,
            stepper_ws: stepper_ws.clone(),
            pending: pending.clone().map(Box::new),
            status: *status,
            words: words.into_boxed_slice(),
            lens: floats.map(|v| v.len()),
        }
    }

    pub(crate) fn unpack(&self) -> SessionState {
        let mut rest = &self.words[..];
        let mut floats = self.lens.map(|n| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head.iter()
                .map(|&w| f64::from_bits(w))
                .collect::<Vec<f64>>()
        });
        let lag_head = rest.iter().map(|&w| w as i64).collect();
        let take = |v: &mut Vec<f64>| std::mem::take(v);
        SessionState {
            t: self.t,
            y: take(&mut floats[0]),
            params: take(&mut floats[1]),
            dt: self.dt,
            step: self.step,
            grid_t0: self.grid_t0,
            grid_k0: self.grid_k0,
            nominal_dt: self.nominal_dt,
            time_shift: self.time_shift,
            step_shift: self.step_shift,
            stepper_ws: self.stepper_ws.clone(),
            lag_ring: take(&mut floats[2]),
            lag_head,
            pending: self.pending.as_deref().cloned(),
            config: take(&mut floats[3]),
            status: self.status,
        }
    }

    /// The state's time.
    pub(crate) fn t(&self) -> f64 {
        self.t
    }

    /// The state's step count.
    pub(crate) fn step(&self) -> u64 {
        self.step
    }
}

impl SessionState {
    /// The state of a new session: model defaults at `[sim].t0`.
    pub fn bootstrap(model: &Model, info: &'static StepperInfo) -> Self {
        let mut s = SessionState {
            t: model.sim.t0,
            y: model.state_init.clone(),
            params: model.param_init.clone(),
            dt: model.sim.dt,
            step: 0,
            grid_t0: model.sim.t0,
            grid_k0: 0,
            nominal_dt: model.sim.dt,
            time_shift: 0.0,
            step_shift: 0,
            stepper_ws: stepper::create(info, model.n_states()).save(),
            lag_ring: vec![0.0; model.lag_total],
            lag_head: vec![0; model.n_states()],
            pending: None,
            config: model.sim.stepper_config(info),
            status: Status::Ready,
        };
        s.init_lag(model);
        s
    }

    /// Makes `self` equal to `src` in `self`'s own buffers: a clone that allocates only
    /// where a vector of `src` is longer (a run's working copy, see `RunSpares`). Every field
    /// is named, so a new field cannot be forgotten here.
    pub fn copy_from(&mut self, src: &SessionState) {
        let SessionState {
            t,
            y,
            params,
            dt,
            step,
            grid_t0,
            grid_k0,
            nominal_dt,
            time_shift,
            step_shift,
            stepper_ws,
            lag_ring,
            lag_head,
            pending,
            config,
            status,
        } = src;
        self.t = *t;
        self.y.clone_from(y);
        self.params.clone_from(params);
        self.dt = *dt;
        self.step = *step;
        self.grid_t0 = *grid_t0;
        self.grid_k0 = *grid_k0;
        self.nominal_dt = *nominal_dt;
        self.time_shift = *time_shift;
        self.step_shift = *step_shift;
        self.stepper_ws.clone_from(stepper_ws);
        self.lag_ring.clone_from(lag_ring);
        self.lag_head.clone_from(lag_head);
        self.pending.clone_from(pending);
        self.config.clone_from(config);
        self.status = *status;
    }

    /// Fills every lag ring with the current state (no history yet).
    pub fn init_lag(&mut self, model: &Model) {
        for (i, slot) in model.lag_layout.iter().enumerate() {
            if slot.len > 0 {
                self.lag_ring[slot.offset..slot.offset + slot.len].fill(self.y[i]);
                self.lag_head[i] = slot.len as i64 - 1;
            } else {
                self.lag_head[i] = 0;
            }
        }
    }

    /// Time of fixed-step grid point `k`.
    #[inline]
    pub fn grid_time(&self, k: u64) -> f64 {
        self.grid_t0 + (k - self.grid_k0) as f64 * self.nominal_dt
    }

    fn bootstrap_runtime_layout(model: &Model) -> Workspace {
        let mut s = SessionState {
            t: 0.0,
            y: vec![0.0; model.n_states()],
            params: Vec::new(),
            dt: 0.0,
            step: 0,
            grid_t0: 0.0,
            grid_k0: 0,
            nominal_dt: 0.0,
            time_shift: 0.0,
            step_shift: 0,
            stepper_ws: Vec::new(),
            lag_ring: vec![0.0; model.lag_total],
            lag_head: vec![0; model.n_states()],
            pending: None,
            config: Vec::new(),
            status: Status::Ready,
        };
        s.pending = None;
        s.runtime_ws()
    }

    /// The runtime bucket as named arrays. The clock and counters are stored as raw f64/i64
    /// here so that persisted state round-trips bit-exactly (meta.json only shows them).
    pub fn runtime_ws(&self) -> Workspace {
        let n = self.y.len();
        let (flag, t_new, h_next, y_new) = match &self.pending {
            Some(p) => (1.0, p.t_new, p.h_next, p.y_new.clone()),
            None => (0.0, 0.0, 0.0, vec![0.0; n]),
        };
        vec![
            WsArray::f64(
                "clock",
                vec![
                    self.t,
                    self.dt,
                    self.grid_t0,
                    self.nominal_dt,
                    self.time_shift,
                ],
            ),
            WsArray::i64(
                "counters",
                vec![
                    self.step as i64,
                    self.grid_k0 as i64,
                    self.step_shift as i64,
                    self.status.code(),
                ],
            ),
            WsArray::f64("lag_ring", self.lag_ring.clone()),
            WsArray::i64("lag_head", self.lag_head.clone()),
            WsArray::f64("pending", vec![flag, t_new, h_next]),
            WsArray::f64("pending_y", y_new),
        ]
    }

    /// dtype and shape of each array of [`runtime_ws`](Self::runtime_ws) for a session of
    /// `model`, without building them (their sizes are the state's and the lag rings').
    pub fn runtime_layout(model: &Model) -> [(&'static str, &'static str, Vec<usize>); 6] {
        let n = model.n_states();
        [
            ("clock", "float64", vec![5]),
            ("counters", "int64", vec![4]),
            ("lag_ring", "float64", vec![model.lag_total]),
            ("lag_head", "int64", vec![n]),
            ("pending", "float64", vec![3]),
            ("pending_y", "float64", vec![n]),
        ]
    }

    /// Restores the runtime bucket written by [`runtime_ws`](Self::runtime_ws).
    pub fn load_runtime_ws(&mut self, ws: &[WsArray], model: &Model) -> Result<()> {
        self.take_runtime_ws(ws.to_vec(), model)
    }

    /// [`load_runtime_ws`](Self::load_runtime_ws) taking the arrays, so that the state-sized
    /// ones (lag rings and heads, the pending step's state) are moved in, not copied. Nothing
    /// changes on failure.
    pub fn take_runtime_ws(&mut self, ws: Workspace, model: &Model) -> Result<()> {
        self.take_runtime_ws_zeroing(ws, model, false)
    }

    /// [`take_runtime_ws`](Self::take_runtime_ws) where `pending_y_is_zero` says that
    /// `pending_y` is all zeros and left out of `ws` (a v2 file lists it so): it is made only
    /// for a pending step, which alone uses it.
    pub(crate) fn take_runtime_ws_zeroing(
        &mut self,
        ws: Workspace,
        model: &Model,
        pending_y_is_zero: bool,
    ) -> Result<()> {
        let absent = if pending_y_is_zero {
            &[PENDING_Y][..]
        } else {
            &[]
        };
        check_runtime_layout(&ws, model, absent)?;
        let mut clock = [0.0; 5];
        load_f64(&ws, "clock", &mut clock)?;
        let mut counters = [0i64; 4];
        load_i64(&ws, "counters", &mut counters)?;
        if counters[..3].iter().any(|c| *c < 0) {
            return Err(Error::corrupt(
                "workspace 'runtime/counters' holds a negative count",
            ));
        }
        let status = Status::from_code(counters[3]).ok_or_else(|| {
            Error::corrupt(format!(
                "unknown status code {} in the workspace",
                counters[3]
            ))
        })?;
        if clock.iter().any(|v| v.is_nan()) {
            return Err(Error::corrupt("workspace 'runtime/clock' holds NaN"));
        }
        if !(clock[3] > 0.0 && clock[3].is_finite()) {
            return Err(Error::corrupt(format!(
                "nominal dt in the workspace is {}, it must be positive",
                clock[3]
            )));
        }
        let mut ws = ws;
        let mut take = |name: &str| {
            let i = ws
                .iter()
                .position(|a| a.name == name)
                .expect("layout checked");
            ws.swap_remove(i).data
        };
        let (WsData::F64(lag_ring), WsData::I64(lag_head)) = (take("lag_ring"), take("lag_head"))
        else {
            unreachable!("dtypes checked by the layout");
        };
        let y_new = if pending_y_is_zero {
            None
        } else {
            let WsData::F64(y_new) = take(PENDING_Y) else {
                unreachable!("dtypes checked by the layout");
            };
            Some(y_new)
        };
        if model.lag_total > 0 {
            for (i, slot) in model.lag_layout.iter().enumerate() {
                let h = lag_head[i];
                if slot.len > 0 && (h < 0 || h as usize >= slot.len) {
                    return Err(Error::corrupt(format!(
                        "lag head of state '{}' is {h}, outside its ring of {}",
                        model.state_names[i], slot.len
                    )));
                }
            }
        }
        let mut pending = [0.0; 3];
        load_f64(&ws, "pending", &mut pending)?;
        let grid_k0 = counters[1] as u64;
        let step = counters[0] as u64;
        if grid_k0 > step || (counters[2] as u64) > step {
            return Err(Error::corrupt(
                "workspace counters are inconsistent (grid origin or warm-up after the current step)",
            ));
        }
        if pending[0] != 0.0 && pending[0] != 1.0 {
            return Err(Error::corrupt(format!(
                "workspace 'runtime/pending' has flag {}; it must be 0 (none) or 1",
                pending[0]
            )));
        }
        if let Some(i) = lag_ring.iter().position(|v| !v.is_finite()) {
            return Err(Error::corrupt(format!(
                "workspace 'runtime/lag_ring' holds {} at index {i}; lagged values must be finite",
                lag_ring[i]
            )));
        }
        self.t = clock[0];
        self.dt = clock[1];
        self.grid_t0 = clock[2];
        self.nominal_dt = clock[3];
        self.time_shift = clock[4];
        self.step = step;
        self.grid_k0 = grid_k0;
        self.step_shift = counters[2] as u64;
        self.status = status;
        self.lag_ring = lag_ring;
        self.lag_head = lag_head;
        self.pending = if pending[0] != 0.0 {
            Some(PendingStep {
                t_new: pending[1],
                h_next: pending[2],
                y_new: y_new.unwrap_or_else(|| vec![0.0; model.n_states()]),
            })
        } else {
            None
        };
        Ok(())
    }

    /// Checks the clock and counters of an imported state for what a resume relies on: every
    /// time finite, step sizes positive normal numbers, counters consistent with each other
    /// and, for fixed-step methods and maps, the current time on the step grid, a grid that
    /// advances and a warm-up offset the warm-up steps can cover. A crafted file must not be
    /// able to make the next run loop on a grid that never reaches its horizon.
    pub fn validate_clock(&self, info: &'static StepperInfo) -> Result<()> {
        let bad = |msg: String| Err(Error::corrupt(format!("workspace 'runtime/clock': {msg}")));
        for (name, v) in [
            ("t", self.t),
            ("dt", self.dt),
            ("grid_t0", self.grid_t0),
            ("nominal_dt", self.nominal_dt),
            ("time_shift", self.time_shift),
        ] {
            if !v.is_finite() {
                return bad(format!("{name} is {v:?}; it must be finite"));
            }
        }
        for (name, v) in [("dt", self.dt), ("nominal_dt", self.nominal_dt)] {
            if !(v > 0.0 && v.is_normal()) {
                return bad(format!(
                    "{name} is {v:?}; a step size must be a positive normal number"
                ));
            }
        }
        if !(self.t - self.time_shift).is_finite() {
            return bad(format!(
                "the recorded time t - time_shift = {:?} - {:?} is not finite",
                self.t, self.time_shift
            ));
        }
        if self.time_shift < 0.0 {
            return bad(format!(
                "time_shift is {:?}; a warm-up only moves time forward",
                self.time_shift
            ));
        }
        if self.grid_k0 > self.step || self.step_shift > self.step {
            return Err(Error::corrupt(
                "workspace counters are inconsistent (grid origin or warm-up after the current step)",
            ));
        }
        if info.adaptive {
            return Ok(());
        }
        // Fixed-step methods and maps: step k is at grid_t0 + (k - grid_k0) * nominal_dt.
        let scale = self.t.abs().max(self.grid_t0.abs()).max(1.0);
        let tol = 8.0 * f64::EPSILON * scale;
        let on_grid = self.grid_time(self.step);
        // Every field is finite here, so neither side is NaN.
        if (on_grid - self.t).abs() > tol {
            return bad(format!(
                "t = {:?} is not on the step grid (step {} is at {on_grid:?})",
                self.t, self.step
            ));
        }
        if self.grid_time(self.step + 1) <= self.t {
            return bad(format!(
                "nominal_dt = {:?} does not advance time from t = {:?}",
                self.nominal_dt, self.t
            ));
        }
        // The warm-up took step_shift steps of at most nominal_dt each.
        let reach = self.step_shift as f64 * self.nominal_dt;
        if self.time_shift > reach + 8.0 * f64::EPSILON * reach.max(scale) {
            return bad(format!(
                "time_shift = {:?} exceeds what {} warm-up steps of {:?} can cover",
                self.time_shift, self.step_shift, self.nominal_dt
            ));
        }
        Ok(())
    }

    /// Bitwise equality of everything, for exactness checks.
    pub fn bits_eq(&self, other: &SessionState) -> bool {
        fn f(a: &[f64], b: &[f64]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        }
        let ws_eq = |a: &Workspace, b: &Workspace| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bits_eq(y))
        };
        f(&self.y, &other.y)
            && f(&self.params, &other.params)
            && f(&self.config, &other.config)
            && ws_eq(&self.stepper_ws, &other.stepper_ws)
            && ws_eq(&self.runtime_ws(), &other.runtime_ws())
    }

    /// Checks that a state can belong to a session of `model` with stepper `info`.
    pub fn validate_shape(&self, model: &Model, info: &'static StepperInfo) -> Result<()> {
        let template = stepper::create(info, model.n_states()).save();
        self.validate_shape_against(model, info, &template)
    }

    /// [`validate_shape`](Self::validate_shape) with the workspace of a fresh stepper
    /// (`stepper_template`) at hand.
    pub fn validate_shape_against(
        &self,
        model: &Model,
        info: &'static StepperInfo,
        stepper_template: &[WsArray],
    ) -> Result<()> {
        if self.y.len() != model.n_states() {
            return Err(Error::corrupt(format!(
                "state vector has {} entries, the model has {}",
                self.y.len(),
                model.n_states()
            )));
        }
        if self.params.len() != model.n_params() {
            return Err(Error::corrupt(format!(
                "parameter vector has {} entries, the model has {}",
                self.params.len(),
                model.n_params()
            )));
        }
        if self.config.len() != info.config.len() {
            return Err(Error::corrupt(format!(
                "stepper config has {} values, stepper '{}' has {} knobs",
                self.config.len(),
                info.name,
                info.config.len()
            )));
        }
        check_layout(&self.stepper_ws, stepper_template, "stepper")?;
        if model.kind == ModelKind::Map && self.pending.is_some() {
            return Err(Error::corrupt("a map session cannot have a pending step"));
        }
        Ok(())
    }
}

/// Checks that `ws` has exactly the arrays of [`SessionState::runtime_layout`] (the message of
/// [`check_layout`]'s, without building a template of state-sized arrays).
/// The runtime array of the pending step's state (see `take_runtime_ws_zeroing`).
const PENDING_Y: &str = "pending_y";

/// Checks that `ws` holds the runtime layout's arrays, each once, except those of `absent`.
fn check_runtime_layout(ws: &[WsArray], model: &Model, absent: &[&str]) -> Result<()> {
    let layout: Vec<_> = SessionState::runtime_layout(model)
        .into_iter()
        .filter(|(name, ..)| !absent.contains(name))
        .collect();
    for (name, dtype, shape) in &layout {
        let a = ws.iter().find(|a| a.name == *name).ok_or_else(|| {
            Error::corrupt(format!("workspace array 'runtime/{name}' is missing"))
        })?;
        if a.dtype() != *dtype || a.shape != *shape {
            return Err(Error::corrupt(format!(
                "workspace array 'runtime/{name}' is {} {:?}, expected {dtype} {shape:?}",
                a.dtype(),
                a.shape,
            )));
        }
    }
    if let Some(extra) = ws
        .iter()
        .find(|a| !layout.iter().any(|(name, ..)| *name == a.name))
    {
        return Err(Error::corrupt(format!(
            "workspace array 'runtime/{}' is not part of this stepper's workspace",
            extra.name
        )));
    }
    // Each name once (a duplicate would pass the checks above).
    if ws.len() != layout.len() {
        return Err(Error::corrupt(
            "workspace bucket 'runtime' lists an array more than once",
        ));
    }
    Ok(())
}

/// Digest of a stepper configuration: first 10 hex digits of SHA-256 over the raw
/// little-endian bytes, or "empty".
pub fn config_hash(cfg: &[f64]) -> String {
    use sha2::{Digest, Sha256};
    if cfg.is_empty() {
        return "empty".into();
    }
    let mut h = Sha256::new();
    for v in cfg {
        h.update(v.to_le_bytes());
    }
    h.finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Helper for tests and persistence: the f64 payload of a workspace array.
pub fn ws_f64(a: &WsArray) -> Option<&[f64]> {
    match &a.data {
        WsData::F64(v) => Some(v),
        WsData::I64(_) => None,
    }
}
