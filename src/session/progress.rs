//! Progress, cancel and observers during a run: callbacks the runner calls at a bounded rate
//! (every K steps, or at most every so many seconds — the clock is read every
//! `CLOCK_CHECK_STEPS` steps), never per step on the fast path. A callback that returns
//! [`Control::Stop`] ends the run after the step it saw: the session keeps everything up to
//! that step (status `USER_BREAK`), and a resumed run continues exactly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a progress or observer callback sees.
#[derive(Debug, Clone, Copy)]
pub struct RunProgress<'a> {
    /// Time of the committed state (recording frame).
    pub t: f64,
    /// Step label of the committed state (recording frame).
    pub step: u64,
    /// Fraction of this run's horizon done, 0..=1.
    pub fraction: f64,
    /// The committed state.
    pub state: &'a [f64],
}

/// A callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

type Callback = dyn FnMut(&RunProgress<'_>) -> Control + Send;

/// When a hook is called.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Every {
    /// After every step whose global step index is a multiple of this.
    Steps(u64),
    /// At most this often by wall time (checked every `CLOCK_CHECK_STEPS` steps).
    Seconds(f64),
}

/// Steps between two readings of the clock for a hook by wall time.
pub const CLOCK_CHECK_STEPS: u64 = 4096;

/// A progress or observer callback and its schedule.
#[derive(Clone)]
pub struct Hook {
    pub every: Every,
    callback: Arc<Mutex<Box<Callback>>>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("every", &self.every).finish()
    }
}

impl PartialEq for Hook {
    fn eq(&self, other: &Hook) -> bool {
        self.every == other.every && Arc::ptr_eq(&self.callback, &other.callback)
    }
}

impl Hook {
    pub fn new(every: Every, f: impl FnMut(&RunProgress<'_>) -> Control + Send + 'static) -> Hook {
        Hook {
            every,
            callback: Arc::new(Mutex::new(Box::new(f))),
        }
    }

    /// Refuses schedules that cannot be followed.
    pub fn validate(&self, what: &str) -> crate::error::Result<()> {
        match self.every {
            Every::Steps(0) => Err(crate::error::Error::invalid(format!(
                "{what}: every must be at least 1 step"
            ))),
            Every::Seconds(s) if !(s >= 0.0 && s.is_finite()) => Err(crate::error::Error::invalid(
                format!("{what}: every must be a finite, non-negative number of seconds, got {s}"),
            )),
            _ => Ok(()),
        }
    }

    /// Steps between calls (or clock readings).
    fn period(&self) -> u64 {
        match self.every {
            Every::Steps(k) => k.max(1),
            Every::Seconds(_) => CLOCK_CHECK_STEPS,
        }
    }

    fn call(&self, p: &RunProgress<'_>) -> Control {
        let mut f = self.callback.lock().unwrap_or_else(|e| e.into_inner());
        f(p)
    }
}

/// The hooks of one run and their clocks.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    hooks: Vec<(Hook, Option<Instant>)>,
}

impl Hooks {
    pub fn new(hooks: impl IntoIterator<Item = Hook>) -> Hooks {
        let now = Instant::now();
        Hooks {
            hooks: hooks.into_iter().map(|h| (h, Some(now))).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// The first step after `step` at which some hook is due (the fused loop stops there).
    pub fn next_due_step(&self, step: u64) -> Option<u64> {
        self.hooks
            .iter()
            .map(|(h, _)| {
                let k = h.period();
                (step / k).saturating_add(1).saturating_mul(k)
            })
            .min()
    }

    /// Calls the hooks due after the step just committed (global index `step`); true when
    /// one asked to stop.
    pub fn after_step(
        &mut self,
        step: u64,
        progress: impl Fn() -> (f64, u64, f64),
        y: &[f64],
    ) -> bool {
        let mut stop = false;
        for (hook, last) in &mut self.hooks {
            if step % hook.period() != 0 {
                continue;
            }
            if let Every::Seconds(s) = hook.every {
                let now = Instant::now();
                let waited = last.map_or(Duration::MAX, |l| now.duration_since(l));
                if waited.as_secs_f64() < s {
                    continue;
                }
                *last = Some(now);
            }
            let (t, label, fraction) = progress();
            let report = RunProgress {
                t,
                step: label,
                fraction,
                state: y,
            };
            stop |= hook.call(&report) == Control::Stop;
        }
        stop
    }
}
