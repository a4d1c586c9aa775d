//! Numerical checks against independent references: analytic solutions, a second method and
//! the measured convergence order of every stepper.

use dynlib::{Model, RunOptions, Sim};

/// x' = -a x + sin(t): non-autonomous so every stage time matters. Exact solution with
/// x(0) = 1, a = 1: x(t) = 1.5 e^{-t} + (sin t - cos t)/2.
const FORCED: &str = "inline:\n[model]\ntype=\"ode\"\n[states]\nx = 1.0\n[params]\na = 1.0\n[equations.rhs]\nx = \"-a*x + sin(t)\"\n";

fn exact(t: f64) -> f64 {
    1.5 * (-t).exp() + (t.sin() - t.cos()) / 2.0
}

fn error_at_2(stepper: &str, dt: f64) -> f64 {
    let model = Model::load(FORCED).unwrap();
    let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
    sim.run(&RunOptions::new().t(2.0).dt(dt).record(false))
        .unwrap();
    (sim.state()[0] - exact(2.0)).abs()
}

#[test]
fn fixed_step_methods_converge_at_their_order() {
    for (stepper, order) in [
        ("euler", 1.0),
        ("rk2", 2.0),
        ("rk4", 4.0),
        ("ab2", 2.0),
        ("ab3", 3.0),
    ] {
        let e1 = error_at_2(stepper, 0.02);
        let e2 = error_at_2(stepper, 0.01);
        let observed = (e1 / e2).log2();
        // Halving dt divides the error by about 2^p.
        assert!(
            (observed - order).abs() < 0.25,
            "{stepper}: observed order {observed:.3} (errors {e1:.3e}, {e2:.3e}), expected {order}"
        );
    }
}

#[test]
fn rk45_meets_its_tolerance_on_a_known_solution() {
    let model = Model::load(FORCED).unwrap();
    for rtol in [1e-4, 1e-6, 1e-8] {
        let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
        sim.run(
            &RunOptions::new()
                .t(2.0)
                .config("rtol", rtol)
                .config("atol", rtol * 1e-2),
        )
        .unwrap();
        let err = (sim.state()[0] - exact(2.0)).abs();
        // Global error within 10x the local tolerance scale (|x| ~ 0.9 on [0, 2]).
        assert!(err < 10.0 * rtol, "rtol {rtol}: error {err:.3e}");
        // Every interior sample is a step, and matches the exact solution as well.
        let rec = sim.results().unwrap();
        for i in 0..rec.len() {
            let e = (rec.columns[0][i] - exact(rec.t[i])).abs();
            assert!(e < 10.0 * rtol, "rtol {rtol}, t {}: {e:.3e}", rec.t[i]);
        }
    }
}

#[test]
fn rk45_dense_output_is_accurate_inside_a_step() {
    let model = Model::load(FORCED).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    // Horizons that fall inside steps: the output comes from the interpolant.
    for (i, t) in [0.3, 0.71, 1.234, 2.0].iter().enumerate() {
        sim.run(
            &RunOptions::new()
                .t(*t)
                .resume(i > 0)
                .config("rtol", 1e-9)
                .config("atol", 1e-11),
        )
        .unwrap();
        assert_eq!(sim.time(), *t);
        let e = (sim.state()[0] - exact(*t)).abs();
        assert!(e < 1e-8, "t {t}: interpolation error {e:.3e}");
    }
}

#[test]
fn lorenz_rk4_agrees_with_tight_rk45() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut a = Sim::with_stepper(&model, Some("rk4")).unwrap();
    a.run(&RunOptions::new().t(1.0).dt(1e-3).record(false))
        .unwrap();
    let mut b = Sim::with_stepper(&model, Some("rk45")).unwrap();
    b.run(
        &RunOptions::new()
            .t(1.0)
            .record(false)
            .config("rtol", 1e-12)
            .config("atol", 1e-12),
    )
    .unwrap();
    for (x, y) in a.state().iter().zip(b.state()) {
        // rk4 at dt = 1e-3 has a global error of order 1e-8 here.
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
}

fn spike_times(dt: f64) -> Vec<f64> {
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().t(300.0).dt(dt).record(false))
        .unwrap();
    sim.results().unwrap().events.iter().map(|e| e.t).collect()
}

#[test]
fn izhikevich_spikes_periodically_and_spike_times_converge() {
    let coarse = spike_times(0.04);
    let mid = spike_times(0.02);
    let fine = spike_times(0.01);
    assert!(
        fine.len() >= 5,
        "regular spiking expected, got {} spikes",
        fine.len()
    );
    // Periodic after the first interval: inter-spike intervals agree within 1%.
    let isi: Vec<f64> = fine.windows(2).map(|w| w[1] - w[0]).collect();
    let last = *isi.last().unwrap();
    for d in &isi[1..] {
        assert!((d - last).abs() < 0.01 * last, "intervals {isi:?}");
    }
    // Spike times are quantised to the step; the difference shrinks as dt does.
    assert_eq!(coarse.len(), fine.len());
    assert_eq!(mid.len(), fine.len());
    let d1: f64 = coarse
        .iter()
        .zip(&fine)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let d2: f64 = mid
        .iter()
        .zip(&fine)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        d2 < d1,
        "spike-time differences do not shrink: {d1} then {d2}"
    );
}

#[test]
fn fixed_steps_lie_on_the_grid_without_drift() {
    let model = Model::load("builtin://ode/expdecay").unwrap();
    let mut sim = Sim::with_stepper(&model, Some("euler")).unwrap();
    sim.run(&RunOptions::new().t(1.0).dt(0.1)).unwrap();
    let rec = sim.results().unwrap();
    // The original system accumulated t += dt and took an 11th micro-step; here 10 steps.
    assert_eq!(rec.len(), 11);
    for (k, t) in rec.t.iter().enumerate() {
        assert_eq!(*t, k as f64 * 0.1);
    }
    assert!((sim.state()[0] - 0.9f64.powi(10)).abs() < 1e-15);
    // An off-grid horizon shortens only the last step.
    sim.run(&RunOptions::new().t(0.25).dt(0.1)).unwrap();
    let rec = sim.results().unwrap();
    assert_eq!(rec.t, vec![0.0, 0.1, 0.2, 0.25]);
}
