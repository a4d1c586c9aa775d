//! Numbers measured on the original system (see shared reference notes, section 4.4 and 5.1),
//! checked here to the printed precision.

use dynlib::{Model, RunOptions, Sim};

fn run_final(uri: &str, stepper: &str, opts: RunOptions) -> Vec<f64> {
    let model = Model::load(uri).unwrap();
    let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
    sim.run(&opts).unwrap();
    sim.state().to_vec()
}

#[test]
fn every_builtin_model_loads_and_runs() {
    for (id, _) in dynlib::model::builtin::BUILTINS {
        let model = Model::load(&format!("builtin://{id}")).unwrap_or_else(|e| panic!("{id}: {e}"));
        let mut sim = Sim::new(&model).unwrap();
        let opts = if model.kind == dynlib::model::ModelKind::Map {
            RunOptions::new().n(10)
        } else {
            RunOptions::new().t(0.1)
        };
        sim.run(&opts).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(sim.state().iter().all(|v| v.is_finite()), "{id}");
    }
}

#[test]
fn lorenz_rk4_matches_the_reference_at_t1() {
    let y = run_final(
        "builtin://ode/lorenz",
        "rk4",
        RunOptions::new().t(1.0).dt(0.01),
    );
    let want = [-9.3786158072, -8.3570599553, 29.3624037501];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
}

#[test]
fn expdecay_rk4_matches_the_reference() {
    let y = run_final(
        "builtin://ode/expdecay",
        "rk4",
        RunOptions::new().t(1.0).dt(0.1),
    );
    assert!((y[0] - 0.367879774412).abs() < 1e-12, "{}", y[0]);
}

#[test]
fn izhikevich_rk4_matches_the_reference_at_t100() {
    let y = run_final(
        "builtin://ode/izhikevich",
        "rk4",
        RunOptions::new().t(100.0).dt(0.01),
    );
    assert!((y[0] - -66.730).abs() < 1e-3, "v = {}", y[0]);
    assert!((y[1] - -5.9273).abs() < 1e-4, "u = {}", y[1]);
}

#[test]
fn henon_and_logistic_iterates_match_direct_iteration() {
    let model = Model::load("builtin://map/henon").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().n(5).dt(1.0)).unwrap();
    let x = sim.results().unwrap().column("x").unwrap().to_vec();
    let want = [0.0, 1.0, -0.4, 1.076, -0.7408864, 0.55432228];
    // The reference prints 8 significant digits.
    for (a, b) in x.iter().zip(want) {
        assert!((a - b).abs() < 5e-9, "{a} vs {b}");
    }
    let model = Model::load("builtin://map/logistic").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().n(3)).unwrap();
    let x = sim.results().unwrap().column("x").unwrap().to_vec();
    let mut d = 0.1f64;
    for v in x {
        assert_eq!(v.to_bits(), d.to_bits());
        d = 4.0 * d * (1.0 - d);
    }
}
