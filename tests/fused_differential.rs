//! The fused native loops give exactly the bits of the general engine: every fixed-step
//! explicit stepper × every built-in model (and models with lags, aux, start/end events, a
//! stop condition that ends runs early) × recording on/off, record_interval, record_vars with
//! aux, a transient, resume seams at random steps, and step checkpoints — the same runs with
//! `general_engine(true)` and without, compared sample for sample, event for event, and in
//! the final session state, bit for bit.
#![cfg(feature = "jit")]

mod common;

use common::{all_samples, event_bits, first_difference, sources};
use dynlib::session::CheckpointPolicy;
use dynlib::{stepper, Backend, Model, RunOptions, Sim};

/// A small deterministic generator for seam positions.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[derive(Debug, Clone)]
enum Scenario {
    RecordAll,
    RecordOff,
    Interval(u64),
    Transient,
    Seams(u64),
    Checkpoints,
}

fn horizon(model: &Model, k: u64) -> RunOptions {
    if model.kind == dynlib::model::ModelKind::Map {
        RunOptions::new().n(k)
    } else {
        RunOptions::new().t(model.sim.t0 + k as f64 * model.sim.dt)
    }
}

/// Runs one scenario; `general` forces the general engine.
fn run(model: &Model, stepper: &str, sc: &Scenario, general: bool, dir: &std::path::Path) -> Sim {
    let mut vars: Vec<String> = model.state_names.clone();
    vars.extend(model.aux_names.iter().map(|a| format!("aux.{a}")));
    let mut sim = Sim::with_stepper(model, Some(stepper)).unwrap();
    let base = |k| {
        horizon(model, k)
            .dt(model.sim.dt)
            .max_steps(10_000_000)
            .general_engine(general)
    };
    let resume = |k| {
        horizon(model, k)
            .resume(true)
            .max_steps(10_000_000)
            .general_engine(general)
    };
    // A stop condition may end a run early; later resumes then have nothing to do.
    let go = |sim: &mut Sim, o: &RunOptions| {
        if let Err(e) = sim.run(o) {
            assert!(
                e.to_string().contains("must exceed") || e.to_string().contains("already reached"),
                "{e}"
            );
        }
    };
    match sc {
        RecordAll => {
            let mut o = base(1200);
            o.record_vars = Some(vars);
            go(&mut sim, &o);
        }
        RecordOff => go(&mut sim, &base(1200).record(false)),
        Interval(k) => {
            let mut o = base(1200).record_interval(*k);
            o.record_vars = Some(vars);
            go(&mut sim, &o);
        }
        Transient => {
            let tr = if model.kind == dynlib::model::ModelKind::Map {
                37.0
            } else {
                37.0 * model.sim.dt
            };
            go(&mut sim, &base(900).transient(tr).record_interval(3));
        }
        Seams(seed) => {
            let mut rng = Lcg(*seed);
            let mut k = 1 + rng.below(300);
            let mut o = base(k).record_interval(1 + rng.below(4));
            o.record_vars = Some(vars);
            go(&mut sim, &o);
            for _ in 0..4 {
                k += 1 + rng.below(400);
                go(&mut sim, &resume(k));
            }
        }
        Checkpoints => {
            let policy = CheckpointPolicy::every_steps(dir, 97, 2);
            go(&mut sim, &base(1000).checkpoint(policy));
        }
    }
    sim
}

use Scenario::*;

#[test]
fn fused_loops_give_the_general_engines_bits() {
    let scenarios = [
        RecordAll,
        RecordOff,
        Interval(7),
        Transient,
        Seams(1),
        Seams(2),
        Seams(3),
        Checkpoints,
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let (mut steps, mut fused_steps) = (0, 0);
    for source in sources() {
        let model = Model::load_with(&source, Backend::Native).unwrap();
        let explicit = stepper::all()
            .iter()
            .filter(|i| i.kind == model.kind && !i.implicit);
        for info in explicit {
            for sc in &scenarios {
                let what = format!(
                    "{} / {} / {sc:?}",
                    source.lines().next().unwrap(),
                    info.name
                );
                let (da, db) = (
                    tmp.path().join(format!("a{checked}")),
                    tmp.path().join(format!("b{checked}")),
                );
                let a = run(&model, info.name, sc, false, &da);
                let b = run(&model, info.name, sc, true, &db);
                assert_eq!(b.last_run_stats().fused_steps, 0);
                steps += a.last_run_stats().steps;
                fused_steps += a.last_run_stats().fused_steps;
                let (ra, rb) = (a.results().unwrap(), b.results().unwrap());
                let (sa, sb) = (all_samples(ra), all_samples(rb));
                assert!(
                    sa == sb,
                    "{what}: samples differ, {}",
                    first_difference(&sa, &sb)
                );
                let (ea, eb) = (event_bits(ra), event_bits(rb));
                assert!(
                    ea == eb,
                    "{what}: events differ, {}",
                    first_difference(&ea, &eb)
                );
                assert_eq!(ra.segments, rb.segments, "{what}: segments differ");
                assert!(
                    a.session_state().bits_eq(b.session_state()),
                    "{what}: final state differs:\n{:?}\n{:?}",
                    a.session_state(),
                    b.session_state()
                );
                if matches!(sc, Checkpoints) {
                    let names = |d: &std::path::Path| {
                        let mut v: Vec<_> = std::fs::read_dir(d)
                            .unwrap()
                            .map(|e| e.unwrap().file_name())
                            .collect();
                        v.sort();
                        v
                    };
                    assert_eq!(names(&da), names(&db), "{what}: checkpoint files differ");
                }
                checked += 1;
            }
        }
    }
    // 16 ODE models × 6 explicit steppers + 8 maps × map, 8 scenarios each.
    assert_eq!(checked, 8 * (16 * 6 + 8), "cases run");
    assert!(
        fused_steps * 10 > steps * 9,
        "only {fused_steps} of {steps} last-run steps were fused"
    );
    eprintln!(
        "fused vs general engine: {checked} runs compared bit for bit; {fused_steps} of \
         {steps} steps of the last runs fused"
    );
}

/// The fused loop is actually taken where it applies, and not where it does not.
#[test]
fn fused_loop_takes_the_steps_it_can() {
    let run = |src: &str, backend, stepper: &str, general: bool| {
        let model = Model::load_with(src, backend).unwrap();
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        let o = RunOptions::new()
            .t(100.0)
            .dt(0.01)
            .max_steps(10_000_000)
            .general_engine(general);
        sim.run(&o).unwrap();
        sim.last_run_stats()
    };
    let lorenz = "builtin://ode/lorenz";
    let s = run(lorenz, Backend::Native, "rk4", false);
    assert_eq!((s.steps, s.fused_steps), (10_000, 10_000));
    let s = run(lorenz, Backend::Native, "rk4", true);
    assert_eq!((s.steps, s.fused_steps), (10_000, 0));
    let s = run(lorenz, Backend::Interpreter, "rk4", false);
    assert_eq!((s.steps, s.fused_steps), (10_000, 0));
    // Izhikevich: the steps with a reset go through the general engine, the rest fused.
    let s = run("builtin://ode/izhikevich", Backend::Native, "rk4", false);
    assert_eq!(s.steps, 10_000);
    assert!(s.fused_steps > 9_900 && s.fused_steps < 10_000, "{s:?}");
    // ab3 starts up in the general engine (two steps), then runs fused.
    let s = run(lorenz, Backend::Native, "ab3", false);
    assert_eq!((s.steps, s.fused_steps), (10_000, 9_998));
    // rk45: every accepted step inside the horizon is fused; the one that crosses it is not.
    let s = run(lorenz, Backend::Native, "rk45", false);
    assert!(s.steps > 1000 && s.fused_steps == s.steps - 1, "{s:?}");
}

mod host_c {
    //! Host models given as C functions (what `dynlib_model_from_callbacks` builds): the
    //! fused loop calls them directly; the results must be the general engine's bits.
    use dynlib::model::host::{CFunctions, HostModel, HostModelDef};
    use dynlib::model::ModelKind;
    use std::ffi::{c_int, c_void};

    pub unsafe extern "C" fn izh_rhs(
        _t: f64,
        y: *const f64,
        p: *const f64,
        out: *mut f64,
        _ud: *mut c_void,
    ) -> c_int {
        let (y, p, out) = unsafe {
            (
                std::slice::from_raw_parts(y, 2),
                std::slice::from_raw_parts(p, 6),
                std::slice::from_raw_parts_mut(out, 2),
            )
        };
        out[0] = 0.04 * y[0] * y[0] + 5.0 * y[0] + 140.0 - y[1] + p[4];
        out[1] = p[0] * (p[1] * y[0] - y[1]);
        0
    }

    pub unsafe extern "C" fn izh_aux(
        t: f64,
        y: *const f64,
        _p: *const f64,
        out: *mut f64,
        _ud: *mut c_void,
    ) -> c_int {
        unsafe { *out = *y - *y.add(1) + t.sin() };
        0
    }

    pub unsafe extern "C" fn izh_cond(
        _ev: usize,
        _t: f64,
        y: *const f64,
        p: *const f64,
        fires: *mut c_int,
        _ud: *mut c_void,
    ) -> c_int {
        unsafe { *fires = c_int::from(*y >= *p.add(5)) };
        0
    }

    pub struct Izh;
    impl HostModel for Izh {
        fn rhs(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
            let rc = unsafe {
                izh_rhs(
                    t,
                    y.as_ptr(),
                    p.as_ptr(),
                    out.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(rc)
            }
        }
        fn aux(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
            unsafe {
                izh_aux(
                    t,
                    y.as_ptr(),
                    p.as_ptr(),
                    out.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            };
            Ok(())
        }
        fn event_cond(&self, i: usize, t: f64, y: &[f64], p: &[f64]) -> Result<bool, i32> {
            let mut fires = 0;
            unsafe {
                izh_cond(
                    i,
                    t,
                    y.as_ptr(),
                    p.as_ptr(),
                    &mut fires,
                    std::ptr::null_mut(),
                )
            };
            Ok(fires != 0)
        }
        fn event_action(
            &self,
            _i: usize,
            _t: f64,
            y: &mut [f64],
            p: &mut [f64],
        ) -> Result<(), i32> {
            y[0] = p[2];
            y[1] += p[3];
            Ok(())
        }
        fn c_functions(&self) -> Option<CFunctions> {
            Some(CFunctions {
                rhs: izh_rhs,
                aux: Some(izh_aux),
                event_cond: Some(izh_cond),
                user_data: std::ptr::null_mut(),
            })
        }
    }

    pub fn model() -> dynlib::Model {
        let def = HostModelDef {
            id: "test/izhikevich-c".into(),
            version: "1".into(),
            kind: ModelKind::Ode,
            state_names: vec!["v".into(), "u".into()],
            state_init: vec![-65.0, -13.0],
            param_names: ["a", "b", "c", "d", "I", "v_th"].map(String::from).to_vec(),
            param_init: vec![0.02, 0.2, -65.0, 8.0, 10.0, 30.0],
            aux_names: vec!["w".into()],
            event_names: vec!["reset".into()],
            dt: 0.01,
            stepper: "rk4".into(),
        };
        dynlib::Model::from_host(def, Box::new(Izh)).unwrap()
    }
}

#[test]
fn host_c_functions_run_fused_with_the_general_engines_bits() {
    let model = host_c::model();
    let tmp = tempfile::tempdir().unwrap();
    let mut fused = 0;
    for info in stepper::all()
        .iter()
        .filter(|i| i.kind == model.kind && !i.implicit)
    {
        for sc in [RecordAll, RecordOff, Interval(5), Seams(7), Seams(8)] {
            let what = format!("host C / {} / {sc:?}", info.name);
            let a = run(&model, info.name, &sc, false, tmp.path());
            let b = run(&model, info.name, &sc, true, tmp.path());
            let (ra, rb) = (a.results().unwrap(), b.results().unwrap());
            let (sa, sb) = (all_samples(ra), all_samples(rb));
            assert!(
                sa == sb,
                "{what}: samples differ, {}",
                first_difference(&sa, &sb)
            );
            assert_eq!(event_bits(ra), event_bits(rb), "{what}: events differ");
            assert!(
                a.session_state().bits_eq(b.session_state()),
                "{what}: state differs"
            );
            let stats = a.last_run_stats();
            if matches!(sc, RecordAll | RecordOff) {
                assert!(
                    stats.fused_steps * 10 > stats.steps * 9,
                    "{what}: {stats:?}"
                );
            }
            fused += stats.fused_steps;
        }
    }
    assert!(fused > 0, "the host C functions never ran fused");
}

/// Lorenz as a host model that counts its right-hand side evaluations, with the same
/// function as C code, so that it also runs in the fused loops.
struct CountingLorenz(std::sync::Arc<std::sync::atomic::AtomicU64>);

/// `user_data` is the counter (an `AtomicU64` the model keeps alive).
unsafe extern "C" fn counting_lorenz_rhs(
    _t: f64,
    y: *const f64,
    p: *const f64,
    out: *mut f64,
    ud: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    let (y, p, out) = unsafe {
        (
            std::slice::from_raw_parts(y, 3),
            std::slice::from_raw_parts(p, 3),
            std::slice::from_raw_parts_mut(out, 3),
        )
    };
    let counter = unsafe { &*(ud as *const std::sync::atomic::AtomicU64) };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    out[0] = p[0] * (y[1] - y[0]);
    out[1] = y[0] * (p[1] - y[2]) - y[1];
    out[2] = y[0] * y[1] - p[2] * y[2];
    0
}

impl dynlib::model::host::HostModel for CountingLorenz {
    fn rhs(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        let ud = std::sync::Arc::as_ptr(&self.0) as *mut std::ffi::c_void;
        let rc = unsafe { counting_lorenz_rhs(t, y.as_ptr(), p.as_ptr(), out.as_mut_ptr(), ud) };
        if rc == 0 {
            Ok(())
        } else {
            Err(rc)
        }
    }
    fn c_functions(&self) -> Option<dynlib::model::host::CFunctions> {
        Some(dynlib::model::host::CFunctions {
            rhs: counting_lorenz_rhs,
            aux: None,
            event_cond: None,
            user_data: std::sync::Arc::as_ptr(&self.0) as *mut std::ffi::c_void,
        })
    }
}

/// An rk45 counting Lorenz model and its evaluation counter.
fn counting_lorenz() -> (Model, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use dynlib::model::host::HostModelDef;
    use dynlib::model::ModelKind;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let def = HostModelDef {
        id: "counting-lorenz".into(),
        version: "1".into(),
        kind: ModelKind::Ode,
        state_names: names(&["x", "y", "z"]),
        state_init: vec![1.0, 1.0, 1.0],
        param_names: names(&["sigma", "rho", "beta"]),
        param_init: vec![10.0, 28.0, 8.0 / 3.0],
        aux_names: vec![],
        event_names: vec![],
        dt: 0.01,
        stepper: "rk45".into(),
    };
    let counter = CountingLorenz(std::sync::Arc::clone(&calls));
    (Model::from_host(def, Box::new(counter)).unwrap(), calls)
}

/// The general engine's rk45 reuses the last stage of an accepted step as the next step's
/// first (FSAL) for a model without lags.
#[test]
fn general_rk45_evaluates_the_first_stage_once_per_step() {
    use std::sync::atomic::Ordering;
    let (model, calls) = counting_lorenz();
    let mut sim = Sim::new(&model).unwrap();
    // Steps capped small enough that none is rejected: 6 new stages per step with FSAL,
    // 7 without (the few more are the initial step estimate's).
    let opts = RunOptions::new()
        .t(2.0)
        .config("dt_max", 1e-3)
        .general_engine(true);
    sim.run(&opts).unwrap();
    let (n, steps) = (calls.load(Ordering::Relaxed), sim.step_count());
    assert!(steps >= 2000, "{steps} steps");
    assert!(
        n <= 6 * steps + 16,
        "{n} evaluations for {steps} accepted steps"
    );
}

/// The fused rk45 loop evaluates the right-hand side no more often than the general engine:
/// the step that ends a run past t_end is handed over before it is attempted (not attempted
/// twice), and only the first stage after each hand-over is evaluated again (the loop's
/// carried last stage stays in the loop). Same bits either way.
#[test]
fn fused_rk45_runs_cost_the_general_engines_evaluations() {
    use std::sync::atomic::Ordering;
    let (model, calls) = counting_lorenz();
    let seams = [0.7, 1.3, 2.9, 3.0, 5.5];
    let mut outcome = Vec::new();
    for general in [true, false] {
        let mut sim = Sim::new(&model).unwrap();
        calls.store(0, Ordering::Relaxed);
        for (i, t) in seams.iter().enumerate() {
            let opts = RunOptions::new()
                .t(*t)
                .resume(i > 0)
                .config("rtol", 1e-9)
                .general_engine(general);
            sim.run(&opts).unwrap();
        }
        let y: Vec<u64> = sim.state().iter().map(|v| v.to_bits()).collect();
        if !general {
            assert!(
                sim.last_run_stats().fused_steps > 0,
                "the fused loop never ran"
            );
        }
        outcome.push((calls.load(Ordering::Relaxed), y, sim.step_count()));
    }
    let (general, fused) = (&outcome[0], &outcome[1]);
    assert_eq!(general.1, fused.1, "final states differ");
    assert_eq!(general.2, fused.2, "step counts differ");
    assert!(general.2 > 500, "{} steps", general.2);
    assert!(
        fused.0 <= general.0 + seams.len() as u64,
        "fused {} evaluations vs the general engine's {} over {} runs",
        fused.0,
        general.0,
        seams.len()
    );
}

/// rk45's controller runs as instructions inside the fused loop: the same verdicts as the
/// general engine's `Controller::judge` for every knob corner — a zero absolute tolerance
/// (an error norm of 0/0 = NaN where a state is exactly zero), accepting at `min_step`,
/// steps falling below it, a single try, a capped step, factors at their bounds, the PI
/// controller (`beta`) — compared
/// bit for bit in samples and final state, including how a run fails.
#[test]
fn rk45_controller_knobs_give_the_general_engines_bits() {
    let knob_sets: &[&[(&str, f64)]] = &[
        &[],
        &[("atol", 0.0), ("rtol", 1e-6)],
        &[("atol", 1e-12), ("rtol", 1e-12), ("min_step", 1e-3)],
        &[("rtol", 1e-9), ("min_step", 1e-4)],
        &[("max_tries", 1.0), ("rtol", 1e-10)],
        &[("dt_max", 3e-3)],
        &[("safety", 0.5), ("min_factor", 0.5), ("max_factor", 1.5)],
        &[("safety", 1.0), ("min_factor", 1.0), ("max_factor", 1.0)],
        &[("atol", 1e-3), ("rtol", 0.0), ("max_factor", 20.0)],
        // The PI controller: its memory of the previous error is carried in the loop.
        &[("beta", 0.04)],
        &[("beta", 0.1), ("rtol", 1e-9), ("max_factor", 10.0)],
        &[
            ("beta", 0.08),
            ("atol", 0.0),
            ("rtol", 1e-6),
            ("max_tries", 2.0),
        ],
    ];
    let (mut compared, mut fused) = (0, 0);
    for source in [
        "builtin://ode/lorenz",
        "builtin://ode/izhikevich",
        "builtin://ode/vanderpol",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(sources().into_iter().take(3))
    {
        let Ok(model) = Model::load_with(&source, Backend::Native) else {
            continue;
        };
        if model.kind != dynlib::model::ModelKind::Ode {
            continue;
        }
        for knobs in knob_sets {
            let run = |general: bool| {
                let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
                let mut o = RunOptions::new()
                    .t(model.sim.t0 + 2.0)
                    .max_steps(200_000)
                    .general_engine(general);
                for (k, v) in *knobs {
                    o = o.config(k, *v);
                }
                let outcome = sim.run(&o).map_err(|e| e.to_string());
                (sim, outcome)
            };
            let ((a, ra), (b, rb)) = (run(false), run(true));
            let what = format!("{source} {knobs:?}");
            assert_eq!(ra, rb, "{what}: outcomes differ");
            assert!(
                a.session_state().bits_eq(b.session_state()),
                "{what}: final state differs"
            );
            if let (Ok(x), Ok(y)) = (a.results(), b.results()) {
                let (sa, sb) = (all_samples(x), all_samples(y));
                assert!(sa == sb, "{what}: {}", first_difference(&sa, &sb));
            }
            fused += a.last_run_stats().fused_steps;
            compared += 1;
        }
    }
    assert!(compared >= 3 * knob_sets.len(), "{compared} runs compared");
    assert!(fused > 10_000, "only {fused} steps were fused");
}

/// rk45 runs that end inside the fused loop — at a stop condition, at the step budget, at a
/// progress hook that stops the run — leave the stepper's workspace (the last step's dense
/// output, which the loop defers for lag-free models) with the general engine's bits, and
/// resuming from there continues with them.
#[test]
fn rk45_runs_ending_inside_the_fused_loop_keep_the_general_engines_workspace() {
    use dynlib::session::progress::{Control, Every, Hook};
    const STOPPING_LORENZ: &str = r#"inline:
[model]
type = "ode"
[states]
x = 1.0
y = 1.0
z = 1.0
[params]
sigma = 10.0
rho = 28.0
beta = 2.6666666666666665
[equations.rhs]
x = "sigma*(y - x)"
y = "x*(rho - z) - y"
z = "x*y - beta*z"
[sim]
stop = "t > 17.3 and x > 5"
"#;
    let model = Model::load_with(STOPPING_LORENZ, Backend::Native).unwrap();
    let cases: Vec<(&str, RunOptions)> = vec![
        ("stop condition", RunOptions::new().t(50.0)),
        ("step budget", RunOptions::new().t(50.0).max_steps(777)),
        (
            "hook stop",
            RunOptions::new()
                .t(50.0)
                .progress(Hook::new(Every::Steps(300), |p| {
                    if p.step >= 600 {
                        Control::Stop
                    } else {
                        Control::Continue
                    }
                })),
        ),
    ];
    for (what, o) in cases {
        let run = |general: bool| {
            let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
            let _ = sim.run(&o.clone().general_engine(general));
            let stats = sim.last_run_stats();
            let first = sim.session_state().clone();
            let _ = sim.run(
                &RunOptions::new()
                    .t(60.0)
                    .resume(true)
                    .general_engine(general),
            );
            (sim, stats, first)
        };
        let ((a, sa, fa), (b, _, fb)) = (run(false), run(true));
        assert!(sa.fused_steps > 100, "{what}: {sa:?}");
        assert!(
            fa.bits_eq(&fb),
            "{what}: the state where the run ended differs"
        );
        assert!(
            a.session_state().bits_eq(b.session_state()),
            "{what}: final state differs"
        );
        let (ra, rb) = (
            all_samples(a.results().unwrap()),
            all_samples(b.results().unwrap()),
        );
        assert!(ra == rb, "{what}: {}", first_difference(&ra, &rb));
    }
}
