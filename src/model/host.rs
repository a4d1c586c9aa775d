//! Models supplied by the host program as functions (C callbacks, Rust closures), so a lab's
//! existing model code runs inside a session with snapshots, resume and pins.

use super::spec::{ModelKind, SimDefaults};
use crate::error::{Error, Result};

/// A host right-hand side (or aux) as a C function: `f(t, y, p, out, user_data)`, 0 = ok.
pub type CEvalFn = unsafe extern "C" fn(
    f64,
    *const f64,
    *const f64,
    *mut f64,
    *mut std::ffi::c_void,
) -> std::ffi::c_int;

/// A host event condition as a C function: `f(event, t, y, p, &fires, user_data)`, 0 = ok.
pub type CEventCondFn = unsafe extern "C" fn(
    usize,
    f64,
    *const f64,
    *const f64,
    *mut std::ffi::c_int,
    *mut std::ffi::c_void,
) -> std::ffi::c_int;

/// A host model's functions as plain C function pointers, so native loops can call them
/// directly: one indirect call per evaluation. The pointers and `user_data` stay valid as
/// long as the model that returned them.
#[derive(Debug, Clone, Copy)]
pub struct CFunctions {
    pub rhs: CEvalFn,
    pub aux: Option<CEvalFn>,
    pub event_cond: Option<CEventCondFn>,
    pub user_data: *mut std::ffi::c_void,
}

/// Equations implemented by the host. Errors are the host's non-zero return codes.
///
/// Implementations must be deterministic functions of their arguments (and of immutable
/// user data) for resume to be exact.
pub trait HostModel: Send + Sync {
    /// Derivatives (ODE) or next state (map) into `out`.
    fn rhs(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32>;
    /// Aux values into `out` (one per declared aux name). Default: none.
    fn aux(&self, _t: f64, _y: &[f64], _p: &[f64], _out: &mut [f64]) -> Result<(), i32> {
        Ok(())
    }
    /// Whether event `i` fires at this (committed or proposed) state.
    fn event_cond(&self, _i: usize, _t: f64, _y: &[f64], _p: &[f64]) -> Result<bool, i32> {
        Ok(false)
    }
    /// Applies event `i` in place.
    fn event_action(&self, _i: usize, _t: f64, _y: &mut [f64], _p: &mut [f64]) -> Result<(), i32> {
        Ok(())
    }
    fn has_jacobian(&self) -> bool {
        false
    }
    /// The same functions as C function pointers, when they are (C callback models):
    /// calling them must be exactly what `rhs`, `aux` and `event_cond` do.
    fn c_functions(&self) -> Option<CFunctions> {
        None
    }
    /// Dense row-major Jacobian ∂f_i/∂y_j, when `has_jacobian()`.
    fn jacobian(
        &self,
        _t: f64,
        _y: &[f64],
        _p: &[f64],
        _out: &mut [f64],
    ) -> Option<Result<(), i32>> {
        None
    }
}

/// Names, defaults and identity of a host model.
#[derive(Debug, Clone, PartialEq)]
pub struct HostModelDef {
    /// Stable identifier of the model (feeds the spec hash).
    pub id: String,
    /// Version of the host code (feeds the spec hash: bump it when the equations change).
    pub version: String,
    pub kind: ModelKind,
    pub state_names: Vec<String>,
    pub state_init: Vec<f64>,
    pub param_names: Vec<String>,
    pub param_init: Vec<f64>,
    pub aux_names: Vec<String>,
    /// Events, tested at the end of each step in this order (first match wins).
    pub event_names: Vec<String>,
    pub dt: f64,
    pub stepper: String,
}

impl HostModelDef {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.id.trim().is_empty() {
            return Err(Error::invalid("a host model needs a non-empty id"));
        }
        if self.state_names.is_empty() {
            return Err(Error::invalid("a host model needs at least one state"));
        }
        if self.state_names.len() != self.state_init.len() {
            return Err(Error::invalid(format!(
                "{} state names but {} initial values",
                self.state_names.len(),
                self.state_init.len()
            )));
        }
        if self.param_names.len() != self.param_init.len() {
            return Err(Error::invalid(format!(
                "{} parameter names but {} default values",
                self.param_names.len(),
                self.param_init.len()
            )));
        }
        let all = self
            .state_names
            .iter()
            .chain(&self.param_names)
            .chain(&self.aux_names);
        let total = self.state_names.len() + self.param_names.len() + self.aux_names.len();
        let mut seen: foldhash::HashSet<&str> =
            foldhash::HashSet::with_capacity_and_hasher(total, Default::default());
        for n in all {
            if n.is_empty() {
                return Err(Error::invalid("a host model has an empty variable name"));
            }
            if !seen.insert(n.as_str()) {
                return Err(Error::invalid(format!(
                    "duplicate name '{n}' in the host model definition"
                )));
            }
        }
        if !(self.dt > 0.0 && self.dt.is_finite()) {
            return Err(Error::invalid(format!(
                "the host model's default dt must be positive and finite, got {}",
                self.dt
            )));
        }
        Ok(())
    }

    /// The identity of the model as JSON (its SHA-256 is the spec hash). Serialised from
    /// borrowed fields, in this key order, without copying the names.
    pub(crate) fn canonical_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Canonical<'a> {
            host_model: &'a str,
            version: &'a str,
            kind: &'a str,
            states: &'a [String],
            state_init: Vec<u64>,
            params: &'a [String],
            param_init: Vec<u64>,
            aux: &'a [String],
            events: &'a [String],
            dt: u64,
            stepper: &'a str,
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        serde_json::to_string(&Canonical {
            host_model: &self.id,
            version: &self.version,
            kind: self.kind.as_str(),
            states: &self.state_names,
            state_init: bits(&self.state_init),
            params: &self.param_names,
            param_init: bits(&self.param_init),
            aux: &self.aux_names,
            events: &self.event_names,
            dt: self.dt.to_bits(),
            stepper: &self.stepper,
        })
        .unwrap_or_default()
    }

    pub(crate) fn sim_defaults(&self) -> SimDefaults {
        SimDefaults {
            t0: 0.0,
            t_end: 1.0,
            dt: self.dt,
            stepper: self.stepper.clone(),
            record: true,
            atol: 1e-8,
            rtol: 1e-5,
            max_steps: 1_000_000,
            stop: None,
            extra: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> HostModelDef {
        HostModelDef {
            id: "m".into(),
            version: "2".into(),
            kind: ModelKind::Ode,
            state_names: vec!["x".into(), "y\"q".into()],
            state_init: vec![1.5, -0.0],
            param_names: vec!["k".into()],
            param_init: vec![f64::NAN],
            aux_names: vec!["a".into()],
            event_names: vec!["e".into()],
            dt: 0.01,
            stepper: "rk4".into(),
        }
    }

    /// The spec hash of a host model is pinned in snapshot files: the canonical JSON must stay
    /// exactly what the earlier `json!` form produced.
    #[test]
    fn canonical_json_is_unchanged() {
        let d = def();
        let earlier = serde_json::json!({
            "host_model": d.id,
            "version": d.version,
            "kind": d.kind.as_str(),
            "states": d.state_names,
            "state_init": d.state_init.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "params": d.param_names,
            "param_init": d.param_init.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "aux": d.aux_names,
            "events": d.event_names,
            "dt": d.dt.to_bits(),
            "stepper": d.stepper,
        })
        .to_string();
        assert_eq!(d.canonical_json(), earlier);
    }
}
