//! Methods as data: the Butcher tableaux and Adams weights that both the general stepping
//! engine (`stepper`) and the fused native loops (`model::jit::kernel`) are built from, so the
//! two can never disagree about a coefficient.

/// What a method advances: a continuous-time system (ODE) or a discrete-time map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Ode,
    Map,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Ode => "ode",
            ModelKind::Map => "map",
        }
    }
}

/// A Butcher tableau: `a` is the strictly lower triangle, row `i` holding `i` entries.
#[derive(Debug)]
pub struct Tableau {
    pub c: &'static [f64],
    pub a: &'static [&'static [f64]],
    pub b: &'static [f64],
}

/// One step of a fixed-step explicit method written as straight-line arithmetic, for code
/// that runs many steps in one loop. Each form stands for exactly the IEEE operations, in
/// the same order, that the method's `Stepper::step` and `commit` perform.
#[derive(Debug, Clone, Copy)]
pub enum StepForm {
    /// `y_new = F(t, y)`.
    Map,
    /// Stages `k_i = f(t + c_i h, y + h (0 + Σ_j a_ij k_j))` (zero `a_ij` skipped), then
    /// `y_new = y + h (0 + Σ_i b_i k_i)` (zero `b_i` skipped).
    Erk(&'static Tableau),
    /// Adams–Bashforth in its steady state: `y_new = y + h (0 + Σ_i w_i f_{n-i})` over the
    /// history `f_n, f_{n-1}, …` (newest first, one weight per entry); after the commit
    /// `f(t_new, y_new)` becomes the newest entry and the oldest is dropped.
    Adams(&'static [f64]),
    /// An adaptive embedded pair: attempts `k_i`, `y5 = y + h (0 + Σ a_6j k_j)` and the error
    /// norm `sqrt(Σ_m (h e_m / (atol + rtol max(|y_m|, |y5_m|)))² / n)` with
    /// `e_m = 0 + Σ_j err_j k_jm`, judged by [`Controller::judge`] until accepted; an
    /// accepted step stores its dense-output coefficients.
    Embedded(&'static EmbeddedPair),
}

/// An embedded explicit Runge–Kutta pair with a continuous extension, as the adaptive
/// `rk45` stepper and its fused loop both use it.
#[derive(Debug)]
pub struct EmbeddedPair {
    /// The propagating method; its last row of `a` equals `b` (first same as last).
    pub tab: Tableau,
    /// `b - b̂`: weights of the local error estimate.
    pub err: &'static [f64],
    /// Weights of the dense-output term (Hairer's DOPRI5 `contd5`).
    pub dense: &'static [f64],
}

/// The step-size controller of an embedded pair, its knobs read once per run instead of
/// looked up by name per step: the classic one (`beta = 0`) or Hairer's DOPRI5 PI
/// controller (`beta > 0`). `judge` is the one implementation of the accept/reject rule:
/// the general stepper calls it and the fused loop performs the same operations.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controller {
    pub atol: f64,
    pub rtol: f64,
    pub safety: f64,
    pub min_factor: f64,
    pub max_factor: f64,
    /// Attempts per step (at least 1).
    pub tries: u64,
    pub min_step: f64,
    pub dt_max: f64,
    /// Weight of the previous accepted step's error (0: the classic controller).
    pub beta: f64,
}

/// What the controller remembers of the steps before an attempt: the previous accepted
/// step's error norm (floored, Hairer's `facold`) and whether an attempt at the current
/// step was already rejected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    pub prev_err: f64,
    pub rejected_before: bool,
}

/// Where an embedded pair's carry for `n` states keeps what follows its dense rows (5 vectors
/// of `n`): the accepted step's (t, h) at `span`, the previous error norm at `prev_err`, the
/// count of rejected attempts at `rejected`. The stepper and the fused loop share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarrySlots {
    pub span: usize,
    pub prev_err: usize,
    pub rejected: usize,
    pub len: usize,
}

impl CarrySlots {
    pub fn of(n: usize) -> CarrySlots {
        CarrySlots {
            span: 5 * n,
            prev_err: 5 * n + 2,
            rejected: 5 * n + 3,
            len: 5 * n + 4,
        }
    }
}

/// The floor of the remembered error norm (Hairer's): a step with a tiny error does not
/// make the next factor explode. Also its value before the first step.
pub const PREV_ERR_FLOOR: f64 = 1e-4;

/// What the controller makes of one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Accept {
        h_next: f64,
    },
    Retry {
        h: f64,
    },
    /// The step would fall below `min_step`.
    TooSmall {
        h: f64,
    },
}

impl Controller {
    /// From a config vector in the knob order of `rk45::KNOBS` (atol, rtol, safety,
    /// min_factor, max_factor, max_tries, min_step, dt_max, then beta, 0 when absent).
    pub fn from_config(cfg: &[f64]) -> Controller {
        Controller {
            atol: cfg[0],
            rtol: cfg[1],
            safety: cfg[2],
            min_factor: cfg[3],
            max_factor: cfg[4],
            tries: cfg[5].max(1.0) as u64,
            min_step: cfg[6],
            dt_max: cfg[7],
            beta: cfg.get(8).copied().unwrap_or(0.0),
        }
    }

    /// The first attempt's step from the proposed one.
    #[inline]
    pub fn first_step(&self, h_in: f64) -> f64 {
        h_in.min(self.dt_max)
    }

    /// Accepts a step of size `h` with error norm `err`, or proposes the next attempt.
    /// With `beta = 0` the classic rule (safety · err^(-1/5) on acceptance, err^(-1/4) on
    /// rejection); otherwise Hairer's DOPRI5 PI rule: safety · err^(-α) · prev_err^β with
    /// α = 1/5 − 3β/4 for both, and no growth right after a rejection.
    #[inline]
    pub fn judge(&self, err: f64, h: f64, history: History) -> Verdict {
        if self.beta != 0.0 {
            return self.judge_pi(err, h, history);
        }
        if err <= 1.0 || h <= self.min_step {
            let factor = if err > 0.0 {
                (self.safety * err.powf(-0.2)).clamp(self.min_factor, self.max_factor)
            } else {
                self.max_factor
            };
            return Verdict::Accept {
                h_next: (h * factor).min(self.dt_max),
            };
        }
        let h = h * self.min_factor.max(self.safety * err.powf(-0.25));
        self.retry(h)
    }

    fn judge_pi(&self, err: f64, h: f64, history: History) -> Verdict {
        let alpha = 0.2 - 0.75 * self.beta;
        if err <= 1.0 || h <= self.min_step {
            let mut factor = if err > 0.0 {
                (self.safety * err.powf(-alpha) * history.prev_err.powf(self.beta))
                    .clamp(self.min_factor, self.max_factor)
            } else {
                self.max_factor
            };
            // A step just rejected was too large: do not grow it again at once.
            if history.rejected_before {
                factor = factor.min(1.0);
            }
            return Verdict::Accept {
                h_next: (h * factor).min(self.dt_max),
            };
        }
        let h = h * self.min_factor.max(self.safety * err.powf(-alpha));
        self.retry(h)
    }

    fn retry(&self, h: f64) -> Verdict {
        if h < self.min_step {
            Verdict::TooSmall { h }
        } else {
            Verdict::Retry { h }
        }
    }
}
