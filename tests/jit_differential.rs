//! Native code and interpreter give the same bits: every built-in model (plus models that use
//! lag, aux, logs, a stop condition and every math function) under every stepper of its kind,
//! run through both backends, with every recorded sample, event log entry and the final session
//! state compared bit for bit; and every program evaluated directly at many points.
#![cfg(feature = "jit")]

use dynlib::model::{Env, LagView, ModelEval, ModelKind};
mod common;

use common::{all_samples as samples, event_bits as events, first_difference, sources};
use dynlib::{stepper, Backend, Model, RunOptions, Sim};

fn label(source: &str) -> &str {
    source.lines().next().unwrap_or(source)
}

/// Runs `model` with `stepper`: a first run, then a resumed one (which commits a pending
/// adaptive step and continues), recording every state and aux.
fn run(model: &Model, stepper: &str) -> Sim {
    let mut vars: Vec<String> = model.state_names.clone();
    vars.extend(model.aux_names.iter().map(|a| format!("aux.{a}")));
    let is_map = model.kind == ModelKind::Map;
    let dt = model.sim.dt;
    let horizon = |k: u64| {
        if is_map {
            RunOptions::new().n(k)
        } else {
            RunOptions::new().t(model.sim.t0 + k as f64 * dt)
        }
    };
    let mut sim = Sim::with_stepper(model, Some(stepper)).unwrap();
    let mut first = horizon(700).dt(dt).max_steps(1_000_000);
    if sim.stepper().adaptive {
        // Enough steps to compare, even where the controller would stride.
        first = first.config("dt_max", 10.0 * dt);
    }
    first.record_vars = Some(vars);
    sim.run(&first).unwrap();
    sim.run(&horizon(1500).resume(true).max_steps(1_000_000))
        .unwrap();
    sim
}

#[test]
fn every_model_and_stepper_gives_identical_bits() {
    let mut checked = 0;
    for source in sources() {
        let native = Model::load_with(&source, Backend::Native).unwrap();
        let interp = Model::load_with(&source, Backend::Interpreter).unwrap();
        assert_eq!(native.backend(), Backend::Native);
        assert_eq!(interp.backend(), Backend::Interpreter);
        assert_eq!(
            native.spec_hash, interp.spec_hash,
            "backend is not in the hash"
        );
        for info in stepper::all().iter().filter(|i| i.kind == native.kind) {
            let (a, b) = (run(&native, info.name), run(&interp, info.name));
            let what = format!("{} / {}", label(&source), info.name);
            let (ra, rb) = (a.results().unwrap(), b.results().unwrap());
            assert!(ra.len() > 10, "{what}: too few samples to compare");
            assert!(
                samples(ra) == samples(rb),
                "{what}: samples differ, {}",
                first_difference(&samples(ra), &samples(rb))
            );
            assert!(
                events(ra) == events(rb),
                "{what}: event logs differ, {}",
                first_difference(&events(ra), &events(rb))
            );
            assert!(
                a.session_state().bits_eq(b.session_state()),
                "{what}: final state differs: {:?} vs {:?}",
                a.session_state(),
                b.session_state()
            );
            checked += 1;
        }
    }
    // 12 ODE built-ins and 4 ODE extras × every ODE stepper, 7 maps and 1 map extra × map.
    let per_kind = |k: ModelKind| stepper::all().iter().filter(|i| i.kind == k).count();
    assert_eq!(
        checked,
        16 * per_kind(ModelKind::Ode) + 8 * per_kind(ModelKind::Map)
    );
    assert!(
        per_kind(ModelKind::Ode) >= 10,
        "implicit steppers are included"
    );
}

/// A small deterministic generator (no dependency on a random-number crate).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Inputs that probe edge semantics (signed zeros, infinities, NaN, ties, huge and tiny).
const SPECIAL: [f64; 12] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.5,
    -2.5,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    1e308,
    5e-324,
    0.5,
];

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_program_evaluates_identically_at_many_points() {
    let mut rng = Lcg(7);
    for source in sources() {
        let native = Model::load_with(&source, Backend::Native).unwrap();
        let interp = Model::load_with(&source, Backend::Interpreter).unwrap();
        let (n, na) = (native.n_states(), native.n_aux());
        let mut en = ModelEval::new(&native);
        let mut ei = ModelEval::new(&interp);
        let ring_len = native.lag_total;
        let mut heads = vec![0i64; n];
        for trial in 0..400 {
            let pick = |rng: &mut Lcg, scale: f64| {
                if trial % 4 == 3 {
                    SPECIAL[(rng.next() * SPECIAL.len() as f64) as usize]
                } else {
                    (rng.next() - 0.5) * scale
                }
            };
            let y: Vec<f64> = (0..n).map(|_| pick(&mut rng, 4.0)).collect();
            let p: Vec<f64> = native
                .param_init
                .iter()
                .map(|v| {
                    if trial % 2 == 0 {
                        *v
                    } else {
                        pick(&mut rng, 4.0)
                    }
                })
                .collect();
            let ring: Vec<f64> = (0..ring_len).map(|_| pick(&mut rng, 4.0)).collect();
            for (h, slot) in heads.iter_mut().zip(&native.lag_layout) {
                *h = if slot.len > 0 {
                    (rng.next() * slot.len as f64) as i64
                } else {
                    0
                };
            }
            let t = pick(&mut rng, 100.0);
            for shift in [0, 1] {
                let lag = LagView {
                    ring: &ring,
                    heads: &heads,
                    layout: &native.lag_layout,
                    shift,
                };
                let env = Env {
                    t,
                    y: &y,
                    p: &p,
                    lag,
                };
                let what = format!("{} at t={t}, y={y:?}, p={p:?}", label(&source));
                let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                en.rhs(&env, &mut a).unwrap();
                ei.rhs(&env, &mut b).unwrap();
                assert_eq!(bits(&a), bits(&b), "rhs of {what}: {a:?} vs {b:?}");
                let (mut a, mut b) = (vec![0.0; na], vec![0.0; na]);
                en.aux(&env, &mut a).unwrap();
                ei.aux(&env, &mut b).unwrap();
                assert_eq!(bits(&a), bits(&b), "aux of {what}: {a:?} vs {b:?}");
                let (mut a, mut b) = (vec![0.0; n * n], vec![0.0; n * n]);
                let ja = en.jacobian(&env, &mut a).map(Result::unwrap);
                let jb = ei.jacobian(&env, &mut b).map(Result::unwrap);
                assert_eq!(ja.is_some(), jb.is_some());
                assert_eq!(bits(&a), bits(&b), "jacobian of {what}");
                assert_eq!(en.stop(&env), ei.stop(&env), "stop of {what}");
                for (i, ev) in native.events.iter().enumerate() {
                    assert_eq!(
                        en.event_fires(i, &env).unwrap(),
                        ei.event_fires(i, &env).unwrap(),
                        "condition of event {i} of {what}"
                    );
                    let (mut a, mut b) = (vec![0.0; ev.log.len()], vec![0.0; ev.log.len()]);
                    en.event_log(i, &env, &mut a);
                    ei.event_log(i, &env, &mut b);
                    assert_eq!(bits(&a), bits(&b), "log of event {i} of {what}");
                    let (mut ya, mut pa) = (y.clone(), p.clone());
                    let (mut yb, mut pb) = (y.clone(), p.clone());
                    en.event_apply(i, t, &mut ya, &mut pa, lag).unwrap();
                    ei.event_apply(i, t, &mut yb, &mut pb, lag).unwrap();
                    assert_eq!(bits(&ya), bits(&yb), "action of event {i} of {what}");
                    assert_eq!(bits(&pa), bits(&pb), "action of event {i} of {what}");
                }
            }
        }
    }
}

#[test]
fn loading_a_model_twice_reuses_its_native_code() {
    let a = Model::load_with("builtin://ode/duffing", Backend::Native).unwrap();
    let b = Model::load("builtin://ode/duffing").unwrap();
    let (na, nb) = (a.native.as_ref().unwrap(), b.native.as_ref().unwrap());
    assert!(std::sync::Arc::ptr_eq(na, nb));
    let c = Model::load_with("builtin://ode/duffing", Backend::Interpreter).unwrap();
    assert!(c.native.is_none());
    assert_eq!(
        c.with_backend(Backend::Native).unwrap().backend(),
        Backend::Native
    );
}

/// The suite compiles native code with Cranelift's IR verifier on (.cargo/config.toml), so
/// malformed generated IR fails here instead of reaching users as a miscompile.
#[test]
fn the_suite_runs_with_the_ir_verifier_on() {
    assert!(
        std::env::var_os("DYNLIB_JIT_VERIFY").is_some(),
        "DYNLIB_JIT_VERIFY is not set: is .cargo/config.toml in place?"
    );
}
