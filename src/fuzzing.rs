//! Fuzz targets, shared by the cargo-fuzz harnesses in `fuzz/` and the test suite (which runs
//! each for a bounded number of deterministic inputs). Not part of the supported API.
//!
//! Each target takes arbitrary input and must return — an error is fine — without panicking,
//! hanging or allocating beyond the documented limits; a failed call must change nothing.
//! A violated property panics, which is what both harnesses detect.

use std::sync::LazyLock;

use crate::model::{Backend, Model};
use crate::session::{RunOptions, Sim};

/// A forced oscillator with delayed feedback and an event changing a parameter: state in every
/// workspace bucket (stepper history, lag ring, pending step).
const ODE: &str = r#"
[model]
type = "ode"
name = "fuzz oscillator"
[states]
u = 0.5
v = -0.2
[params]
w = 3.0
hits = 0.0
[aux]
amp = "sqrt(u^2 + v^2)"
[equations.rhs]
u = "v"
v = "-w*u - 0.05*v + 0.2*lag_u(3) + 0.1*sin(t)"
[events.hit]
cond = "cross_up(u, 0.4)"
action = """
v = v - 0.03
hits = hits + 1
"""
log = ["t", "u", "hits"]
"#;

const MAP: &str = r#"
[model]
type = "map"
[states]
x = 0.2
[params]
r = 3.8
[equations.rhs]
x = "r*x*(1 - x) + 0.001*lag_x(2)"
"#;

/// The steppers whose files the snapshot target imports: one of each workspace kind.
pub const SNAPSHOT_STEPPERS: [&str; 7] = ["map", "rk4", "rk45", "ab3", "bdf2", "tr-bdf2a", "bdf"];

static MODELS: LazyLock<(Model, Model)> = LazyLock::new(|| {
    (
        Model::from_toml_with(ODE, Backend::Interpreter).expect("fuzz ODE model"),
        Model::from_toml_with(MAP, Backend::Interpreter).expect("fuzz map model"),
    )
});

fn model_for(stepper: &str) -> &'static Model {
    if stepper == "map" {
        &MODELS.1
    } else {
        &MODELS.0
    }
}

fn horizon(stepper: &str, sim: &Sim, steps: u64) -> RunOptions {
    if stepper == "map" {
        let st = sim.session_state();
        RunOptions::new().n((st.step - st.step_shift).saturating_add(steps))
    } else {
        let t = sim.time() - sim.session_state().time_shift;
        RunOptions::new().t(t + steps as f64 * 0.01)
    }
}

/// Valid snapshot files of every session the snapshot target tries, as a starting corpus for
/// mutation: one per stepper, taken part-way through a run (pending step, full lag rings).
pub fn snapshot_corpus() -> Vec<Vec<u8>> {
    SNAPSHOT_STEPPERS
        .iter()
        .map(|stepper| {
            let mut sim = Sim::with_stepper(model_for(stepper), Some(stepper)).expect("session");
            let first = if *stepper == "map" {
                RunOptions::new().n(37)
            } else {
                RunOptions::new().t(0.537).dt(0.01)
            };
            sim.run(&first.record(false)).expect("corpus run");
            sim.serialize_snapshot(None).expect("corpus snapshot")
        })
        .collect()
}

/// What one input did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Sessions that accepted the file.
    pub accepted: usize,
    /// Sessions that refused it.
    pub refused: usize,
    /// Accepted files whose resume then failed with an error (allowed, but counted: import
    /// should catch what a resume relies on).
    pub resume_errors: usize,
}

/// The snapshot-import target: offers `bytes` to a session of each stepper in
/// [`SNAPSHOT_STEPPERS`] and to `inspect_snapshot_bytes`. A refused file must leave the session
/// bit-identical; an accepted one must hold exactly the file's state and resume (a bounded
/// run) without panicking.
pub fn snapshot_import(bytes: &[u8]) -> ImportOutcome {
    let mut out = ImportOutcome::default();
    let _ = crate::session::inspect_snapshot_bytes(bytes);
    for stepper in SNAPSHOT_STEPPERS {
        let mut sim = Sim::with_stepper(model_for(stepper), Some(stepper)).expect("session");
        let before = sim.session_state().clone();
        match sim.deserialize_snapshot(bytes) {
            Err(_) => {
                out.refused += 1;
                assert!(
                    sim.session_state().bits_eq(&before),
                    "a refused import changed the {stepper} session"
                );
            }
            Ok(()) => {
                out.accepted += 1;
                // The state is the file's: serializing it again gives a file that imports to
                // the same state.
                let again = sim.serialize_snapshot(None).expect("re-serialize");
                let mut other =
                    Sim::with_stepper(model_for(stepper), Some(stepper)).expect("session");
                other
                    .deserialize_snapshot(&again)
                    .expect("a re-serialized accepted file must import");
                assert!(other.session_state().bits_eq(sim.session_state()));
                let opts = horizon(stepper, &sim, 20).resume(true).max_steps(200);
                if let Err(e) = sim.run(&opts) {
                    out.resume_errors += 1;
                    if std::env::var_os("DYNLIB_FUZZ_VERBOSE").is_some() {
                        eprintln!("{stepper}: resume after import failed: {e}");
                    }
                }
            }
        }
    }
    out
}

/// The model-loading target: `text` as a model file. Loading may fail with an error; a loaded
/// model gets a session with its default stepper and a short bounded run (errors allowed).
/// With `native`, the native backend is tried too and must agree with the interpreter bit for
/// bit when both run.
pub fn model_load(text: &str, native: bool) -> bool {
    let Ok(model) = Model::from_toml_with(text, Backend::Interpreter) else {
        return false;
    };
    let run = |m: &Model| -> Option<(Vec<u64>, f64)> {
        let mut sim = Sim::new(m).ok()?;
        let t_end = m.sim.t0 + 0.2;
        // Every run is bounded: by max_steps, and a fixed-step horizon beyond 2^53 steps
        // (a subnormal dt, say) is refused up front.
        let opts = match m.kind {
            crate::model::ModelKind::Map => RunOptions::new().n(20),
            crate::model::ModelKind::Ode => RunOptions::new().t(t_end),
        };
        sim.run(&opts.max_steps(500)).ok()?;
        let bits = sim.state().iter().map(|v| v.to_bits()).collect();
        Some((bits, sim.time()))
    };
    let interpreted = run(&model);
    if native {
        if let Ok(m) = Model::from_toml_with(text, Backend::Native) {
            assert_eq!(m.spec_hash, model.spec_hash);
            let compiled = run(&m);
            if let (Some(a), Some(b)) = (&interpreted, &compiled) {
                let same = a.1.to_bits() == b.1.to_bits()
                    && a.0.iter().zip(&b.0).all(|(x, y)| {
                        x == y || (f64::from_bits(*x).is_nan() && f64::from_bits(*y).is_nan())
                    });
                assert!(same, "native code and the interpreter disagree on:\n{text}");
            }
        }
    }
    true
}
