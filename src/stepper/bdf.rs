//! bdf: variable-order (1–5), variable-step BDF in Nordsieck form, with the step and order
//! selection, local error test and Newton strategy of SUNDIALS CVODE (Hindmarsh et al., ACM
//! TOMS 31, 2005; Jackson & Sacks-Davis 1980 for the fixed-leading-coefficient form). The
//! constants below are CVODE's defaults, so the two take comparable paths on a problem.
//!
//! The history is the Nordsieck array `zn` (row j holds h^j/j!·y^(j) at t_n). A step predicts
//! with the Pascal matrix, corrects with a simplified Newton iteration on
//! `M = I − γJ`, γ = h/l₁, and accepts when the weighted RMS local error `‖acor‖·tq₂ ≤ 1`.
//! The Jacobian is kept for up to [`MSBJ`] steps and its factorisation for up to [`MSBP`]
//! steps or while γ changes by less than [`DGMAX_LSETUP`]; a convergence failure with a stale
//! Jacobian re-evaluates it before the step size is cut.
//!
//! Everything that affects a future step — `zn`, the step-size history τ, the order and its
//! waiting counter, the error constants, the convergence rate, the Jacobian and its LU factors
//! and their ages — is in the saved workspace, so resumed and snapshotted runs are bit-exact.
//! `step` leaves the stepper in its post-step state; an event that changes the state calls
//! `restart`, and the next step starts afresh from the state it is given.

use super::dense_lu::DenseLu;
use super::newton::{JACOBIAN_EXTERNAL, JACOBIAN_INTERNAL};
use super::workspace::{check_layout, load_f64, load_i64};
use super::{
    knob, step_failed, Knob, KnobCache, LegacyLayout, Rhs, StepOutcome, Stepper, StepperInfo,
    Workspace, WsArray,
};
use crate::error::{Error, Result};
use crate::method::ModelKind;

/// Highest order of the method.
const MAX_ORDER: usize = 5;
/// Rows of the Nordsieck array; the last also keeps the correction for an order increase
/// while the order is below the maximum (CVODE's `zn[qmax]`).
const ROWS: usize = MAX_ORDER + 1;
const ACOR_ROW: usize = MAX_ORDER;

// Step and order selection (CVODE's cvode.c defaults).
const ADDON: f64 = 1e-6;
const BIAS1: f64 = 6.0;
const BIAS2: f64 = 6.0;
const BIAS3: f64 = 10.0;
/// A proposed step change below this factor is not made (saves refactorisations).
const THRESH: f64 = 1.5;
const ETAMX1: f64 = 10000.0;
const ETAMX2: f64 = 10.0;
const ETAMX3: f64 = 10.0;
const SMALL_NST: u64 = 10;
const ETAMXF: f64 = 0.2;
const ETAMIN: f64 = 0.1;
const ETACF: f64 = 0.25;
const SMALL_NEF: u32 = 2;
const MXNEF1: u32 = 3;
/// Error-test failures of one step before the run fails. CVODE's default is 7, which ends
/// Oregonator runs at some tolerances (a long step proposed just before a sharp transition
/// needs more than 7 cuts); the benchmark sets CVODE to the same 20.
const MXNEF: u32 = 20;
const MXNCF: u32 = 10;
const LONG_WAIT: usize = 10;

// Newton iteration.
/// The iteration error must be below this fraction of the local error tolerance.
const NLSCOEF: f64 = 0.1;
const CRDOWN: f64 = 0.3;
const RDIV: f64 = 2.0;
const MAXCOR: usize = 3;
/// Steps between refactorisations of M.
const MSBP: u64 = 20;
/// Steps between Jacobian evaluations.
const MSBJ: u64 = 51;
/// Relative change of γ that forces a refactorisation.
const DGMAX_LSETUP: f64 = 0.3;
/// After a convergence failure with a stale Jacobian, it is re-evaluated only if γ changed
/// by less than this (otherwise the stale γ is the likelier culprit).
const DGMAX_JBAD: f64 = 0.2;
/// Finite-difference increments are at least this multiple of h·uround·n·‖f‖ (CVODE).
const MIN_INC_MULT: f64 = 1000.0;
/// A pivot of M below this times max(1, |γ|·max|J|) makes M singular.
const PIVOT_TOL: f64 = 1e-14;

pub static KNOBS: [Knob; 8] = [
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
        name: "max_order",
        default: MAX_ORDER as f64,
        help: "highest BDF order (1-5)",
    },
    Knob {
        name: "min_step",
        default: 0.0,
        help: "a step that keeps failing at this size ends the run",
    },
    Knob {
        name: "dt_max",
        default: f64::INFINITY,
        help: "largest step",
    },
    Knob {
        name: "jacobian_mode",
        default: JACOBIAN_EXTERNAL,
        help: "1 = the model's analytic Jacobian when it has one (external), 0 = finite \
               differences (internal)",
    },
    Knob {
        name: "lower_bandwidth",
        default: f64::INFINITY,
        help: "J(i, j) = 0 for i > j + lower_bandwidth (inf = dense): a banded Newton matrix, \
               and difference Jacobians by column groups (lower + upper + 1 evaluations)",
    },
    Knob {
        name: "upper_bandwidth",
        default: f64::INFINITY,
        help: "J(i, j) = 0 for j > i + upper_bandwidth (inf = dense); see lower_bandwidth",
    },
];

pub static INFO: StepperInfo = StepperInfo {
    name: "bdf",
    aliases: &["cvode_bdf", "vode"],
    kind: ModelKind::Ode,
    adaptive: true,
    implicit: true,
    order: MAX_ORDER as u32,
    // Starts at order 1: the initial step estimate is for a first-order method.
    embedded_order: Some(1),
    dense_output: true,
    config: &KNOBS,
    description: "variable-order (1-5) variable-step BDF, Nordsieck form as in CVODE",
    legacy: Some(&LEGACY),
};

/// bdf files written before the bandwidth knobs: the same workspace, six knobs.
static LEGACY: LegacyLayout = LegacyLayout {
    knob_names: legacy_knob_names,
    template: legacy_template,
    upgrade: upgrade_legacy,
    older: None,
};

/// bdf's knob names before `lower_bandwidth` and `upper_bandwidth`.
pub fn legacy_knob_names() -> Vec<&'static str> {
    KNOBS[..6].iter().map(|k| k.name).collect()
}

/// The workspace of those files: today's (the bandwidths added no workspace member).
pub fn legacy_template(n: usize) -> Workspace {
    Bdf::new(n).save()
}

/// Dense Jacobians, as every run before the bandwidth knobs had.
pub fn upgrade_legacy(_ws: &mut Workspace, config: &mut Vec<f64>) {
    config.extend([f64::INFINITY, f64::INFINITY]);
}

/// The knobs, parsed once per config change.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    atol: f64,
    rtol: f64,
    qmax: usize,
    hmin: f64,
    hmax: f64,
    analytic: bool,
    /// Bandwidths of J (lower, upper); `usize::MAX` for none.
    band: (usize, usize),
}

impl Settings {
    pub fn from_cfg(info: &StepperInfo, cfg: &[f64]) -> Result<Self> {
        let get = |name| knob(info, cfg, name);
        let bad = |msg: String| Err(Error::invalid(format!("stepper '{}': {msg}", info.name)));
        for name in ["atol", "rtol", "min_step"] {
            let v = get(name);
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!(
                    "knob '{name}' must be non-negative and finite, got {v}"
                ));
            }
        }
        let (atol, rtol) = (get("atol"), get("rtol"));
        if atol == 0.0 && rtol == 0.0 {
            return bad("knobs 'atol' and 'rtol' are both 0; at least one must be positive".into());
        }
        let qmax = get("max_order");
        if !(1.0..=MAX_ORDER as f64).contains(&qmax) || qmax.fract() != 0.0 {
            return bad(format!(
                "knob 'max_order' must be an integer from 1 to {MAX_ORDER}, got {qmax}"
            ));
        }
        let (hmin, hmax) = (get("min_step"), get("dt_max"));
        if hmax.is_nan() || hmax <= 0.0 {
            return bad(format!(
                "knob 'dt_max' must be positive (inf = no limit), got {hmax}"
            ));
        }
        if hmin > hmax {
            return bad(format!(
                "knob 'min_step' ({hmin}) must not exceed 'dt_max' ({hmax})"
            ));
        }
        let mode = get("jacobian_mode");
        if mode != JACOBIAN_INTERNAL && mode != JACOBIAN_EXTERNAL {
            return bad(format!(
                "knob 'jacobian_mode' must be 0 (internal, finite differences) or 1 \
                 (external, the model's Jacobian), got {mode}"
            ));
        }
        let mut band = [usize::MAX; 2];
        for (b, name) in band.iter_mut().zip(["lower_bandwidth", "upper_bandwidth"]) {
            let v = get(name);
            if v == f64::INFINITY {
                continue;
            }
            if !(v >= 0.0 && v.fract() == 0.0 && v < 1e15) {
                return bad(format!(
                    "knob '{name}' must be a non-negative integer or inf (dense), got {v}"
                ));
            }
            *b = v as usize;
        }
        Ok(Settings {
            atol,
            rtol,
            qmax: qmax as usize,
            hmin,
            hmax,
            analytic: mode == JACOBIAN_EXTERNAL,
            band: (band[0], band[1]),
        })
    }
}

/// Why the Newton matrix is being set up (CVODE's `convfail`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum ConvFail {
    None,
    /// The iteration failed with a Jacobian that was not fresh.
    BadJacobian,
    /// The previous attempt at this step failed to converge.
    Other,
}

/// How the previous attempt at the current step ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Previous {
    FirstCall,
    ConvergenceFailure,
    ErrorTestFailure,
}

/// Work counters, carried so they count whole runs across resumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    pub rhs_evals: i64,
    pub jac_evals: i64,
    pub lu_factorisations: i64,
    pub error_test_failures: i64,
    pub convergence_failures: i64,
    pub newton_iterations: i64,
    /// Of `rhs_evals`, those spent on difference Jacobians (SUNDIALS counts these apart, as
    /// nfeLS, and leaves them out of nfe).
    pub jacobian_rhs_evals: i64,
}

impl Stats {
    fn to_vec(self) -> Vec<i64> {
        vec![
            self.rhs_evals,
            self.jac_evals,
            self.lu_factorisations,
            self.error_test_failures,
            self.convergence_failures,
            self.newton_iterations,
            self.jacobian_rhs_evals,
        ]
    }

    /// Reads the `stats` array of a saved `bdf` workspace.
    pub fn from_workspace(ws: &[WsArray]) -> Result<Stats> {
        let mut v = [0i64; 7];
        load_i64(ws, "stats", &mut v)?;
        Ok(Stats::from_array(v))
    }

    fn from_array(v: [i64; 7]) -> Stats {
        Stats {
            rhs_evals: v[0],
            jac_evals: v[1],
            lu_factorisations: v[2],
            error_test_failures: v[3],
            convergence_failures: v[4],
            newton_iterations: v[5],
            jacobian_rhs_evals: v[6],
        }
    }
}

pub struct Bdf {
    n: usize,
    settings: KnobCache<Settings>,
    // Carried between steps (saved).
    /// Nordsieck array, ROWS rows of n, scaled by `h`.
    zn: Vec<f64>,
    tn: f64,
    h: f64,
    /// tau[i] = the i-th most recent step size (tau[0] unused).
    tau: [f64; ROWS + 1],
    /// Error constants tq[1..=5] (tq[0] unused).
    tq: [f64; 6],
    saved_tq5: f64,
    /// γ of the current factorisation of M.
    gammap: f64,
    /// Estimated Newton convergence rate.
    crate_: f64,
    etamax: f64,
    /// The step ratio chosen for the next step (h_next = h·eta): zn is rescaled by exactly
    /// this factor, not by h_next/h, which can differ in the last bit.
    eta: f64,
    q: usize,
    qprime: usize,
    qwait: usize,
    fresh: bool,
    jac_ok: bool,
    lu_ok: bool,
    nst: u64,
    /// Steps at the last factorisation and the last Jacobian evaluation.
    nstlp: u64,
    nstlj: u64,
    jac: Vec<f64>,
    lu: DenseLu,
    stats: Stats,
    // Scratch of one step.
    saved_t: f64,
    ewt: Vec<f64>,
    acor: Vec<f64>,
    delta: Vec<f64>,
    ftemp: Vec<f64>,
    fpert: Vec<f64>,
    ycur: Vec<f64>,
    /// ycur before the increments of a banded difference Jacobian.
    ysave: Vec<f64>,
    l: [f64; ROWS + 1],
    gamma: f64,
    rl1: f64,
    gamrat: f64,
    acnrm: f64,
    hprime: f64,
}

impl Bdf {
    pub fn new(n: usize) -> Self {
        Bdf {
            n,
            settings: KnobCache::default(),
            zn: vec![0.0; ROWS * n],
            tn: 0.0,
            h: 0.0,
            tau: [0.0; ROWS + 1],
            tq: [0.0; 6],
            saved_tq5: 0.0,
            gammap: 0.0,
            crate_: 1.0,
            etamax: ETAMX1,
            eta: 1.0,
            q: 1,
            qprime: 1,
            qwait: 2,
            fresh: true,
            jac_ok: false,
            lu_ok: false,
            nst: 0,
            nstlp: 0,
            nstlj: 0,
            jac: vec![0.0; n * n],
            lu: DenseLu::new(n),
            stats: Stats::default(),
            saved_t: 0.0,
            ewt: vec![0.0; n],
            acor: vec![0.0; n],
            delta: vec![0.0; n],
            ftemp: vec![0.0; n],
            fpert: vec![0.0; n],
            ycur: vec![0.0; n],
            ysave: vec![0.0; n],
            l: [0.0; ROWS + 1],
            gamma: 0.0,
            rl1: 0.0,
            gamrat: 1.0,
            acnrm: 0.0,
            hprime: 0.0,
        }
    }

    /// The work counters of the run so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn row(&self, j: usize) -> &[f64] {
        &self.zn[j * self.n..(j + 1) * self.n]
    }

    fn wrms(&self, v: &[f64]) -> f64 {
        let s: f64 = v
            .iter()
            .zip(&self.ewt)
            .map(|(x, w)| (x * w) * (x * w))
            .sum();
        (s / self.n as f64).sqrt()
    }

    /// f(t, ycur) into ftemp; false when it is not finite.
    fn eval_finite(&mut self, f: &mut dyn Rhs, t: f64) -> Result<bool> {
        self.stats.rhs_evals += 1;
        f.eval(t, &self.ycur, &mut self.ftemp)?;
        Ok(self.ftemp.iter().all(|v| v.is_finite()))
    }

    /// Continues from the stepper's own history unless it was restarted or the session hands
    /// it a state other than the one it produced.
    fn continues_from(&self, t: f64, y: &[f64]) -> bool {
        !self.fresh
            && self.nst > 0
            && t.to_bits() == self.tn.to_bits()
            && y.iter()
                .zip(self.row(0))
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// A fresh start at order 1: zn = [y, h·f(t, y)].
    fn start(&mut self, f: &mut dyn Rhs, t: f64, y: &[f64], h: f64) -> Result<()> {
        let n = self.n;
        self.ycur.copy_from_slice(y);
        if !self.eval_finite(f, t)? {
            return Err(step_failed(format!(
                "bdf: the right-hand side is not finite at the start t = {t}"
            )));
        }
        self.zn.fill(0.0);
        self.zn[..n].copy_from_slice(y);
        for (z, fv) in self.zn[n..2 * n].iter_mut().zip(&self.ftemp) {
            *z = h * fv;
        }
        self.tn = t;
        self.h = h;
        self.tau = [0.0; ROWS + 1];
        self.tq = [0.0; 6];
        self.saved_tq5 = 0.0;
        self.gammap = 0.0;
        self.crate_ = 1.0;
        self.etamax = ETAMX1;
        self.eta = 1.0;
        self.q = 1;
        self.qprime = 1;
        self.qwait = 2;
        self.fresh = false;
        self.jac_ok = false;
        self.lu_ok = false;
        self.nst = 0;
        self.nstlp = 0;
        self.nstlj = 0;
        Ok(())
    }

    /// Applies the order chosen after the last step and the step size asked for now.
    fn adjust(&mut self, h_req: f64, qmax: usize) {
        if self.qprime > qmax {
            self.qprime = self.q;
        }
        while self.q > qmax {
            self.decrease_order();
            self.q -= 1;
            self.qprime = self.q;
            self.qwait = self.q + 1;
        }
        if self.qprime != self.q {
            if self.qprime > self.q {
                self.increase_order();
            } else {
                self.decrease_order();
            }
            self.q = self.qprime;
            self.qwait = self.q + 1;
        }
        if h_req.to_bits() != self.h.to_bits() {
            let planned = (self.h * self.eta).to_bits() == h_req.to_bits();
            self.rescale(if planned { self.eta } else { h_req / self.h });
            self.h = h_req;
        }
    }

    /// Scales zn for the step size h·eta.
    fn rescale(&mut self, eta: f64) {
        let n = self.n;
        let mut factor = eta;
        for j in 1..=self.q {
            for z in &mut self.zn[j * n..(j + 1) * n] {
                *z *= factor;
            }
            factor *= eta;
        }
        self.h *= eta;
    }

    /// Raises the order by one: adds the column q+1 from the last correction (kept in
    /// `ACOR_ROW`) and adjusts the lower columns (CVODE's cvIncreaseBDF).
    fn increase_order(&mut self) {
        let (n, q) = (self.n, self.q);
        let mut l = [0.0; ROWS + 1];
        l[2] = 1.0;
        let (mut alpha0, mut alpha1, mut prod, mut xiold) = (-1.0, 1.0, 1.0, 1.0);
        let mut hsum = self.h;
        for j in 1..q {
            hsum += self.tau[j + 1];
            let xi = hsum / self.h;
            prod *= xi;
            alpha0 -= 1.0 / (j + 1) as f64;
            alpha1 += 1.0 / xi;
            for i in (2..=j + 2).rev() {
                l[i] = l[i] * xiold + l[i - 1];
            }
            xiold = xi;
        }
        let a1 = (-alpha0 - alpha1) / prod;
        let big_l = q + 1;
        for i in 0..n {
            let v = a1 * self.zn[ACOR_ROW * n + i];
            self.zn[big_l * n + i] = v;
            for (j, lj) in l.iter().enumerate().take(q + 1).skip(2) {
                self.zn[j * n + i] += lj * v;
            }
        }
    }

    /// Lowers the order by one (CVODE's cvDecreaseBDF).
    fn decrease_order(&mut self) {
        let (n, q) = (self.n, self.q);
        if q <= 2 {
            // From order 2 to 1 the lower columns need no change.
            return;
        }
        let mut l = [0.0; ROWS + 1];
        l[2] = 1.0;
        let mut hsum = 0.0;
        for j in 1..=q - 2 {
            hsum += self.tau[j];
            let xi = hsum / self.h;
            for i in (2..=j + 2).rev() {
                l[i] = l[i] * xi + l[i - 1];
            }
        }
        for (j, lj) in l.iter().enumerate().take(q).skip(2) {
            for i in 0..n {
                self.zn[j * n + i] -= lj * self.zn[q * n + i];
            }
        }
    }

    /// Error weights 1/(rtol·|y| + atol) at the start of the step.
    fn set_weights(&mut self, s: &Settings) -> Result<()> {
        let n = self.n;
        for i in 0..n {
            let w = 1.0 / (s.rtol * self.zn[i].abs() + s.atol);
            if !w.is_finite() {
                return Err(step_failed(format!(
                    "bdf: the error weight of component {i} is infinite (atol = 0 and the \
                     state is 0 at t = {}); set atol > 0",
                    self.tn
                )));
            }
            self.ewt[i] = w;
        }
        Ok(())
    }

    /// zn ← Pascal·zn, tn ← tn + h.
    fn predict(&mut self) -> Result<()> {
        let (n, q) = (self.n, self.q);
        self.saved_t = self.tn;
        self.tn += self.h;
        if self.tn == self.saved_t {
            return Err(step_failed(format!(
                "bdf: the step size {:e} is too small for t = {} (t + h == t)",
                self.h, self.saved_t
            )));
        }
        for k in 1..=q {
            for j in (k..=q).rev() {
                for i in 0..n {
                    self.zn[(j - 1) * n + i] += self.zn[j * n + i];
                }
            }
        }
        Ok(())
    }

    /// Undoes the prediction of a failed attempt by the inverse Pascal recursion (CVODE's
    /// cvRestore) rather than from a saved copy: the retraction rounds, and rounding the same
    /// way keeps the runs of the two codes step-for-step comparable (it also saves a copy of
    /// zn per step).
    fn restore(&mut self) {
        let (n, q) = (self.n, self.q);
        self.tn = self.saved_t;
        for k in 1..=q {
            for j in (k..=q).rev() {
                for i in 0..n {
                    self.zn[(j - 1) * n + i] -= self.zn[j * n + i];
                }
            }
        }
    }

    /// The corrector coefficients l[0..=q] and the error constants tq (CVODE's cvSetBDF and
    /// cvSetTqBDF), then γ and its ratio to the factorisation's γ.
    fn set_coefficients(&mut self) {
        let (q, h) = (self.q, self.h);
        let l = &mut self.l;
        *l = [0.0; ROWS + 1];
        l[0] = 1.0;
        l[1] = 1.0;
        let (mut xi_inv, mut xistar_inv) = (1.0, 1.0);
        let (mut alpha0, mut alpha0_hat) = (-1.0, -1.0);
        let mut hsum = h;
        if q > 1 {
            for j in 2..q {
                hsum += self.tau[j - 1];
                xi_inv = h / hsum;
                alpha0 -= 1.0 / j as f64;
                for i in (1..=j).rev() {
                    l[i] += l[i - 1] * xi_inv;
                }
            }
            alpha0 -= 1.0 / q as f64;
            xistar_inv = -l[1] - alpha0;
            hsum += self.tau[q - 1];
            xi_inv = h / hsum;
            alpha0_hat = -l[1] - xi_inv;
            for i in (1..=q).rev() {
                l[i] += l[i - 1] * xistar_inv;
            }
        }
        self.set_error_constants(hsum, alpha0, alpha0_hat, xi_inv, xistar_inv);
        self.rl1 = 1.0 / self.l[1];
        self.gamma = h * self.rl1;
        if self.nst == 0 {
            self.gammap = self.gamma;
        }
        self.gamrat = if self.nst > 0 {
            self.gamma / self.gammap
        } else {
            1.0
        };
    }

    fn set_error_constants(
        &mut self,
        mut hsum: f64,
        alpha0: f64,
        alpha0_hat: f64,
        mut xi_inv: f64,
        xistar_inv: f64,
    ) {
        let (q, h) = (self.q, self.h);
        let qf = q as f64;
        let a1 = 1.0 - alpha0_hat + alpha0;
        let a2 = 1.0 + qf * a1;
        self.tq[2] = (a1 / (alpha0 * a2)).abs();
        self.tq[5] = (a2 * xistar_inv / (self.l[q] * xi_inv)).abs();
        if self.qwait == 1 {
            if q > 1 {
                let c = xistar_inv / self.l[q];
                let a3 = alpha0 + 1.0 / qf;
                let a4 = alpha0_hat + xi_inv;
                let cp_inv = (1.0 - a4 + a3) / a3;
                self.tq[1] = (c * cp_inv).abs();
            } else {
                self.tq[1] = 1.0;
            }
            hsum += self.tau[q];
            xi_inv = h / hsum;
            let a5 = alpha0 - 1.0 / (qf + 1.0);
            let a6 = alpha0_hat - xi_inv;
            let cpp_inv = (1.0 - a6 + a5) / a2;
            self.tq[3] = (cpp_inv / (xi_inv * (qf + 2.0) * a5)).abs();
        }
        self.tq[4] = NLSCOEF / self.tq[2];
    }

    /// Predict, correct and test until an attempt passes (CVODE's cvStep).
    fn take_step(&mut self, f: &mut dyn Rhs, s: &Settings) -> Result<()> {
        let mut previous = Previous::FirstCall;
        let (mut ncf, mut nef) = (0u32, 0u32);
        loop {
            self.predict()?;
            self.set_coefficients();
            if !self.correct(f, previous, s)? {
                self.restore();
                ncf += 1;
                self.stats.convergence_failures += 1;
                self.etamax = 1.0;
                if ncf == MXNCF || self.h <= s.hmin {
                    return Err(self.failure(s, "the Newton iteration kept failing"));
                }
                self.rescale(ETACF.max(s.hmin / self.h));
                previous = Previous::ConvergenceFailure;
                continue;
            }
            let dsm = self.acnrm * self.tq[2];
            // A NaN estimate fails the test too.
            if dsm > 1.0 || dsm.is_nan() {
                self.restore();
                nef += 1;
                self.stats.error_test_failures += 1;
                self.etamax = 1.0;
                if nef == MXNEF || self.h <= s.hmin {
                    let why = format!("the local error test kept failing (error {dsm:.3e})");
                    return Err(self.failure(s, &why));
                }
                self.after_error_failure(f, dsm, nef, s)?;
                previous = Previous::ErrorTestFailure;
                continue;
            }
            self.complete_step(s.qmax);
            self.prepare_next_step(dsm, s);
            self.etamax = if self.nst <= SMALL_NST {
                ETAMX2
            } else {
                ETAMX3
            };
            return Ok(());
        }
    }

    fn failure(&self, s: &Settings, why: &str) -> Error {
        step_failed(format!(
            "bdf: no acceptable step at t = {} (h = {:.3e}, order {}, min_step {}): {why}",
            self.tn, self.h, self.q, s.hmin
        ))
    }

    /// A smaller step after a failed error test; after MXNEF1 failures, order 1 (and at order
    /// 1, a fresh derivative column).
    fn after_error_failure(
        &mut self,
        f: &mut dyn Rhs,
        dsm: f64,
        nef: u32,
        s: &Settings,
    ) -> Result<()> {
        let big_l = (self.q + 1) as f64;
        if nef <= MXNEF1 {
            let mut eta = 1.0 / ((BIAS2 * dsm).powf(1.0 / big_l) + ADDON);
            eta = ETAMIN.max(eta.max(s.hmin / self.h));
            if nef >= SMALL_NEF {
                eta = eta.min(ETAMXF);
            }
            self.rescale(eta);
            return Ok(());
        }
        let eta = ETAMIN.max(s.hmin / self.h);
        if self.q > 1 {
            self.decrease_order();
            self.q -= 1;
            self.qwait = self.q + 1;
            self.rescale(eta);
            return Ok(());
        }
        self.h *= eta;
        self.qwait = LONG_WAIT;
        let n = self.n;
        self.ycur.copy_from_slice(&self.zn[..n]);
        if !self.eval_finite(f, self.tn)? {
            return Err(self.failure(s, "the right-hand side is not finite"));
        }
        for (z, fv) in self.zn[n..2 * n].iter_mut().zip(&self.ftemp) {
            *z = self.h * fv;
        }
        Ok(())
    }

    /// The Newton corrector from the prediction; true when it converged (acor and acnrm set).
    fn correct(&mut self, f: &mut dyn Rhs, previous: Previous, s: &Settings) -> Result<bool> {
        let mut convfail = if previous == Previous::ConvergenceFailure {
            ConvFail::Other
        } else {
            ConvFail::None
        };
        let mut setup = previous != Previous::FirstCall
            || self.nst == 0
            || !self.lu_ok
            || self.nst >= self.nstlp + MSBP
            || (self.gamrat - 1.0).abs() > DGMAX_LSETUP;
        loop {
            let n = self.n;
            self.acor.fill(0.0);
            self.ycur.copy_from_slice(&self.zn[..n]);
            if !self.eval_finite(f, self.tn)? {
                return Ok(false);
            }
            let mut jcur = false;
            if setup {
                match self.setup(f, convfail, s)? {
                    Some(fresh_jacobian) => jcur = fresh_jacobian,
                    None => return Ok(false),
                }
            }
            if self.iterate(f)? {
                return Ok(true);
            }
            if jcur {
                return Ok(false);
            }
            // The Jacobian was old: renew it (or at least M) and try the same step again.
            setup = true;
            convfail = ConvFail::BadJacobian;
        }
    }

    /// Evaluates J if it is stale and factorises M = I − γJ. `Some(true)` when J was
    /// evaluated now, `None` when J or M is unusable.
    fn setup(&mut self, f: &mut dyn Rhs, convfail: ConvFail, s: &Settings) -> Result<Option<bool>> {
        let dgamma = (self.gamma / self.gammap - 1.0).abs();
        let jbad = self.nst == 0
            || !self.jac_ok
            || self.nst >= self.nstlj + MSBJ
            || (convfail == ConvFail::BadJacobian && dgamma < DGMAX_JBAD)
            || convfail == ConvFail::Other;
        if jbad {
            self.jac_ok = false;
            self.lu_ok = false;
            if !self.evaluate_jacobian(f, s)? {
                return Ok(None);
            }
            self.jac_ok = true;
            self.nstlj = self.nst;
        }
        Ok(self.factor(s).then_some(jbad))
    }

    /// The bandwidths of J when they make it banded (each at most n − 1, not both n − 1).
    fn band(&self, s: &Settings) -> Option<(usize, usize)> {
        let edge = self.n.saturating_sub(1);
        let (ml, mu) = (s.band.0.min(edge), s.band.1.min(edge));
        (ml < edge || mu < edge).then_some((ml, mu))
    }

    /// M = I − γJ, zero outside the band of a banded J, factorised (in the band).
    fn factor(&mut self, s: &Settings) -> bool {
        let n = self.n;
        let gamma = self.gamma;
        let (ml, mu) = self.band(s).unwrap_or((n, n));
        let mut jmax = 0.0f64;
        for (i, (m, j)) in self.lu.a.iter_mut().zip(&self.jac).enumerate() {
            let (r, c) = (i / n, i % n);
            if r > c + ml || c > r + mu {
                *m = 0.0;
                continue;
            }
            jmax = jmax.max(j.abs());
            *m = -gamma * j + if r == c { 1.0 } else { 0.0 };
        }
        self.stats.lu_factorisations += 1;
        let tiny = PIVOT_TOL * (gamma.abs() * jmax).max(1.0);
        // With no band, (n, n) makes it the dense factorisation.
        self.lu_ok = self.lu.factor_banded(tiny, ml, mu).is_ok();
        if self.lu_ok {
            self.gammap = gamma;
            self.gamrat = 1.0;
            self.crate_ = 1.0;
            self.nstlp = self.nst;
        }
        self.lu_ok
    }

    /// J at the prediction (ycur, with f = ftemp there): the model's when configured and
    /// available, else forward differences with CVODE's increment
    /// max(√uround·|y_j|, 1000·|h|·uround·n·‖f‖ / w_j). False when J is not finite.
    fn evaluate_jacobian(&mut self, f: &mut dyn Rhs, s: &Settings) -> Result<bool> {
        self.stats.jac_evals += 1;
        let t = self.tn;
        let analytic = if s.analytic {
            f.jacobian(t, &self.ycur, &mut self.jac)
        } else {
            None
        };
        match analytic {
            Some(r) => r?,
            None => match self.band(s) {
                Some((ml, mu)) => self.banded_difference_jacobian(f, t, ml, mu)?,
                None => self.difference_jacobian(f, t)?,
            },
        }
        Ok(self.jac.iter().all(|v| v.is_finite()))
    }

    /// CVODE's smallest difference increment (before the weights): `MIN_INC_MULT·|h|·uround·
    /// n·‖f‖`, or 1 when f is 0.
    fn min_increment(&self) -> f64 {
        let fnorm = self.wrms(&self.ftemp);
        if fnorm != 0.0 {
            MIN_INC_MULT * self.h.abs() * f64::EPSILON * self.n as f64 * fnorm
        } else {
            1.0
        }
    }

    fn difference_jacobian(&mut self, f: &mut dyn Rhs, t: f64) -> Result<()> {
        let n = self.n;
        let uround = f64::EPSILON;
        let min_inc = self.min_increment();
        for j in 0..n {
            let yj = self.ycur[j];
            let inc = (uround.sqrt() * yj.abs()).max(min_inc / self.ewt[j]);
            self.ycur[j] = yj + inc;
            self.stats.rhs_evals += 1;
            self.stats.jacobian_rhs_evals += 1;
            f.eval(t, &self.ycur, &mut self.fpert)?;
            self.ycur[j] = yj;
            // Divided by the requested increment, by multiplication, as CVODE's DQ Jacobian
            // does (the same rounding keeps the runs comparable; the representable increment
            // differs from it by ~√ε relative, far below the truncation error of the quotient).
            let inc_inv = 1.0 / inc;
            for i in 0..n {
                self.jac[i * n + j] = inc_inv * self.fpert[i] + -inc_inv * self.ftemp[i];
            }
        }
        Ok(())
    }

    /// The difference Jacobian of a banded J by column groups (Curtis, Powell & Reid): the
    /// columns j ≡ g mod (ml + mu + 1) touch disjoint rows, so one evaluation of f with all of
    /// them incremented gives all their columns; ml + mu + 1 evaluations in all (or n). The
    /// increments are those of the dense quotient; entries outside the band are 0.
    fn banded_difference_jacobian(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        ml: usize,
        mu: usize,
    ) -> Result<()> {
        let n = self.n;
        let uround = f64::EPSILON;
        let min_inc = self.min_increment();
        let width = ml + mu + 1;
        self.jac.iter_mut().for_each(|v| *v = 0.0);
        for group in 0..width.min(n) {
            for j in (group..n).step_by(width) {
                let yj = self.ycur[j];
                self.ysave[j] = yj;
                let inc = (uround.sqrt() * yj.abs()).max(min_inc / self.ewt[j]);
                self.ycur[j] = yj + inc;
            }
            self.stats.rhs_evals += 1;
            self.stats.jacobian_rhs_evals += 1;
            f.eval(t, &self.ycur, &mut self.fpert)?;
            for j in (group..n).step_by(width) {
                let yj = self.ysave[j];
                self.ycur[j] = yj;
                let inc = (uround.sqrt() * yj.abs()).max(min_inc / self.ewt[j]);
                let inc_inv = 1.0 / inc;
                for i in j.saturating_sub(mu)..(j + ml + 1).min(n) {
                    self.jac[i * n + j] = inc_inv * self.fpert[i] + -inc_inv * self.ftemp[i];
                }
            }
        }
        Ok(())
    }

    /// Newton iterations with the current factorisation; f at the first iterate is in ftemp.
    /// Convergence when ‖Δ‖·min(1, rate)/tq₄ ≤ 1, i.e. the remaining iteration error is below
    /// NLSCOEF of the local error tolerance (CVODE's test).
    fn iterate(&mut self, f: &mut dyn Rhs) -> Result<bool> {
        let n = self.n;
        let mut delp = 0.0;
        for m in 0..MAXCOR {
            for i in 0..n {
                self.delta[i] =
                    self.gamma * self.ftemp[i] - (self.rl1 * self.zn[n + i] + self.acor[i]);
            }
            self.lu.solve(&mut self.delta);
            if self.gamrat != 1.0 {
                // M was factored for an older γ: the standard correction of the step.
                let scale = 2.0 / (1.0 + self.gamrat);
                self.delta.iter_mut().for_each(|d| *d *= scale);
            }
            for i in 0..n {
                self.acor[i] += self.delta[i];
                self.ycur[i] = self.zn[i] + self.acor[i];
            }
            self.stats.newton_iterations += 1;
            let del = self.wrms(&self.delta);
            if !del.is_finite() {
                return Ok(false);
            }
            if m > 0 {
                self.crate_ = (CRDOWN * self.crate_).max(del / delp);
            }
            let dcon = del * self.crate_.min(1.0) / self.tq[4];
            if dcon <= 1.0 {
                self.acnrm = if m == 0 { del } else { self.wrms(&self.acor) };
                return Ok(true);
            }
            if m >= 1 && del > RDIV * delp {
                return Ok(false);
            }
            delp = del;
            if m + 1 == MAXCOR || !self.eval_finite(f, self.tn)? {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Accepts the attempt: zn ← zn + l·acor, step history and order-change bookkeeping.
    fn complete_step(&mut self, qmax: usize) {
        let (n, q) = (self.n, self.q);
        self.nst += 1;
        for i in (2..=q).rev() {
            self.tau[i] = self.tau[i - 1];
        }
        if q == 1 && self.nst > 1 {
            self.tau[2] = self.tau[1];
        }
        self.tau[1] = self.h;
        for j in 0..=q {
            let lj = self.l[j];
            for i in 0..n {
                self.zn[j * n + i] += lj * self.acor[i];
            }
        }
        self.qwait = self.qwait.saturating_sub(1);
        if self.qwait == 1 && q != qmax {
            self.zn[ACOR_ROW * n..(ACOR_ROW + 1) * n].copy_from_slice(&self.acor);
            self.saved_tq5 = self.tq[5];
        }
    }

    /// The next step size and order (CVODE's cvPrepareNextStep): the largest of the step
    /// ratios the error estimates allow at orders q−1, q, q+1, and no change below THRESH.
    fn prepare_next_step(&mut self, dsm: f64, s: &Settings) {
        self.qprime = self.q;
        if self.etamax == 1.0 {
            self.qwait = self.qwait.max(2);
            self.eta = 1.0;
            self.hprime = self.h;
            return;
        }
        let big_l = (self.q + 1) as f64;
        let etaq = 1.0 / ((BIAS2 * dsm).powf(1.0 / big_l) + ADDON);
        if self.qwait != 0 {
            self.set_eta(etaq, s);
            return;
        }
        self.qwait = 2;
        let etaqm1 = self.eta_lower();
        let etaqp1 = self.eta_higher(s.qmax);
        let etam = etaqm1.max(etaq).max(etaqp1);
        let eta = if etam < THRESH || etam == etaq {
            etaq
        } else if etam == etaqm1 {
            self.qprime = self.q - 1;
            etaqm1
        } else {
            self.qprime = self.q + 1;
            let n = self.n;
            self.zn[ACOR_ROW * n..(ACOR_ROW + 1) * n].copy_from_slice(&self.acor);
            etaqp1
        };
        self.set_eta(eta, s);
    }

    fn set_eta(&mut self, eta: f64, s: &Settings) {
        if eta < THRESH {
            self.qprime = self.q;
            self.eta = 1.0;
            self.hprime = self.h;
            return;
        }
        let eta = eta.min(self.etamax);
        self.eta = eta / (self.h * eta / s.hmax).max(1.0);
        self.hprime = self.h * self.eta;
    }

    /// Step ratio the error estimate allows at order q−1 (0 at order 1).
    fn eta_lower(&self) -> f64 {
        if self.q == 1 {
            return 0.0;
        }
        let ddn = self.wrms(self.row(self.q)) * self.tq[1];
        1.0 / ((BIAS1 * ddn).powf(1.0 / self.q as f64) + ADDON)
    }

    /// Step ratio the error estimate allows at order q+1 (0 at the highest order or without
    /// a saved correction).
    fn eta_higher(&mut self, qmax: usize) -> f64 {
        if self.q >= qmax || self.saved_tq5 == 0.0 {
            return 0.0;
        }
        let n = self.n;
        let big_l = (self.q + 1) as i32;
        let cquot = (self.tq[5] / self.saved_tq5) * repeated_product(self.h / self.tau[2], big_l);
        for i in 0..n {
            self.delta[i] = self.acor[i] - cquot * self.zn[ACOR_ROW * n + i];
        }
        let dup = self.wrms(&self.delta) * self.tq[3];
        1.0 / ((BIAS3 * dup).powf(1.0 / (big_l + 1) as f64) + ADDON)
    }
}

/// x^k by k − 1 multiplications in order (`powi` may square, which rounds differently; the
/// order selection compares such ratios, so both must see the same bits).
fn repeated_product(x: f64, k: i32) -> f64 {
    (0..k).fold(1.0, |p, _| p * x)
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

impl Stepper for Bdf {
    fn info(&self) -> &'static StepperInfo {
        &INFO
    }

    fn save(&self) -> Vec<WsArray> {
        let n = self.n;
        let piv = self.lu.piv.iter().map(|&p| p as i64).collect();
        vec![
            WsArray::matrix("zn", ROWS, n, self.zn.clone()),
            WsArray::f64("tn_h", vec![self.tn, self.h]),
            WsArray::f64("tau", self.tau.to_vec()),
            WsArray::f64("tq", self.tq.to_vec()),
            WsArray::f64(
                "newton",
                vec![
                    self.saved_tq5,
                    self.gammap,
                    self.crate_,
                    self.etamax,
                    self.eta,
                ],
            ),
            WsArray::i64(
                "order",
                vec![self.q as i64, self.qprime as i64, self.qwait as i64],
            ),
            WsArray::i64(
                "flags",
                vec![flag(self.fresh), flag(self.jac_ok), flag(self.lu_ok)],
            ),
            WsArray::i64(
                "ages",
                vec![self.nst as i64, self.nstlp as i64, self.nstlj as i64],
            ),
            WsArray::matrix("jac", n, n, self.jac.clone()),
            WsArray::matrix("lu", n, n, self.lu.a.clone()),
            WsArray::i64("lu_piv", piv),
            WsArray::i64("stats", self.stats.to_vec()),
        ]
    }

    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        check_layout(ws, &self.save(), "stepper")?;
        let loaded = Loaded::read(ws, self.n)?;
        loaded.check(self.n)?;
        loaded.apply(self)
    }

    fn restart(&mut self) {
        self.fresh = true;
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
        let s = self.settings.get(cfg, |c| Settings::from_cfg(&INFO, c))?;
        let h_req = h_in.min(s.hmax);
        if !(h_req > 0.0 && h_req.is_finite()) {
            return Err(step_failed(format!(
                "bdf: the step size must be positive and finite, got {h_req}"
            )));
        }
        if self.continues_from(t, y) {
            self.adjust(h_req, s.qmax);
        } else {
            self.start(f, t, y, h_req)?;
        }
        self.set_weights(&s)?;
        self.take_step(f, &s)?;
        y_new.copy_from_slice(self.row(0));
        Ok(StepOutcome {
            h_used: self.h,
            h_next: self.hprime,
        })
    }

    /// The Nordsieck polynomial of the last step: y(t) = Σ_j zn_j·((t − t_n)/h)^j.
    fn interpolate(&self, t: f64, out: &mut [f64]) -> bool {
        if self.fresh || self.nst == 0 {
            return false;
        }
        let s = (t - self.tn) / self.h;
        out.copy_from_slice(self.row(self.q));
        for j in (0..self.q).rev() {
            for (o, z) in out.iter_mut().zip(self.row(j)) {
                *o = *o * s + z;
            }
        }
        true
    }
}

/// A saved workspace, read and checked before any of it is applied (a failed load changes
/// nothing).
struct Loaded {
    zn: Vec<f64>,
    tn_h: [f64; 2],
    tau: [f64; ROWS + 1],
    tq: [f64; 6],
    newton: [f64; 5],
    order: [i64; 3],
    flags: [i64; 3],
    ages: [i64; 3],
    jac: Vec<f64>,
    lu: Vec<f64>,
    piv: Vec<i64>,
    stats: [i64; 7],
}

impl Loaded {
    fn read(ws: &[WsArray], n: usize) -> Result<Loaded> {
        let mut l = Loaded {
            zn: vec![0.0; ROWS * n],
            tn_h: [0.0; 2],
            tau: [0.0; ROWS + 1],
            tq: [0.0; 6],
            newton: [0.0; 5],
            order: [0; 3],
            flags: [0; 3],
            ages: [0; 3],
            jac: vec![0.0; n * n],
            lu: vec![0.0; n * n],
            piv: vec![0; n],
            stats: [0; 7],
        };
        load_f64(ws, "zn", &mut l.zn)?;
        load_f64(ws, "tn_h", &mut l.tn_h)?;
        load_f64(ws, "tau", &mut l.tau)?;
        load_f64(ws, "tq", &mut l.tq)?;
        load_f64(ws, "newton", &mut l.newton)?;
        load_i64(ws, "order", &mut l.order)?;
        load_i64(ws, "flags", &mut l.flags)?;
        load_i64(ws, "ages", &mut l.ages)?;
        load_f64(ws, "jac", &mut l.jac)?;
        load_f64(ws, "lu", &mut l.lu)?;
        load_i64(ws, "lu_piv", &mut l.piv)?;
        load_i64(ws, "stats", &mut l.stats)?;
        Ok(l)
    }

    fn check(&self, n: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::corrupt(format!("bdf workspace: {msg}")));
        let [q, qprime, qwait] = self.order;
        let max = MAX_ORDER as i64;
        if !(1..=max).contains(&q) || !(1..=max).contains(&qprime) || (qprime - q).abs() > 1 {
            return bad(format!(
                "'order' holds order {q} and next order {qprime}; both must be 1..={max} and \
                 differ by at most 1"
            ));
        }
        if !(0..=LONG_WAIT as i64).contains(&qwait) {
            return bad(format!(
                "'order' holds the wait {qwait}, outside 0..={LONG_WAIT}"
            ));
        }
        if let Some(f) = self.flags.iter().find(|f| !(0..=1).contains(*f)) {
            return bad(format!("'flags' holds {f}; flags are 0 or 1"));
        }
        let [nst, nstlp, nstlj] = self.ages;
        if nst < 0 || !(0..=nst).contains(&nstlp) || !(0..=nst).contains(&nstlj) {
            return bad(format!(
                "'ages' holds steps {nst}, last factorisation {nstlp}, last Jacobian {nstlj}; \
                 they must be non-negative and the last two at most the first"
            ));
        }
        let h = self.tn_h[1];
        if self.flags[0] == 0 && nst > 0 && !(h.is_normal() && h > 0.0) {
            return bad(format!(
                "the step size {h:?} must be a positive normal number"
            ));
        }
        let eta = self.newton[4];
        if !(eta > 0.0 && eta.is_finite()) {
            return bad(format!(
                "'newton' holds the step ratio {eta:?}; it must be positive and finite"
            ));
        }
        for (k, &p) in self.piv.iter().enumerate() {
            if !(k as i64..n as i64).contains(&p) {
                return bad(format!("'lu_piv' entry {k} is {p}, outside {k}..{n}"));
            }
        }
        if let Some(v) = self.stats.iter().find(|v| **v < 0) {
            return bad(format!("'stats' holds the negative count {v}"));
        }
        Ok(())
    }

    fn apply(self, b: &mut Bdf) -> Result<()> {
        b.zn = self.zn;
        [b.tn, b.h] = self.tn_h;
        b.tau = self.tau;
        b.tq = self.tq;
        [b.saved_tq5, b.gammap, b.crate_, b.etamax, b.eta] = self.newton;
        b.q = self.order[0] as usize;
        b.qprime = self.order[1] as usize;
        b.qwait = self.order[2] as usize;
        b.fresh = self.flags[0] == 1;
        b.jac_ok = self.flags[1] == 1;
        b.lu_ok = self.flags[2] == 1;
        b.nst = self.ages[0] as u64;
        b.nstlp = self.ages[1] as u64;
        b.nstlj = self.ages[2] as u64;
        b.jac = self.jac;
        b.lu.a = self.lu;
        b.lu.piv = self.piv.iter().map(|&p| p as usize).collect();
        b.stats = Stats::from_array(self.stats);
        Ok(())
    }
}
