//! The implicit steppers: bdf2, sdirk2 (fixed step) and bdf2a, tr-bdf2a (adaptive).
//! Convergence orders on analytic solutions, stiff Van der Pol against rk45, Robertson's
//! kinetics against a reference solution, Lorenz at t = 1, Jacobian modes and failures, and
//! bdf2a's Jacobian and factorisation kept across steps: reused, dropped by a restart,
//! damaged ones refused; both adaptive ones exact across resumes and snapshot files at
//! random seams on stiff problems.

use dynlib::stepper::{lookup, WsData};
use dynlib::{ErrorKind, Model, RunOptions, Sim};
use proptest::prelude::*;

const FIXED: [&str; 2] = ["bdf2", "sdirk2"];
const ADAPTIVE: [&str; 2] = ["bdf2a", "tr-bdf2a"];

/// x' = -a x + sin(t), x(0) = 1, a = 1: x(t) = 1.5 e^{-t} + (sin t - cos t)/2.
const FORCED: &str = "inline:\n[model]\ntype=\"ode\"\n[states]\nx = 1.0\n[params]\na = 1.0\n[equations.rhs]\nx = \"-a*x + sin(t)\"\n";

fn forced_exact(t: f64) -> f64 {
    1.5 * (-t).exp() + (t.sin() - t.cos()) / 2.0
}

/// Stiff and smooth: x' = -k (x - cos t) - sin t, x(0) = 1 has the solution x = cos t; every
/// other solution is pulled onto it at rate k = 1e4. Explicit methods need dt < 2/k here.
const STIFF_LINEAR: &str = "inline:\n[model]\ntype=\"ode\"\n[states]\nx = 1.0\n[params]\nk = 1.0e4\n[equations.rhs]\nx = \"-k*(x - cos(t)) - sin(t)\"\n";

/// Robertson's chemical kinetics (Robertson 1966; Hairer & Wanner, Solving ODEs II, §IV.1).
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

/// Robertson at t = 1e5, computed independently (SciPy's Radau IIA, rtol 1e-12, atol 1e-14
/// for y1, y3 and 1e-20 for y2; Radau at rtol 1e-10 and BDF/LSODA at 1e-12 agree to 2e-10
/// relative). The same runs reproduce the literature values at t = 40,
/// (0.7158270687193135, 9.185534764557763e-6, 0.2841637457458802), to 1e-12 relative.
const ROBERTSON_1E5: [f64; 3] = [
    1.786592114209989e-2,
    7.274751468436479e-8,
    9.821340061103877e-1,
];

fn run(uri: &str, stepper: &str, opts: RunOptions) -> Sim {
    let model = Model::load(uri).unwrap();
    let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
    sim.run(&opts.record(false))
        .unwrap_or_else(|e| panic!("{stepper} on {uri}: {e}"));
    sim
}

fn forced_error(stepper: &str, dt: f64) -> f64 {
    let sim = run(FORCED, stepper, RunOptions::new().t(2.0).dt(dt));
    (sim.state()[0] - forced_exact(2.0)).abs()
}

#[test]
fn registry_lists_the_implicit_methods_with_aliases() {
    for (name, alias, adaptive) in [
        ("bdf2", "bdf2_jit", false),
        ("sdirk2", "alexander2", false),
        ("sdirk2", "sdirk2_jit", false),
        ("bdf2a", "bdf2a_jit", true),
        ("tr-bdf2a", "trbdf2a", true),
    ] {
        let info = lookup(alias).unwrap();
        assert_eq!(info.name, name);
        assert!(info.implicit, "{name}");
        assert_eq!(info.adaptive, adaptive, "{name}");
        assert_eq!(info.order, 2);
        let knobs: Vec<&str> = info.config.iter().map(|k| k.name).collect();
        for k in ["newton_tol", "newton_max_iter", "jac_eps", "jacobian_mode"] {
            assert!(knobs.contains(&k), "{name} lacks {k}");
        }
        if adaptive {
            assert_eq!(
                knobs,
                [
                    "atol",
                    "rtol",
                    "safety",
                    "min_factor",
                    "max_factor",
                    "max_tries",
                    "min_step",
                    "newton_tol",
                    "newton_max_iter",
                    "jac_eps",
                    "dt_max",
                    "jacobian_mode"
                ]
            );
            // bdf2a's predictor-corrector estimate and tr-bdf2a's local truncation error
            // estimate are both of order 2 (local error O(h³)).
            assert_eq!(info.embedded_order, Some(2), "{name}");
        }
    }
}

#[test]
fn fixed_step_implicit_methods_converge_at_order_two() {
    for stepper in FIXED {
        let e1 = forced_error(stepper, 0.02);
        let e2 = forced_error(stepper, 0.01);
        let observed = (e1 / e2).log2();
        eprintln!("{stepper}: forced errors {e1:.3e}, {e2:.3e}, order {observed:.3}");
        assert!(
            (observed - 2.0).abs() < 0.25,
            "{stepper}: observed order {observed:.3} (errors {e1:.3e}, {e2:.3e})"
        );
    }
}

#[test]
fn fixed_step_implicit_methods_are_stable_and_accurate_on_a_stiff_problem() {
    // dt is 200-400 times the explicit stability limit 2/k = 2e-4.
    let err = |stepper: &str, dt: f64| {
        let sim = run(STIFF_LINEAR, stepper, RunOptions::new().t(2.0).dt(dt));
        (sim.state()[0] - 2.0f64.cos()).abs()
    };
    for stepper in FIXED {
        let (e1, e2) = (err(stepper, 0.08), err(stepper, 0.04));
        eprintln!(
            "{stepper}: stiff errors {e1:.3e}, {e2:.3e}, order {:.3}",
            (e1 / e2).log2()
        );
        assert!(e1 < 2e-6 && e2 < e1, "{stepper}: errors {e1:.3e}, {e2:.3e}");
    }
    // BDF2 keeps its order on this Prothero–Robinson-type problem. SDIRK2 has stage order 1
    // and shows the classic order reduction in the stiff regime (measured: 0.89), so only
    // its accuracy is asserted above.
    let (e1, e2) = (err("bdf2", 0.08), err("bdf2", 0.04));
    let observed = (e1 / e2).log2();
    assert!(
        (observed - 2.0).abs() < 0.25,
        "bdf2: observed order {observed:.3} (errors {e1:.3e}, {e2:.3e})"
    );
    // The explicit rk4 blows up at the same step.
    let model = Model::load(STIFF_LINEAR).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
    let e = sim
        .run(&RunOptions::new().t(2.0).dt(0.04).record(false))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite, "{e}");
}

#[test]
fn adaptive_implicit_methods_meet_their_tolerance_and_interpolate() {
    let model = Model::load(FORCED).unwrap();
    for stepper in ADAPTIVE {
        let mut last_err = f64::INFINITY;
        for rtol in [1e-4, 1e-6, 1e-8] {
            let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
            sim.run(
                &RunOptions::new()
                    .t(2.0)
                    .config("rtol", rtol)
                    .config("atol", rtol * 1e-2)
                    .config("newton_tol", 1e-12),
            )
            .unwrap();
            let rec = sim.results().unwrap();
            let err = rec
                .t
                .iter()
                .zip(&rec.columns[0])
                .map(|(t, x)| (x - forced_exact(*t)).abs())
                .fold(0.0, f64::max);
            eprintln!(
                "{stepper}: rtol {rtol:.0e}: {} steps, max error {err:.3e}",
                sim.step_count()
            );
            // Shrinking with the tolerance. Both control an asymptotically correct local
            // error of order 2 (bdf2a's Milne estimate, tr-bdf2a's truncation error), so the
            // global error follows rtol^(2/3), the law of per-step control (|x| ~ 0.9 on
            // [0, 2]; measured tr-bdf2a 4.3e-4, 2.0e-5, 9.4e-7 and bdf2a 8.0e-4, 4.2e-5,
            // 2.1e-6: 0.2-0.4x of the bound).
            let bound = rtol.powf(2.0 / 3.0);
            assert!(err < bound, "{stepper}, rtol {rtol}: error {err:.3e}");
            assert!(err < last_err);
            last_err = err;
        }
        // Horizons inside steps come from the quadratic dense output.
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        for (i, t) in [0.3, 0.71, 1.234, 2.0].iter().enumerate() {
            sim.run(
                &RunOptions::new()
                    .t(*t)
                    .resume(i > 0)
                    .config("rtol", 1e-7)
                    .config("atol", 1e-9),
            )
            .unwrap();
            assert_eq!(sim.time(), *t);
            let e = (sim.state()[0] - forced_exact(*t)).abs();
            // The global error of the run plus the quadratic's: the rtol^(2/3) = 2.2e-5 law
            // of both (tr-bdf2a measured 1.7e-6 at t = 0.3).
            let bound = 2.2e-5;
            assert!(e < bound, "{stepper}, t {t}: interpolation error {e:.3e}");
        }
        let rec = sim.results().unwrap();
        assert!(
            rec.interpolated.count() >= 3,
            "{stepper}: horizons inside steps are interpolated"
        );
    }
}

#[test]
fn stiff_van_der_pol_takes_far_fewer_steps_than_rk45() {
    // mu = 1000: relaxation oscillations with period (3 - 2 ln 2)·mu + O(mu^(-1/3)) ≈ 1614.
    // [0, 2000] covers a full period and ends on a slow branch, where the solution is
    // insensitive to small timing differences of the jumps.
    let t_end = 2000.0;
    let opts = || {
        RunOptions::new()
            .t(t_end)
            .params(&[1000.0])
            .max_steps(20_000_000)
    };
    let rk45 = run("builtin://ode/vanderpol", "rk45", opts());
    let n_rk45 = rk45.step_count();
    let x_ref = rk45.state()[0];
    for stepper in ADAPTIVE {
        let sim = run("builtin://ode/vanderpol", stepper, opts());
        let n = sim.step_count();
        let ratio = n_rk45 as f64 / n as f64;
        eprintln!(
            "vdp mu=1000 on [0, {t_end}]: rk45 {n_rk45} steps, {stepper} {n} steps, ratio \
             {ratio:.0}; x = {} vs rk45 {x_ref}",
            sim.state()[0]
        );
        assert!(
            ratio >= 50.0,
            "{stepper}: {n} steps vs rk45 {n_rk45} (ratio {ratio:.1})"
        );
        assert!(
            (sim.state()[0] - x_ref).abs() < 1e-2 * x_ref.abs(),
            "{stepper}: x(T) = {} vs rk45 {x_ref}",
            sim.state()[0]
        );
    }
}

#[test]
fn robertson_kinetics_match_the_reference_at_1e5() {
    for stepper in ADAPTIVE {
        for mode in [0.0, 1.0] {
            let sim = run(
                ROBERTSON,
                stepper,
                RunOptions::new()
                    .t(1e5)
                    .config("rtol", 1e-6)
                    .config("atol", 1e-12)
                    .config("newton_tol", 1e-10)
                    .config("jacobian_mode", mode),
            );
            let y = sim.state();
            let rel: Vec<f64> = y
                .iter()
                .zip(ROBERTSON_1E5)
                .map(|(a, b)| ((a - b) / b).abs())
                .collect();
            eprintln!(
                "robertson {stepper} (jacobian_mode {mode}): {} steps, y = {y:?}, relative \
                 errors {rel:?}",
                sim.step_count()
            );
            // Mass is conserved by every linear multistep/RK method up to the Newton error.
            assert!((y.iter().sum::<f64>() - 1.0).abs() < 1e-8);
            // At rtol 1e-6 every component is within 3·rtol^(2/3) = 3e-4 relative of the
            // reference: both error estimates are of order 2 (see the forced problem above;
            // tr-bdf2a measured 6.5e-5, 6.6e-5, 1.2e-6; bdf2a 1.1e-4, 1.1e-4, 2e-6).
            let bound = 3e-4;
            assert!(rel.iter().all(|r| *r < bound), "{stepper}: {rel:?}");
        }
    }
}

fn lorenz_reference() -> Vec<f64> {
    let sim = run(
        "builtin://ode/lorenz",
        "rk45",
        RunOptions::new()
            .t(1.0)
            .config("rtol", 1e-12)
            .config("atol", 1e-12),
    );
    sim.state().to_vec()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn lorenz_at_t1_is_within_the_error_of_each_methods_order() {
    let reference = lorenz_reference();
    for stepper in FIXED {
        let err = |dt: f64| {
            let sim = run(
                "builtin://ode/lorenz",
                stepper,
                RunOptions::new().t(1.0).dt(dt).config("newton_tol", 1e-12),
            );
            max_abs_diff(sim.state(), &reference)
        };
        let (e1, e2) = (err(0.01), err(0.005));
        let order = (e1 / e2).log2();
        eprintln!(
            "lorenz {stepper}: errors {e1:.3e} (dt 0.01), {e2:.3e} (dt 0.005), order \
             {order:.2}, C = {:.1}",
            e1 / 1e-4
        );
        // Second order: error ≈ C·dt² with C of the size of the solution's third
        // derivatives; C = 1000 bounds it for both methods.
        assert!(e1 < 1000.0 * 0.01f64.powi(2), "{stepper}: {e1:.3e}");
        assert!((order - 2.0).abs() < 0.3, "{stepper}: order {order:.2}");
    }
    for stepper in ADAPTIVE {
        for rtol in [1e-5, 1e-7] {
            let sim = run(
                "builtin://ode/lorenz",
                stepper,
                RunOptions::new()
                    .t(1.0)
                    .config("rtol", rtol)
                    .config("atol", 1e-8)
                    .config("newton_tol", 1e-12),
            );
            let e = max_abs_diff(sim.state(), &reference);
            eprintln!(
                "lorenz {stepper} rtol {rtol:.0e}: {} steps, error {e:.3e}",
                sim.step_count()
            );
            // |y| ≤ 30 on [0, 1]: a global error within 30·rtol^(2/3) for both (order-2
            // error estimates; at rtol 1e-5 tr-bdf2a measured 3.5e-3, bdf2a 7.9e-3).
            let bound = 30.0 * rtol.powf(2.0 / 3.0);
            assert!(e < bound, "{stepper}, rtol {rtol}: {e:.3e}");
        }
    }
}

#[test]
fn lorenz_values_of_the_original_system_are_reproduced() {
    // Section 4.4 of the reference notes: T = 1, dt = 0.01, default tolerances.
    let sim = run(
        "builtin://ode/lorenz",
        "sdirk2",
        RunOptions::new().t(1.0).dt(0.01),
    );
    let want = [-9.3810588696, -8.3643121450, 29.3598033498];
    // Same method; the two Newton variants differ within newton_tol.
    let d = max_abs_diff(sim.state(), &want);
    eprintln!("sdirk2 lorenz vs the original: {d:.3e}");
    assert!(d < 1e-6, "{:?} vs {want:?}", sim.state());
    // tr-bdf2a no longer has the original's backward-Euler error estimate (issue 19: its
    // local truncation error estimate takes far fewer steps than the original's 2835), so it
    // is held to the accuracy of its default tolerances (rtol 1e-3, atol 1e-6, |y| <= 30)
    // against the original's values instead of to their bits.
    let sim = run(
        "builtin://ode/lorenz",
        "tr-bdf2a",
        RunOptions::new().t(1.0).dt(0.01),
    );
    let want = [-9.3785977065, -8.3570854491, 29.3623303955];
    let d = max_abs_diff(sim.state(), &want);
    eprintln!(
        "tr-bdf2a lorenz vs the original: {d:.3e}, {} steps",
        sim.step_count()
    );
    assert!(d < 10.0 * 1e-3 * 30.0, "{:?} vs {want:?}", sim.state());
    assert!(sim.step_count() < 2835, "{}", sim.step_count());
}

#[test]
fn analytic_and_finite_difference_jacobians_agree() {
    for stepper in FIXED.iter().chain(&ADAPTIVE) {
        for (uri, params) in [
            ("builtin://ode/lorenz", None),
            ("builtin://ode/vanderpol", Some(vec![50.0])),
        ] {
            let sim = |mode: f64| {
                let mut o = RunOptions::new()
                    .t(1.0)
                    .dt(0.01)
                    .config("jacobian_mode", mode)
                    .config("newton_tol", 1e-12);
                if let Some(p) = &params {
                    o = o.params(p);
                }
                run(uri, stepper, o)
            };
            let (fd, analytic) = (sim(0.0), sim(1.0));
            let d = max_abs_diff(fd.state(), analytic.state());
            // Both solve the same equations to newton_tol; only the iteration differs.
            assert!(d < 1e-8, "{stepper} on {uri}: difference {d:.3e}");
        }
    }
}

/// x' = -1000 x with a deliberately wrong analytic Jacobian (+1000).
const WRONG_JACOBIAN: &str = "inline:\n[model]\ntype=\"ode\"\n[states]\nx = 1.0\n[equations.rhs]\nx = \"-1000*x\"\n[equations.jacobian]\nexpr = [[\"1000\"]]\n";

#[test]
fn jacobian_mode_selects_the_models_jacobian() {
    let model = Model::load(WRONG_JACOBIAN).unwrap();
    for stepper in FIXED {
        // Finite differences: fine.
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        sim.run(&RunOptions::new().t(0.5).dt(0.1)).unwrap();
        assert!(sim.state()[0].abs() < 1e-3);
        // The (wrong) analytic Jacobian makes simplified Newton diverge.
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        let e = sim
            .run(
                &RunOptions::new()
                    .t(0.5)
                    .dt(0.1)
                    .config("jacobian_mode", 1.0),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StepFailed, "{e}");
        // Anything but 0 or 1 is refused.
        let e = sim
            .run(
                &RunOptions::new()
                    .t(0.5)
                    .dt(0.1)
                    .config("jacobian_mode", 0.5),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains("jacobian_mode"), "{e}");
    }
    // The model's [sim] table may name the mode.
    let text = WRONG_JACOBIAN.replace("[states]", "[sim]\njacobian_mode = \"external\"\n[states]");
    let model = Model::load(&text).unwrap();
    let sim = Sim::with_stepper(&model, Some("bdf2")).unwrap();
    let info = sim.stepper();
    let i = info
        .config
        .iter()
        .position(|k| k.name == "jacobian_mode")
        .unwrap();
    assert_eq!(sim.session_state().config[i], 1.0);
}

/// x' = lam·x with an exact analytic Jacobian.
const LINEAR: &str = "inline:\n[model]\ntype=\"ode\"\n[states]\nx = 1.0\n[params]\nlam = -1.0\n[equations.rhs]\nx = \"lam*x\"\n[equations.jacobian]\nexpr = [[\"lam\"]]\n";

#[test]
fn a_singular_newton_matrix_fails_the_step_and_changes_nothing() {
    let model = Model::load(LINEAR).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("sdirk2")).unwrap();
    sim.run(&RunOptions::new().t(0.5).dt(0.1)).unwrap();
    let before = sim.session_state().clone();
    let results_before = sim.results().unwrap().clone();
    // With lam = 1/(γh) the Newton matrix I − γh·lam of SDIRK2 is singular.
    let gamma = (2.0 - std::f64::consts::SQRT_2) / 2.0;
    let lam = 1.0 / (gamma * 0.1);
    sim.assign(&[("lam", lam)], false).unwrap();
    let assigned = sim.session_state().clone();
    let e = sim
        .run(
            &RunOptions::new()
                .t(1.0)
                .resume(true)
                .config("jacobian_mode", 1.0),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StepFailed, "{e}");
    assert!(e.message().contains("singular"), "{e}");
    assert!(sim.session_state().bits_eq(&assigned));
    assert!(!sim.session_state().bits_eq(&before));
    assert_eq!(sim.results().unwrap(), &results_before);
}

#[test]
fn newton_non_convergence_fails_the_step_and_changes_nothing() {
    // One Newton iteration cannot meet the update test on a nonlinear problem.
    for stepper in FIXED.iter().chain(&ADAPTIVE) {
        let model = Model::load("builtin://ode/vanderpol").unwrap();
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        sim.run(&RunOptions::new().t(0.5).dt(0.01)).unwrap();
        let before = sim.session_state().clone();
        let results_before = sim.results().unwrap().clone();
        // Adaptive methods retry with smaller steps; two tries are not enough here.
        let mut opts = RunOptions::new()
            .t(1.0)
            .resume(true)
            .config("newton_max_iter", 1.0);
        if sim.stepper().adaptive {
            opts = opts.config("max_tries", 2.0);
        }
        let e = sim.run(&opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StepFailed, "{stepper}: {e}");
        assert!(
            e.message().contains("Newton") || e.message().contains("newton"),
            "{stepper}: {e}"
        );
        assert!(sim.session_state().bits_eq(&before), "{stepper}");
        assert_eq!(sim.results().unwrap(), &results_before);
        // The session goes on from where it was.
        sim.run(&RunOptions::new().t(1.0).resume(true)).unwrap();
    }
}

#[test]
fn assign_restarts_the_bdf2_history_and_drops_a_pending_step() {
    let model = Model::load(FORCED).unwrap();
    for stepper in ["bdf2", "bdf2a"] {
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        sim.run(&RunOptions::new().t(0.55).dt(0.02)).unwrap();
        let phase = |sim: &Sim| {
            let ws = &sim.session_state().stepper_ws;
            match &ws.iter().find(|a| a.name == "phase").unwrap().data {
                dynlib::stepper::WsData::I64(v) => v[0],
                other => panic!("phase is {other:?}"),
            }
        };
        assert_eq!(phase(&sim), 1, "{stepper}: history after the run");
        // The adaptive method stepped past t = 0.55 and holds that step as pending.
        assert_eq!(
            sim.session_state().pending.is_some(),
            stepper == "bdf2a",
            "{stepper}"
        );
        let adaptive = stepper == "bdf2a";
        if adaptive {
            assert_eq!(newton_flags(&sim)[0], 1, "{stepper}: a kept Jacobian");
        }
        sim.assign(&[("x", 0.25)], false).unwrap();
        assert_eq!(phase(&sim), -1, "{stepper}: restarted by assign");
        if adaptive {
            // The Jacobian of the old state is dropped with the history.
            assert_eq!(newton_flags(&sim)[..2], [0, 0], "{stepper}");
        }
        assert!(sim.session_state().pending.is_none());
        // The next step starts up from the assigned state; the run goes on accurately.
        sim.run(&RunOptions::new().t(2.0).resume(true)).unwrap();
        assert_eq!(phase(&sim), 1);
        // Exact solution through (0.55, 0.25): x = C e^{-t} + (sin t - cos t)/2.
        let t0 = 0.55f64;
        let c = (0.25 - (t0.sin() - t0.cos()) / 2.0) * t0.exp();
        let exact = c * (-2.0f64).exp() + (2.0f64.sin() - 2.0f64.cos()) / 2.0;
        let err = (sim.state()[0] - exact).abs();
        assert!(err < 1e-3, "{stepper}: error {err:.3e}");
    }
}

/// The kept Newton state's flags: [Jacobian valid, factorisation valid, Jacobian age, LU age].
fn newton_flags(sim: &Sim) -> Vec<i64> {
    let ws = &sim.session_state().stepper_ws;
    match &ws.iter().find(|a| a.name == "newton_flags").unwrap().data {
        WsData::I64(v) => v.clone(),
        other => panic!("newton_flags is {other:?}"),
    }
}

const VAN_DER_POL: &str = r#"inline:
[model]
type = "ode"
name = "vdp"
[states]
x = 2.0
v = 0.0
[params]
mu = 1000.0
[equations.rhs]
x = "v"
v = "mu*(1 - x^2)*v - x"
[equations.jacobian]
expr = [["0", "1"], ["-2*mu*x*v - 1", "mu*(1 - x^2)"]]
"#;

fn stiff_opts(t: f64, resume: bool, mode: f64) -> RunOptions {
    RunOptions::new()
        .t(t)
        .resume(resume)
        .config("rtol", 1e-4)
        .config("atol", 1e-8)
        .config("jacobian_mode", mode)
        .record(false)
        .max_steps(1_000_000)
}

#[test]
fn bdf2a_keeps_the_jacobian_across_steps() {
    // Sampled at the ends of many pieces of a run (one sample per distinct step), the kept
    // Jacobian is mostly one of an earlier step (age ≥ 1): it is not evaluated every step.
    // Ages never exceed CVODE's limits. (tr-bdf2a evaluates one every step: see its docs.)
    for (name, uri, t_end) in [("Robertson", ROBERTSON, 40.0), ("vdp", VAN_DER_POL, 2000.0)] {
        let model = Model::load(uri).unwrap();
        let mut sim = Sim::with_stepper(&model, Some("bdf2a")).unwrap();
        let (mut old, mut sampled, mut last_step) = (0, 0, u64::MAX);
        for k in 1..=400 {
            let t = t_end * f64::from(k) / 400.0;
            sim.run(&stiff_opts(t, k > 1, 1.0)).unwrap();
            let flags = newton_flags(&sim);
            assert!(flags[2] <= 51 && flags[3] <= 20, "{flags:?}");
            if sim.step_count() == last_step {
                continue;
            }
            last_step = sim.step_count();
            sampled += 1;
            if flags[0] == 1 && flags[2] >= 1 {
                old += 1;
            }
        }
        eprintln!(
            "bdf2a on {name}: {old} of {sampled} sampled steps hold a Jacobian of an earlier \
             step ({} steps)",
            sim.step_count()
        );
        // Measured 52 of 53 (Robertson) and 114 of 119 (vdp).
        assert!(4 * old >= 3 * sampled, "{name}: {old} of {sampled}");
    }
}

#[test]
fn tr_bdf2a_carries_the_newton_rate_across_steps() {
    // tr-bdf2a's Jacobian is new every step but its contraction rate is kept (saved as
    // `newton_rate`): sampled at the ends of many pieces, it is mostly a measured rate
    // (< 1), not the unknown 1 a new factorisation would otherwise start from, and always
    // in [0, 1]. (Before, every step started from the unknown rate.)
    for (name, uri, t_end) in [("Robertson", ROBERTSON, 40.0), ("vdp", VAN_DER_POL, 2000.0)] {
        let model = Model::load(uri).unwrap();
        let mut sim = Sim::with_stepper(&model, Some("tr-bdf2a")).unwrap();
        let (mut known, mut sampled, mut last_step) = (0, 0, u64::MAX);
        for k in 1..=400 {
            let t = t_end * f64::from(k) / 400.0;
            sim.run(&stiff_opts(t, k > 1, 1.0)).unwrap();
            let ws = &sim.session_state().stepper_ws;
            let rate = match &ws.iter().find(|a| a.name == "newton_rate").unwrap().data {
                WsData::F64(v) => v[0],
                other => panic!("newton_rate is {other:?}"),
            };
            assert!((0.0..=1.0).contains(&rate), "{name}: rate {rate}");
            if sim.step_count() == last_step {
                continue;
            }
            last_step = sim.step_count();
            sampled += 1;
            if rate < 1.0 {
                known += 1;
            }
        }
        eprintln!(
            "tr-bdf2a on {name}: {known} of {sampled} sampled steps carry a measured rate ({} \
             steps)",
            sim.step_count()
        );
        // Measured 19 of 28 (Robertson: late steps converge on newton_tol at once, the
        // rate staying unknown) and 54 of 54 (vdp).
        assert!(2 * known >= sampled, "{name}: {known} of {sampled}");
    }
}

/// A stiff run to `t_end` in pieces ending at `seams` (fractions of t_end), one of them
/// through a snapshot file: the final session state (bdf2a's kept Jacobian and its ages
/// included) must equal one uninterrupted run's, bit for bit.
fn stiff_in_pieces(
    stepper: &str,
    uri: &str,
    t_end: f64,
    seams: &[f64],
    via_file_at: usize,
    mode: f64,
) -> Result<(), String> {
    let model = Model::load(uri).unwrap();
    let mut whole = Sim::with_stepper(&model, Some(stepper)).unwrap();
    whole
        .run(&stiff_opts(t_end, false, mode))
        .map_err(|e| e.to_string())?;
    let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
    let mut times: Vec<f64> = seams.iter().map(|s| s * t_end).collect();
    times.push(t_end);
    for (i, t) in times.iter().enumerate() {
        sim.run(&stiff_opts(*t, i > 0, mode))
            .map_err(|e| e.to_string())?;
        if i == via_file_at {
            let bytes = sim.serialize_snapshot(None).map_err(|e| e.to_string())?;
            sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
            sim.deserialize_snapshot(&bytes)
                .map_err(|e| e.to_string())?;
        }
    }
    if !sim.session_state().bits_eq(whole.session_state()) {
        return Err(format!(
            "{stepper}, seams {times:?}: state {:?} vs {:?}, steps {} vs {}",
            sim.state(),
            whole.state(),
            sim.step_count(),
            whole.step_count()
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn stiff_adaptive_runs_split_at_random_seams_are_bit_identical(
        stepper in prop::sample::select(ADAPTIVE.to_vec()),
        vdp in any::<bool>(),
        mut seams in prop::collection::vec(1e-6f64..0.999, 1..6),
        via_file_at in 0usize..6,
        mode in prop::sample::select(vec![0.0, 1.0]),
    ) {
        seams.sort_by(f64::total_cmp);
        seams.dedup();
        let (uri, t_end) = if vdp { (VAN_DER_POL, 2000.0) } else { (ROBERTSON, 40.0) };
        let r = stiff_in_pieces(stepper, uri, t_end, &seams, via_file_at, mode);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

#[test]
fn a_damaged_newton_workspace_is_refused_and_the_stepper_is_unchanged() {
    let model = Model::load(ROBERTSON).unwrap();
    {
        let stepper = "bdf2a";
        let info = lookup(stepper).unwrap();
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        sim.run(&stiff_opts(10.0, false, 1.0)).unwrap();
        let valid = sim.session_state().stepper_ws.clone();
        let mut s = dynlib::stepper::create(info, 3);
        s.load(&valid).unwrap();
        let edit = |name: &str, f: &dyn Fn(&mut WsData)| {
            let mut ws = valid.clone();
            f(&mut ws.iter_mut().find(|a| a.name == name).unwrap().data);
            ws
        };
        let cases: [(Vec<_>, &str); 4] = [
            (
                edit("newton_flags", &|d| {
                    if let WsData::I64(v) = d {
                        v[0] = 2;
                    }
                }),
                "must be 0 or 1",
            ),
            (
                edit("newton_flags", &|d| {
                    if let WsData::I64(v) = d {
                        v[2] = 52;
                    }
                }),
                "outside",
            ),
            (
                edit("newton_flags", &|d| {
                    if let WsData::I64(v) = d {
                        v[0] = 0;
                        v[1] = 1;
                    }
                }),
                "without a Jacobian",
            ),
            (
                edit("newton_rate", &|d| {
                    if let WsData::F64(v) = d {
                        v[0] = 1.5;
                    }
                }),
                "newton_rate",
            ),
        ];
        for (ws, needle) in &cases {
            let err = s.load(ws).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "{stepper}: {err}");
            assert!(err.message().contains(needle), "{stepper}: {err}");
            assert!(err.message().contains(stepper), "{stepper}: {err}");
            // Nothing changed: the stepper still saves the valid workspace.
            assert_eq!(s.save(), valid, "{stepper}");
        }
        // A Jacobian that makes the saved factorisation singular: I - c·J with J = I/c.
        assert_eq!(
            newton_flags(&sim)[..2],
            [1, 1],
            "{stepper}: a kept factorisation"
        );
        let coeff = match &valid
            .iter()
            .find(|a| a.name == "newton_lu_coeff")
            .unwrap()
            .data
        {
            WsData::F64(v) => v[0],
            other => panic!("{other:?}"),
        };
        let singular = edit("newton_jac", &|d| {
            if let WsData::F64(v) = d {
                for (k, x) in v.iter_mut().enumerate() {
                    *x = if k % 4 == 0 { 1.0 / coeff } else { 0.0 };
                }
            }
        });
        let err = s.load(&singular).unwrap_err();
        assert!(err.message().contains("singular"), "{stepper}: {err}");
        assert_eq!(s.save(), valid, "{stepper}");
    }
}

/// y' = −k·y with `k` changeable between steps; counts the evaluations at `watch_t`.
struct WatchedDecay {
    k: f64,
    watch_t: f64,
    evals_at_watch: usize,
}

impl dynlib::stepper::Rhs for WatchedDecay {
    fn eval(&mut self, t: f64, y: &[f64], out: &mut [f64]) -> dynlib::Result<()> {
        if t.to_bits() == self.watch_t.to_bits() {
            self.evals_at_watch += 1;
        }
        out[0] = -self.k * y[0];
        Ok(())
    }

    fn lag_free(&self) -> bool {
        true
    }
}

/// tr-bdf2a's first-same-as-last: a step that continues the last one takes f(t_n, y_n) from
/// the last step's BDF2 stage equation instead of evaluating it; after a restart (e.g. a
/// parameter assigned with the state kept) it evaluates f afresh, so the new parameter
/// enters the very first stage.
#[test]
fn tr_bdf2a_reuses_the_last_stage_derivative_only_while_continuing() {
    use dynlib::stepper::{create, Stepper};
    let info = lookup("tr-bdf2a").unwrap();
    let mut cfg: Vec<f64> = info.config.iter().map(|k| k.default).collect();
    let rtol = info.config.iter().position(|k| k.name == "rtol").unwrap();
    cfg[rtol] = 1e-6;
    let mut s: Box<dyn Stepper> = create(info, 1);
    let mut f = WatchedDecay {
        k: 1.0,
        watch_t: 0.0,
        evals_at_watch: 0,
    };
    let mut y1 = [0.0];
    let first = s.step(&mut f, 0.0, &[1.0], 1e-3, &cfg, &mut y1).unwrap();
    assert!(
        f.evals_at_watch >= 1,
        "the first step evaluates f at its start"
    );
    let t1 = first.h_used;
    s.commit(&mut f, t1, &y1).unwrap();

    // Continuing: no evaluation at (t1, y1); the step is as accurate as the tolerance asks.
    f.watch_t = t1;
    f.evals_at_watch = 0;
    let mut y2 = [0.0];
    let second = s
        .step(&mut f, t1, &y1, first.h_next, &cfg, &mut y2)
        .unwrap();
    assert_eq!(
        f.evals_at_watch, 0,
        "f at the continued step's start is reused"
    );
    let want = y1[0] * (-second.h_used).exp();
    assert!(
        ((y2[0] - want) / want).abs() < 1e-5,
        "continued step: {} vs {want}",
        y2[0]
    );

    // A restart where the second step ended, k changed and (t, y) kept: f is evaluated
    // there, with the new k.
    let t2 = t1 + second.h_used;
    s.commit(&mut f, t2, &y2).unwrap();
    s.restart();
    f.k = 50.0;
    f.watch_t = t2;
    f.evals_at_watch = 0;
    let mut y3 = [0.0];
    let third = s
        .step(&mut f, t2, &y2, second.h_next, &cfg, &mut y3)
        .unwrap();
    assert!(
        f.evals_at_watch >= 1,
        "after a restart f is evaluated afresh"
    );
    let want = y2[0] * (-50.0 * third.h_used).exp();
    assert!(
        ((y3[0] - want) / want).abs() < 1e-4,
        "after the restart: {} vs {want} (h = {:e})",
        y3[0],
        third.h_used
    );
}

/// Van der Pol (μ = 100), counting its evaluations; `lag_free` as configured.
struct CountedVanDerPol {
    lag_free: bool,
    evals: usize,
}

impl dynlib::stepper::Rhs for CountedVanDerPol {
    fn eval(&mut self, _t: f64, y: &[f64], out: &mut [f64]) -> dynlib::Result<()> {
        self.evals += 1;
        out[0] = y[1];
        out[1] = 100.0 * (1.0 - y[0] * y[0]) * y[1] - y[0];
        Ok(())
    }

    fn lag_free(&self) -> bool {
        self.lag_free
    }
}

/// With a difference Jacobian (the default `jacobian_mode`), the first Newton iteration of
/// a solve that has just differenced its Jacobian at its guess takes f there from the
/// Jacobian's base evaluation, for a lag-free model: the same steps bit for bit as
/// evaluating it again (a model with lags, whose f may depend on more than (t, y), does),
/// at least one evaluation fewer per step (one Jacobian per step at least for bdf2 and
/// sdirk2; bdf2a's is kept across steps, so at least one in all). tr-bdf2a shares the code
/// but has no such control: `lag_free` also switches its first-same-as-last.
#[test]
fn a_difference_jacobian_lends_its_base_evaluation_to_the_first_iteration() {
    use dynlib::stepper::{create, Stepper};
    for (stepper, per_step) in [("bdf2", true), ("sdirk2", true), ("bdf2a", false)] {
        let info = lookup(stepper).unwrap();
        let cfg: Vec<f64> = info.config.iter().map(|k| k.default).collect();
        let run = |lag_free: bool| {
            let mut s: Box<dyn Stepper> = create(info, 2);
            let mut f = CountedVanDerPol { lag_free, evals: 0 };
            let (mut t, mut y, mut h) = (0.0, vec![2.0, 0.0], 1e-3);
            let mut states = Vec::new();
            for _ in 0..60 {
                let mut y_new = vec![0.0; 2];
                let out = s.step(&mut f, t, &y, h, &cfg, &mut y_new).unwrap();
                t += out.h_used;
                s.commit(&mut f, t, &y_new).unwrap();
                if info.adaptive {
                    h = out.h_next;
                }
                y = y_new;
                states.push((t.to_bits(), y[0].to_bits(), y[1].to_bits()));
            }
            (states, f.evals)
        };
        let (lent, lent_evals) = run(true);
        let (own, own_evals) = run(false);
        assert_eq!(lent, own, "{stepper}: the same steps");
        let saved = own_evals - lent_evals;
        eprintln!("{stepper}: {own_evals} -> {lent_evals} evaluations in 60 steps");
        assert!(
            if per_step { saved >= 60 } else { saved >= 1 },
            "{stepper}: {own_evals} -> {lent_evals}"
        );
    }
}
