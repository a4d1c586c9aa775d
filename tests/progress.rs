//! Progress, cancel and observers: callbacks at a bounded rate, a stop that leaves a
//! consistent session, and a resume after a stop that is bit-identical to a run never
//! stopped — for every stepper, in the fused loops and the general engine.

mod common;

use std::sync::{Arc, Mutex};

use common::{all_samples, event_bits, first_difference};
use dynlib::session::{Control, Every, Hook, Status};
use dynlib::{stepper, Model, RunOptions, Sim};
use proptest::prelude::*;

#[test]
fn progress_is_called_every_k_steps_with_a_growing_fraction() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let hook = Hook::new(Every::Steps(1000), move |p| {
        log.lock().unwrap().push((p.step, p.fraction, p.t));
        Control::Continue
    });
    sim.run(&RunOptions::new().t(100.0).dt(0.01).progress(hook))
        .unwrap();
    let seen = seen.lock().unwrap();
    let steps: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=10).map(|k| k * 1000).collect::<Vec<_>>());
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1));
    assert_eq!(seen.last().unwrap().1, 1.0);
    // The fast path keeps running between the calls.
    let stats = sim.last_run_stats();
    assert_eq!((stats.steps, stats.fused_steps), (10_000, 10_000));
    assert_eq!(sim.status(), Status::Done);
}

#[test]
fn a_wall_clock_hook_reads_the_clock_only_every_few_thousand_steps() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&calls);
    let hook = Hook::new(Every::Seconds(0.0), move |p| {
        c.lock().unwrap().push(p.step);
        Control::Continue
    });
    sim.run(&RunOptions::new().t(200.0).dt(0.01).progress(hook))
        .unwrap();
    let calls = calls.lock().unwrap();
    let k = dynlib::session::progress::CLOCK_CHECK_STEPS;
    assert_eq!(calls.len() as u64, 20_000 / k);
    assert!(calls.iter().all(|s| s % k == 0));
}

#[test]
fn observer_sees_the_recorded_state_and_bad_schedules_are_refused() {
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let hook = Hook::new(Every::Steps(250), move |p| {
        log.lock().unwrap().push((p.step, p.state.to_vec()));
        Control::Continue
    });
    sim.run(&RunOptions::new().t(100.0).dt(0.01).observer(hook))
        .unwrap();
    let rec = sim.results().unwrap();
    let v = rec.column("v").unwrap();
    for (step, y) in seen.lock().unwrap().iter() {
        assert_eq!(v[*step as usize].to_bits(), y[0].to_bits(), "step {step}");
    }
    let before = sim.session_state().clone();
    for bad in [
        Every::Steps(0),
        Every::Seconds(f64::NAN),
        Every::Seconds(-1.0),
    ] {
        let hook = Hook::new(bad, |_| Control::Continue);
        let e = sim
            .run(&RunOptions::new().t(1.0).progress(hook))
            .unwrap_err();
        assert!(e.to_string().contains("every"), "{e}");
    }
    assert!(sim.session_state().bits_eq(&before));
}

/// Stops at step `stop_at` through a hook, resumes to the horizon, and compares with an
/// uninterrupted run.
fn stop_and_resume(source: &str, stepper: &str, stop_at: u64, every: u64, general: bool) {
    let model = Model::load(source).unwrap();
    let dt = model.sim.dt;
    let t_end = 3000.0 * dt;
    let opts = |sim: &Sim| {
        let o = RunOptions::new()
            .t(t_end)
            .max_steps(1_000_000)
            .general_engine(general);
        if sim.stepper().adaptive {
            o.config("dt_max", 2.0 * dt)
        } else {
            o.dt(dt)
        }
    };
    let mut whole = Sim::with_stepper(&model, Some(stepper)).unwrap();
    let o = opts(&whole);
    whole.run(&o).unwrap();

    let mut split = Sim::with_stepper(&model, Some(stepper)).unwrap();
    let hook = Hook::new(Every::Steps(every), move |p| {
        if p.step >= stop_at {
            Control::Stop
        } else {
            Control::Continue
        }
    });
    split.run(&opts(&split).progress(hook)).unwrap();
    let what = format!("{source} / {stepper} / stop {stop_at} every {every} / general {general}");
    if split.status() == Status::UserBreak {
        assert!(
            split.step_count() >= stop_at && split.step_count() % every == 0,
            "{what}"
        );
        split
            .run(
                &RunOptions::new()
                    .t(t_end)
                    .resume(true)
                    .max_steps(1_000_000)
                    .general_engine(general),
            )
            .unwrap();
    }
    assert_eq!(split.status(), whole.status(), "{what}");
    let (ra, rb) = (whole.results().unwrap(), split.results().unwrap());
    let (sa, sb) = (all_samples(ra), all_samples(rb));
    assert!(
        sa == sb,
        "{what}: samples differ, {}",
        first_difference(&sa, &sb)
    );
    assert_eq!(event_bits(ra), event_bits(rb), "{what}: events differ");
    assert!(
        whole.session_state().bits_eq(split.session_state()),
        "{what}: final state differs"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn a_stopped_run_resumes_bit_identically(
        pick in 0usize..64,
        stop_at in 1u64..2500,
        every in prop::sample::select(vec![1u64, 7, 100, 333]),
        general in any::<bool>(),
    ) {
        let sources = [
            "builtin://ode/izhikevich",
            common::LAGGED_ODE,
            common::START_EVENTS_ODE,
        ];
        let ode: Vec<&str> = stepper::all()
            .iter()
            .filter(|i| i.kind == dynlib::model::ModelKind::Ode)
            .map(|i| i.name)
            .collect();
        let source = sources[pick % sources.len()];
        let stepper = ode[(pick / sources.len()) % ode.len()];
        stop_and_resume(source, stepper, stop_at, every, general);
    }
}

/// A hook that asks to stop at the very step where the stop condition ends the run: the run
/// has ended (EarlyExit), so a later resume must not go on past it.
#[test]
fn the_stop_condition_wins_over_a_hook_stop_at_the_same_step() {
    let model = Model::load(common::START_EVENTS_ODE).unwrap();
    for general in [false, true] {
        let opts = RunOptions::new().t(30.0).general_engine(general);
        let mut whole = Sim::with_stepper(&model, Some("rk4")).unwrap();
        whole.run(&opts).unwrap();
        assert_eq!(whole.status(), Status::EarlyExit);
        let last = whole.step_count();
        stop_and_resume(common::START_EVENTS_ODE, "rk4", last, 1, general);
        let mut split = Sim::with_stepper(&model, Some("rk4")).unwrap();
        let hook = Hook::new(Every::Steps(1), move |p| {
            if p.step >= last {
                Control::Stop
            } else {
                Control::Continue
            }
        });
        split.run(&opts.clone().progress(hook)).unwrap();
        assert_eq!(split.status(), Status::EarlyExit, "general {general}");
        assert_eq!(split.step_count(), last);
    }
}
