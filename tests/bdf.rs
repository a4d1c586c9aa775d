//! The variable-order BDF stepper `bdf`: accuracy against analytic and reference solutions,
//! tolerance proportionality, the order and step selection, Jacobian and LU reuse, knob
//! checks, failures that change nothing, and exact resume on stiff problems.

use dynlib::stepper::bdf::Stats;
use dynlib::stepper::WsData;
use dynlib::{ErrorKind, Model, RunOptions, Sim};

const ROBERTSON: &str = r#"inline:
[model]
type = "ode"
name = "Robertson"
[states]
y1 = 1.0
y2 = 0.0
y3 = 0.0
[params]
k1 = 0.04
k2 = 3.0e7
k3 = 1.0e4
[equations.rhs]
y1 = "-k1*y1 + k3*y2*y3"
y2 = "k1*y1 - k3*y2*y3 - k2*y2^2"
y3 = "k2*y2^2"
[equations.jacobian]
expr = [
  ["-k1", "k3*y3", "k3*y2"],
  ["k1", "-k3*y3 - 2*k2*y2", "-k3*y2"],
  ["0", "2*k2*y2", "0"],
]
"#;

/// Robertson at t = 1e5 (the reference of tests/implicit.rs: SciPy Radau IIA at rtol 1e-12).
const ROBERTSON_1E5: [f64; 3] = [
    1.786592114209989e-2,
    7.274751468436479e-8,
    9.821340061103877e-1,
];

/// x' = -a x + sin(t), x(0) = 1, a = 1: x(t) = 1.5 e^{-t} + (sin t - cos t)/2.
const FORCED: &str = "inline:\n[model]\ntype=\"ode\"\n[states]\nx = 1.0\n[params]\na = 1.0\n[equations.rhs]\nx = \"-a*x + sin(t)\"\n";

fn forced_exact(t: f64) -> f64 {
    1.5 * (-t).exp() + (t.sin() - t.cos()) / 2.0
}

fn run(uri: &str, opts: RunOptions) -> Sim {
    let model = Model::load(uri).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("bdf")).unwrap();
    sim.run(&opts.record(false))
        .unwrap_or_else(|e| panic!("bdf on {uri}: {e}"));
    sim
}

fn stats(sim: &Sim) -> Stats {
    Stats::from_workspace(&sim.session_state().stepper_ws).unwrap()
}

fn ws_i64(sim: &Sim, name: &str) -> Vec<i64> {
    let ws = &sim.session_state().stepper_ws;
    match &ws.iter().find(|a| a.name == name).unwrap().data {
        WsData::I64(v) => v.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn robertson_matches_the_reference_at_1e5_with_both_jacobians() {
    for mode in [1.0, 0.0] {
        let sim = run(
            ROBERTSON,
            RunOptions::new()
                .t(1e5)
                .config("rtol", 1e-6)
                .config("atol", 1e-12)
                .config("jacobian_mode", mode),
        );
        let y = sim.state();
        let rel: Vec<f64> = y
            .iter()
            .zip(ROBERTSON_1E5)
            .map(|(a, b)| ((a - b) / b).abs())
            .collect();
        let st = stats(&sim);
        eprintln!(
            "robertson bdf (jacobian_mode {mode}): {} steps, {st:?}, relative errors {rel:?}",
            sim.step_count()
        );
        assert!((y.iter().sum::<f64>() - 1.0).abs() < 1e-8);
        assert!(rel.iter().all(|r| *r < 3e-5), "{rel:?}");
    }
}
