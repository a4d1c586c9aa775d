//! Dormand–Prince 5(4): adaptive explicit Runge–Kutta with a 4th-order continuous extension.
//!
//! The step-size controller is the classic one (safety · err^(-1/5), clamped), or with the
//! knob `beta` > 0 Hairer's DOPRI5 PI controller, which also weighs the previous accepted
//! step's error (kept in the workspace, as is a count of rejected attempts). The dense output
//! (Hairer's DOPRI5 interpolant) lets a run end exactly at its horizon without shortening the
//! last step, so the accepted step sequence never depends on where a run was split.

use super::erk::{Stages, Tableau};
use super::workspace::{check_layout, load_f64, load_i64};
use super::{
    knob, step_failed, Knob, LegacyLayout, Rhs, StepOutcome, Stepper, StepperInfo, WsArray,
};
use crate::error::{Error, Result};
use crate::method::ModelKind;
use crate::method::{
    CarrySlots, Controller, EmbeddedPair, History, StepForm, Verdict, PREV_ERR_FLOOR,
};

/// Dormand–Prince 5(4) as data, shared with the fused loop.
pub static PAIR: EmbeddedPair = EmbeddedPair {
    tab: Tableau {
        c: TABLEAU.c,
        a: TABLEAU.a,
        b: TABLEAU.b,
    },
    err: &ERR,
    dense: &D,
};

/// `b - b̂` (the error estimate's weights).
const ERR: [f64; 7] = [
    B[0] - B_STAR[0],
    B[1] - B_STAR[1],
    B[2] - B_STAR[2],
    B[3] - B_STAR[3],
    B[4] - B_STAR[4],
    B[5] - B_STAR[5],
    B[6] - B_STAR[6],
];

/// The 5th-order weights (the last row of `a`).
const B: [f64; 7] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
    0.0,
];

pub static TABLEAU: Tableau = Tableau {
    c: &[0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[],
        &[1.0 / 5.0],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ],
    b: &B,
};

/// Embedded 4th-order weights.
const B_STAR: [f64; 7] = [
    5179.0 / 57600.0,
    0.0,
    7571.0 / 16695.0,
    393.0 / 640.0,
    -92097.0 / 339200.0,
    187.0 / 2100.0,
    1.0 / 40.0,
];

/// Dense-output weights (Hairer, DOPRI5 `contd5`).
const D: [f64; 7] = [
    -12715105075.0 / 11282082432.0,
    0.0,
    87487479700.0 / 32700410799.0,
    -10690763975.0 / 1880347072.0,
    701980252875.0 / 199316789632.0,
    -1453857185.0 / 822651844.0,
    69997945.0 / 29380423.0,
];

/// The step controller's knobs, also used (in the reference's order, with the Newton knobs)
/// by the adaptive implicit steppers.
pub const CONTROLLER_KNOBS: [Knob; 8] = [
    Knob {
        name: "atol",
        default: 1e-6,
        help: "absolute tolerance",
    },
    Knob {
        name: "rtol",
        default: 1e-3,
        help: "relative tolerance",
    },
    Knob {
        name: "safety",
        default: 0.9,
        help: "safety factor of the step controller",
    },
    Knob {
        name: "min_factor",
        default: 0.2,
        help: "smallest step shrink factor",
    },
    Knob {
        name: "max_factor",
        default: 5.0,
        help: "largest step growth factor",
    },
    Knob {
        name: "max_tries",
        default: 10.0,
        help: "attempts per step before failing",
    },
    Knob {
        name: "min_step",
        default: 1e-12,
        help: "smallest step before failing",
    },
    Knob {
        name: "dt_max",
        default: f64::INFINITY,
        help: "largest step",
    },
];

/// rk45's knobs: the step controller's, then the PI gain.
pub const KNOBS: [Knob; 9] = [
    CONTROLLER_KNOBS[0],
    CONTROLLER_KNOBS[1],
    CONTROLLER_KNOBS[2],
    CONTROLLER_KNOBS[3],
    CONTROLLER_KNOBS[4],
    CONTROLLER_KNOBS[5],
    CONTROLLER_KNOBS[6],
    CONTROLLER_KNOBS[7],
    Knob {
        name: "beta",
        default: 0.0,
        help: "PI gain on the previous step's error (0 = classic controller; Hairer: 0.04)",
    },
];

/// The largest `beta` (Hairer recommends beta <= 0.1 for a stable control). Above it the
/// rule safety · err^(−(1/5 − 3β/4)) · prev_err^β, with prev_err floored at 1e-4, is below
/// 1 for errors far under the tolerance, so such steps shrink and a run can stall (beta 0.19
/// ran out of 100000 steps at t = 0.29 on a test model the classic controller crosses to
/// t = 3 in 59).
pub const MAX_BETA: f64 = 0.1;

/// Checks rk45's own knob: 0 <= beta <= [`MAX_BETA`].
pub fn validate_beta(cfg: &[f64]) -> Result<()> {
    let beta = knob(&INFO, cfg, "beta");
    if (0.0..=MAX_BETA).contains(&beta) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "stepper 'rk45': knob 'beta' must be in [0, {MAX_BETA}], got {beta}"
        )))
    }
}

/// Checks the step controller's knobs (rk45's, and those bdf2a and tr-bdf2a share): every
/// knob's own range and min_factor <= max_factor. NaN is never accepted.
pub fn validate_controller_knobs(info: &StepperInfo, cfg: &[f64]) -> Result<()> {
    let get = |name| knob(info, cfg, name);
    let bad = |msg: String| Err(Error::invalid(format!("stepper '{}': {msg}", info.name)));
    let finite_positive = ["safety", "min_factor", "max_factor"];
    for name in finite_positive {
        let v = get(name);
        if !(v > 0.0 && v.is_finite()) {
            return bad(format!(
                "knob '{name}' must be positive and finite, got {v}"
            ));
        }
    }
    for name in ["atol", "rtol", "min_step"] {
        let v = get(name);
        if !(v >= 0.0 && v.is_finite()) {
            return bad(format!(
                "knob '{name}' must be non-negative and finite, got {v}"
            ));
        }
    }
    let (min_factor, max_factor) = (get("min_factor"), get("max_factor"));
    if min_factor > max_factor {
        return bad(format!(
            "knob 'min_factor' ({min_factor}) must not exceed 'max_factor' ({max_factor})"
        ));
    }
    let max_tries = get("max_tries");
    if !(max_tries >= 1.0 && max_tries.is_finite()) {
        return bad(format!(
            "knob 'max_tries' must be at least 1 and finite, got {max_tries}"
        ));
    }
    let dt_max = get("dt_max");
    if dt_max.is_nan() || dt_max <= 0.0 {
        return bad(format!(
            "knob 'dt_max' must be positive (inf = no limit), got {dt_max}"
        ));
    }
    let min_step = get("min_step");
    if min_step > dt_max {
        return bad(format!(
            "knob 'min_step' ({min_step}) must not exceed 'dt_max' ({dt_max})"
        ));
    }
    Ok(())
}

pub static INFO: StepperInfo = StepperInfo {
    name: "rk45",
    aliases: &["dopri5", "dormand_prince", "rk45_dp"],
    kind: ModelKind::Ode,
    adaptive: true,
    implicit: false,
    order: 5,
    embedded_order: Some(4),
    dense_output: true,
    config: &KNOBS,
    description: "Dormand-Prince 5(4), adaptive, dense output",
    legacy: Some(&LEGACY),
};

pub struct Rk45 {
    n: usize,
    stages: Stages,
    y5: Vec<f64>,
    /// Interpolation coefficients of the last accepted step (5 vectors of n), its (t, h),
    /// then the controller's memory (the previous error norm, floored) and the count of
    /// rejected attempts: one array, which the fused loop updates in place.
    dense: Vec<f64>,
    /// Bits of the time at which the last stage `k[6] = f(t, y5)` may serve as the next
    /// step's first stage (first same as last), for a lag-free model; `None` when not.
    fsal_t: Option<u64>,
}

/// Where the controller's memory and the rejection count sit in the carry of `n` states.
fn carry_slots(n: usize) -> (usize, usize) {
    let c = CarrySlots::of(n);
    (c.prev_err, c.rejected)
}

/// rk45 files written before the PI controller (no `beta`, no controller history).
static LEGACY: LegacyLayout = LegacyLayout {
    knob_names: legacy_knob_names,
    template: legacy_template,
    upgrade: upgrade_legacy,
    older: None,
};

/// rk45's knob names before `beta` existed (files written before the PI controller).
pub fn legacy_knob_names() -> Vec<&'static str> {
    CONTROLLER_KNOBS.iter().map(|k| k.name).collect()
}

/// The workspace layout of an rk45 stepper of `n` states before the PI controller (the
/// dense rows and span only), from which those files' `workspace_sig` was computed.
pub fn legacy_template(n: usize) -> Vec<WsArray> {
    let mut ws = Rk45::new(n).save();
    ws.truncate(2);
    ws
}

/// Brings a workspace and config of the legacy layout to today's: `beta = 0` (the only
/// controller there was), no error history yet and no rejections counted. The steps that
/// follow are the ones the writing build would have taken (the classic controller reads
/// neither).
pub fn upgrade_legacy(ws: &mut Vec<WsArray>, config: &mut Vec<f64>) {
    config.push(0.0);
    ws.push(WsArray::f64("prev_error", vec![PREV_ERR_FLOOR]));
    ws.push(WsArray::i64("rejected_attempts", vec![0]));
}

/// rk45's work counters as a run summary shows them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Attempts whose error was too large (or not finite), over the whole run.
    pub rejected_attempts: i64,
}

impl Stats {
    /// Reads them from a saved rk45 workspace.
    pub fn from_workspace(ws: &[WsArray]) -> Result<Stats> {
        let mut v = [0i64];
        load_i64(ws, "rejected_attempts", &mut v)?;
        Ok(Stats {
            rejected_attempts: v[0],
        })
    }
}

impl Rk45 {
    pub fn new(n: usize) -> Self {
        let mut dense = vec![0.0; CarrySlots::of(n).len];
        dense[carry_slots(n).0] = PREV_ERR_FLOOR;
        Rk45 {
            n,
            stages: Stages::new(7, n),
            y5: vec![0.0; n],
            dense,
            fsal_t: None,
        }
    }

    fn history(&self, rejected_before: bool) -> History {
        History {
            prev_err: self.dense[carry_slots(self.n).0],
            rejected_before,
        }
    }

    /// Remembers an accepted step's error and how many attempts it rejected.
    fn note_accepted(&mut self, err: f64, rejected: u64) {
        let (prev, count) = carry_slots(self.n);
        self.dense[prev] = err.max(PREV_ERR_FLOOR);
        self.dense[count] += rejected as f64;
    }

    /// `k[0] = f(t, y)`: the previous step's last stage when it was evaluated at these very
    /// bits of (t, y), else a new evaluation. Either way the same value, one call fewer.
    fn first_stage(&mut self, f: &mut dyn Rhs, t: f64, y: &[f64]) -> Result<()> {
        let same_point = self.fsal_t == Some(t.to_bits())
            && y.iter()
                .zip(&self.y5)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if same_point {
            self.stages.k.swap(0, 6);
            return Ok(());
        }
        f.eval(t, y, &mut self.stages.k[0])
    }

    fn error_norm(&self, y: &[f64], h: f64, atol: f64, rtol: f64) -> f64 {
        let mut sum = 0.0;
        for m in 0..self.n {
            let mut e = 0.0;
            for (w, k) in ERR.iter().zip(&self.stages.k) {
                if *w != 0.0 {
                    e += w * k[m];
                }
            }
            let scale = atol + rtol * y[m].abs().max(self.y5[m].abs());
            let r = h * e / scale;
            sum += r * r;
        }
        (sum / self.n as f64).sqrt()
    }

    fn build_dense(&mut self, t: f64, y: &[f64], h: f64) {
        let n = self.n;
        let k = &self.stages.k;
        for m in 0..n {
            let diff = self.y5[m] - y[m];
            let bspl = h * k[0][m] - diff;
            let mut acc = 0.0;
            for (j, d) in D.iter().enumerate() {
                if *d != 0.0 {
                    acc += d * k[j][m];
                }
            }
            self.dense[m] = y[m];
            self.dense[n + m] = diff;
            self.dense[2 * n + m] = bspl;
            self.dense[3 * n + m] = diff - h * k[6][m] - bspl;
            self.dense[4 * n + m] = h * acc;
        }
        self.dense[5 * n] = t;
        self.dense[5 * n + 1] = h;
    }
}

impl Stepper for Rk45 {
    fn info(&self) -> &'static StepperInfo {
        &INFO
    }

    fn save(&self) -> Vec<WsArray> {
        let n = self.n;
        let (prev, count) = carry_slots(n);
        vec![
            WsArray::matrix("dense", 5, n, self.dense[..5 * n].to_vec()),
            WsArray::f64("dense_span", self.dense[5 * n..prev].to_vec()),
            WsArray::f64("prev_error", vec![self.dense[prev]]),
            WsArray::i64("rejected_attempts", vec![self.dense[count] as i64]),
        ]
    }

    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        check_layout(ws, &self.save(), "stepper")?;
        let n = self.n;
        let (prev, count) = carry_slots(n);
        // Checked before anything is applied: a failed load changes nothing.
        let mut memory = [0.0];
        load_f64(ws, "prev_error", &mut memory)?;
        let mut rejected = [0i64];
        load_i64(ws, "rejected_attempts", &mut rejected)?;
        if !(memory[0] >= PREV_ERR_FLOOR && memory[0].is_finite()) {
            return Err(Error::corrupt(format!(
                "workspace array 'stepper/prev_error' is {}; it must be finite and at least \
                 {PREV_ERR_FLOOR}",
                memory[0]
            )));
        }
        if rejected[0] < 0 {
            return Err(Error::corrupt(format!(
                "workspace array 'stepper/rejected_attempts' is {}; a count is not negative",
                rejected[0]
            )));
        }
        self.fsal_t = None;
        load_f64(ws, "dense", &mut self.dense[..5 * n])?;
        load_f64(ws, "dense_span", &mut self.dense[5 * n..prev])?;
        self.dense[prev] = memory[0];
        self.dense[count] = rejected[0] as f64;
        Ok(())
    }

    /// The error history belongs to the old trajectory; the rejection count is the run's.
    fn restart(&mut self) {
        self.fsal_t = None;
        self.dense[carry_slots(self.n).0] = PREV_ERR_FLOOR;
    }

    fn step(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h_in: f64,
        cfg: &[f64],
        y_new: &mut [f64],
    ) -> Result<StepOutcome> {
        let ctl = Controller::from_config(cfg);
        let mut h = ctl.first_step(h_in);
        // The first stage is the same for every attempt.
        self.first_stage(f, t, y)?;
        self.fsal_t = None;
        if self.stages.k[0].iter().any(|v| !v.is_finite()) {
            return Err(step_failed(format!(
                "rk45: the right-hand side is not finite at t = {t}"
            )));
        }
        let mut rejected = 0u64;
        for _ in 0..ctl.tries {
            self.stages.compute_after_first(&TABLEAU, f, t, y, h)?;
            self.y5.copy_from_slice(&self.stages.y_stage);
            let finite = self.y5.iter().all(|v| v.is_finite())
                && self
                    .stages
                    .k
                    .iter()
                    .all(|k| k.iter().all(|v| v.is_finite()));
            if !finite {
                if h <= ctl.min_step {
                    return Err(step_failed(format!(
                        "rk45: non-finite stage values at t = {t} even with the minimum step {}",
                        ctl.min_step
                    )));
                }
                h = (h * ctl.min_factor).max(ctl.min_step);
                rejected += 1;
                continue;
            }
            let err = self.error_norm(y, h, ctl.atol, ctl.rtol);
            match ctl.judge(err, h, self.history(rejected > 0)) {
                Verdict::Accept { h_next } => {
                    self.note_accepted(err, rejected);
                    y_new.copy_from_slice(&self.y5);
                    self.build_dense(t, y, h);
                    // The runner's next time is t + h_used; k[6] was evaluated at t + 1·h.
                    if f.lag_free() {
                        self.fsal_t = Some((t + h).to_bits());
                    }
                    return Ok(StepOutcome { h_used: h, h_next });
                }
                Verdict::Retry { h: next } => {
                    h = next;
                    rejected += 1;
                }
                Verdict::TooSmall { h: next } => {
                    return Err(step_failed(format!(
                        "rk45: step size fell below min_step = {} at t = {t} (error norm {err:.3e}, next h = {next:.3e})",
                        ctl.min_step
                    )));
                }
            }
        }
        Err(step_failed(format!(
            "rk45: no acceptable step after {} tries at t = {t} (last h = {h:.3e})",
            ctl.tries
        )))
    }

    fn step_form(&self) -> Option<StepForm> {
        Some(StepForm::Embedded(&PAIR))
    }

    fn fused_carry(&mut self) -> Option<&mut [f64]> {
        Some(&mut self.dense)
    }

    /// The fused loop left the last step's start in the dense rows (`y`, then `t`, `h`):
    /// its stages again — the same operations on the same inputs, so the same bits — give
    /// the coefficients. Only lag-free models defer (a lag ring has moved on since).
    fn finish_fused(&mut self, f: &mut dyn Rhs) -> Result<()> {
        let n = self.n;
        let (t, h) = (self.dense[5 * n], self.dense[5 * n + 1]);
        let y = self.dense[..n].to_vec();
        f.eval(t, &y, &mut self.stages.k[0])?;
        self.stages.compute_after_first(&TABLEAU, f, t, &y, h)?;
        self.y5.copy_from_slice(&self.stages.y_stage);
        self.build_dense(t, &y, h);
        self.fsal_t = f.lag_free().then(|| (t + h).to_bits());
        Ok(())
    }

    fn interpolate(&self, t: f64, out: &mut [f64]) -> bool {
        let (t0, h) = (self.dense[5 * self.n], self.dense[5 * self.n + 1]);
        if h == 0.0 {
            return false;
        }
        let n = self.n;
        let th = (t - t0) / h;
        let th1 = 1.0 - th;
        let d = &self.dense;
        for (m, o) in out.iter_mut().enumerate() {
            *o = d[m]
                + th * (d[n + m] + th1 * (d[2 * n + m] + th * (d[3 * n + m] + th1 * d[4 * n + m])));
        }
        true
    }
}
