//! Steppers: one method per file behind the [`Stepper`] trait.
//!
//! A stepper advances the state by one step. Everything it carries from one step to the next
//! (multistep history, start-up phase, dense-output data) is exported by [`Stepper::save`] as
//! named arrays and restored by [`Stepper::load`], which is what makes resume exact.

pub mod ab2;
pub mod ab3;
pub mod adams;
pub mod adaptive_implicit;
pub mod bdf;
pub mod bdf2;
pub mod bdf2a;
pub mod dense_lu;
pub mod erk;
pub mod euler;
pub mod initial_step;
pub mod map;
pub mod newton;
pub mod rk2;
pub mod rk4;
pub mod rk45;
pub mod sdirk2;
pub mod tr_bdf2a;
pub mod workspace;

use crate::error::{suggestion_suffix, Error, Result};
use crate::method::ModelKind;
pub use workspace::{Workspace, WsArray, WsData};

/// The right-hand side as a stepper sees it: parameters and lag history are bound.
pub trait Rhs {
    fn eval(&mut self, t: f64, y: &[f64], out: &mut [f64]) -> Result<()>;
    /// Dense row-major Jacobian when the model provides one.
    fn jacobian(&mut self, _t: f64, _y: &[f64], _out: &mut [f64]) -> Option<Result<()>> {
        None
    }
    /// True when `eval` depends on (t, y) and the parameters only (no lag history), so a
    /// value computed at (t, y) may be reused at the same (t, y) within a run.
    fn lag_free(&self) -> bool {
        false
    }
}

/// One runtime-configurable knob of a stepper and its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knob {
    pub name: &'static str,
    pub default: f64,
    pub help: &'static str,
}

/// Static description of a method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepperInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: ModelKind,
    pub adaptive: bool,
    pub implicit: bool,
    pub order: u32,
    /// Order of the embedded error estimator (adaptive methods).
    pub embedded_order: Option<u32>,
    /// The method can produce the state inside its last step (used to land on horizons).
    pub dense_output: bool,
    pub config: &'static [Knob],
    pub description: &'static str,
    /// The workspace layout snapshot files of this stepper had before its last layout
    /// change, if they can still be read (see [`LegacyLayout`]; older ones chained to it).
    pub legacy: Option<&'static LegacyLayout>,
}

/// An earlier workspace layout of a stepper, so that snapshot files written with it still
/// import: a file is of that layout when its knob names are `knob_names()` and its
/// `workspace_sig` is the one of `template` (the session computes it; nothing else is
/// guessed), and `upgrade` then turns its workspace and knob values into today's, which the
/// usual checks judge as any other file's.
#[derive(Debug)]
pub struct LegacyLayout {
    /// The knob names, in order, that files of that layout carry.
    pub knob_names: fn() -> Vec<&'static str>,
    /// The workspace a fresh stepper of `n` states saved in that layout.
    pub template: fn(usize) -> Workspace,
    /// Brings such a workspace and knob values to today's layout.
    pub upgrade: fn(&mut Workspace, &mut Vec<f64>),
    /// The layout before this one, if its files can still be read too (its own `upgrade`
    /// brings them to today's layout directly).
    pub older: Option<&'static LegacyLayout>,
}

impl LegacyLayout {
    /// This layout and every older one, newest first.
    pub fn chain(&'static self) -> impl Iterator<Item = &'static LegacyLayout> {
        std::iter::successors(Some(self), |l| l.older)
    }
}

/// The same description (each is a stepper's static): comparing the function pointers
/// would not be meaningful (their addresses may differ between codegen units).
impl PartialEq for LegacyLayout {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

/// Result of one successful step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The step actually taken (an adaptive method may shrink the requested one).
    pub h_used: f64,
    /// The step the method proposes next.
    pub h_next: f64,
}

pub trait Stepper: Send {
    fn info(&self) -> &'static StepperInfo;
    /// The carried state, as named arrays with a fixed layout.
    fn save(&self) -> Workspace;
    /// Restores the carried state saved by `save` (layout is checked).
    fn load(&mut self, ws: &[WsArray]) -> Result<()>;
    /// Forgets carried history: the next step starts the method afresh. Called for a fresh
    /// run and whenever the state changes other than by a step (an event action, `assign`).
    fn restart(&mut self);
    /// Computes the step from `(t, y)` with step size `h` into `y_new`.
    fn step(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        cfg: &[f64],
        y_new: &mut [f64],
    ) -> Result<StepOutcome>;
    /// Called once the step is committed with the final (possibly event-modified) state.
    fn commit(&mut self, _f: &mut dyn Rhs, _t_new: f64, _y_new: &[f64]) -> Result<()> {
        Ok(())
    }
    /// The step as data for a fused loop that runs many steps natively (see
    /// [`crate::method::StepForm`]); `None` for methods that have no such form.
    fn step_form(&self) -> Option<crate::method::StepForm> {
        None
    }
    /// The history a fused loop continues from and writes back, laid out as the form
    /// expects (Adams: the `f` history, newest first, `n` values each). `None` while the
    /// method is not in the steady state its form describes (an Adams start-up).
    fn fused_carry(&mut self) -> Option<&mut [f64]> {
        Some(&mut [])
    }
    /// After a fused loop that took steps with a deferred carry
    /// (the fused kernel's `defers_dense`): it wrote the last
    /// accepted step's start (its state, time and size) but not what follows from them;
    /// the method computes the rest exactly as its own step would have.
    fn finish_fused(&mut self, _f: &mut dyn Rhs) -> Result<()> {
        Ok(())
    }
    /// Dense output inside the last step: the state at `t`, if the method supports it.
    fn interpolate(&self, _t: f64, _out: &mut [f64]) -> bool {
        false
    }
}

/// Every stepper, in listing order.
pub fn all() -> &'static [&'static StepperInfo] {
    static ALL: [&StepperInfo; 12] = [
        &map::INFO,
        &euler::INFO,
        &rk2::INFO,
        &rk4::INFO,
        &rk45::INFO,
        &ab2::INFO,
        &ab3::INFO,
        &bdf2::INFO,
        &bdf2a::INFO,
        &sdirk2::INFO,
        &tr_bdf2a::INFO,
        &bdf::INFO,
    ];
    &ALL
}

/// Finds a stepper by name or alias (case-insensitive; `-` and `_` are interchangeable).
pub fn lookup(name: &str) -> Result<&'static StepperInfo> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let key = norm(name);
    all()
        .iter()
        .copied()
        .find(|i| norm(i.name) == key || i.aliases.iter().any(|a| norm(a) == key))
        .ok_or_else(|| {
            let names = all()
                .iter()
                .flat_map(|i| std::iter::once(&i.name).chain(i.aliases.iter()));
            Error::unknown(format!(
                "unknown stepper '{name}'{}; available: {}",
                suggestion_suffix(name, names.copied()),
                all().iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
            ))
        })
}

/// Creates a stepper for a model with `n` states.
pub fn create(info: &'static StepperInfo, n: usize) -> Box<dyn Stepper> {
    match info.name {
        "map" => Box::new(map::MapStepper::new(n)),
        "euler" => Box::new(erk::FixedErk::new(&euler::INFO, &euler::TABLEAU, n)),
        "rk2" => Box::new(erk::FixedErk::new(&rk2::INFO, &rk2::TABLEAU, n)),
        "rk4" => Box::new(erk::FixedErk::new(&rk4::INFO, &rk4::TABLEAU, n)),
        "rk45" => Box::new(rk45::Rk45::new(n)),
        "ab2" => Box::new(ab2::new(n)),
        "ab3" => Box::new(ab3::new(n)),
        "bdf2" => Box::new(bdf2::Bdf2::new(n)),
        "bdf2a" => Box::new(bdf2a::Bdf2a::new(n)),
        "sdirk2" => Box::new(sdirk2::Sdirk2::new(n)),
        "tr-bdf2a" => Box::new(tr_bdf2a::TrBdf2a::new(n)),
        "bdf" => Box::new(bdf::Bdf::new(n)),
        other => unreachable!("stepper '{other}' is listed but not constructible"),
    }
}

/// Checks a stepper's config vector, knob by knob and for the rules between knobs, with the
/// validation function of the stepper's knob set: the step controller's (rk45), the Newton
/// knobs (bdf2, sdirk2), or both (bdf2a, tr-bdf2a). Called wherever a config enters a
/// session — the model's `[sim]` defaults, a run's overrides, a snapshot file — so a stepper
/// never sees knobs it cannot use (`f64::clamp` panics when min_factor > max_factor). Errors are
/// [`InvalidArgument`](crate::error::ErrorKind::InvalidArgument) naming the knob and the rule.
pub fn validate_config(info: &StepperInfo, cfg: &[f64]) -> Result<()> {
    if cfg.len() != info.config.len() {
        return Err(Error::invalid(format!(
            "stepper '{}' has {} knobs, the config has {} values",
            info.name,
            info.config.len(),
            cfg.len()
        )));
    }
    let names: Vec<&str> = info.config.iter().map(|k| k.name).collect();
    let has = |set: &[Knob]| set.iter().all(|k| names.contains(&k.name));
    if has(&rk45::CONTROLLER_KNOBS) {
        rk45::validate_controller_knobs(info, cfg)?;
    }
    if has(&newton::NEWTON_KNOBS) {
        newton::NewtonConfig::from_cfg(info, cfg)?;
    }
    if info.name == bdf::INFO.name {
        bdf::Settings::from_cfg(info, cfg)?;
    }
    if info.name == rk45::INFO.name {
        rk45::validate_beta(cfg)?;
    }
    Ok(())
}

/// The work counters a stepper keeps in its workspace (bdf's, rk45's rejected attempts),
/// as a run summary shows them; `None` for steppers that keep none.
pub fn stats_json(info: &StepperInfo, ws: &[WsArray]) -> Option<serde_json::Value> {
    let value = if info.name == bdf::INFO.name {
        serde_json::to_value(bdf::Stats::from_workspace(ws).ok()?)
    } else if info.name == rk45::INFO.name {
        serde_json::to_value(rk45::Stats::from_workspace(ws).ok()?)
    } else {
        return None;
    };
    value.ok()
}

/// Index of knob `name` in a stepper's config vector.
pub fn knob_index(info: &StepperInfo, name: &str) -> Result<usize> {
    info.config
        .iter()
        .position(|k| k.name == name)
        .ok_or_else(|| {
            if info.config.is_empty() {
                Error::unknown(format!(
                    "stepper '{}' has no configuration knobs, so '{name}' cannot be set",
                    info.name
                ))
            } else {
                Error::unknown(format!(
                    "stepper '{}' has no knob '{name}'{}; its knobs: {}",
                    info.name,
                    suggestion_suffix(name, info.config.iter().map(|k| k.name)),
                    info.config
                        .iter()
                        .map(|k| k.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        })
}

/// Knob value by name from a config vector.
pub fn knob(info: &StepperInfo, cfg: &[f64], name: &str) -> f64 {
    info.config
        .iter()
        .position(|k| k.name == name)
        .map_or(f64::NAN, |i| cfg[i])
}

/// Settings parsed from a stepper's config vector, parsed (and checked) again only when the
/// vector changes, so a step does not look knobs up by name.
#[derive(Debug, Clone)]
pub struct KnobCache<T> {
    bits: Vec<u64>,
    value: Option<T>,
}

impl<T> Default for KnobCache<T> {
    fn default() -> Self {
        KnobCache {
            bits: Vec::new(),
            value: None,
        }
    }
}

impl<T: Copy> KnobCache<T> {
    pub fn get(&mut self, cfg: &[f64], parse: impl FnOnce(&[f64]) -> Result<T>) -> Result<T> {
        let same = self.bits.len() == cfg.len()
            && self.bits.iter().zip(cfg).all(|(b, v)| *b == v.to_bits());
        match self.value {
            Some(v) if same => Ok(v),
            _ => {
                let v = parse(cfg)?;
                self.bits = cfg.iter().map(|v| v.to_bits()).collect();
                self.value = Some(v);
                Ok(v)
            }
        }
    }
}

/// Error for a step that could not be completed.
pub fn step_failed(msg: impl Into<String>) -> Error {
    Error::new(crate::error::ErrorKind::StepFailed, msg)
}
