//! Session behaviour: the seed document's examples, resume rules, assign, snapshots, segments
//! and transactional failures.

use dynlib::{ErrorKind, Model, RunOptions, SegmentRef, Sim};

fn izh() -> Sim {
    Sim::new(&Model::load("builtin://ode/izhikevich").unwrap()).unwrap()
}

#[test]
fn seed_typical_pattern() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(2.0).record(true).tag("phase-1"))
        .unwrap();
    sim.create_snapshot("phase-1", "after the first stimulus")
        .unwrap();
    sim.run(&RunOptions::new().t(5.0).resume(true).tag("phase-2"))
        .unwrap();
    let segs = sim.segments().to_vec();
    assert_eq!(segs.len(), 2);
    assert_eq!(sim.segment_name(SegmentRef::Index(1)).unwrap(), "phase-2");
    assert!(segs[1].resume && !segs[0].resume);
    // The seam sample is not duplicated and step labels are cumulative.
    let rec = sim.results().unwrap();
    assert!(rec.t.windows(2).all(|w| w[0] < w[1]));
    assert!(rec.step.to_vec().windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(segs[1].step_start, segs[0].step_end + 1);
    sim.reset("phase-1").unwrap();
    assert_eq!(sim.time(), 2.0);
    assert_eq!(sim.results().unwrap_err().kind(), ErrorKind::NoResults);
    sim.run(&RunOptions::new().t(3.0).record(true).tag("phase-1-replay"))
        .unwrap();
    // A run without resume starts a new pass at t0 from the current state.
    assert_eq!(sim.results().unwrap().t[0], 0.0);
    assert_eq!(sim.segments().len(), 1);
}

#[test]
fn seed_example_1_branch_with_parameter_change() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(2.0).tag("baseline")).unwrap();
    sim.create_snapshot("after-baseline", "End of baseline run")
        .unwrap();
    sim.reset("after-baseline").unwrap();
    sim.assign(&[("I", 15.0)], false).unwrap();
    sim.run(&RunOptions::new().t(3.0).tag("modified-current"))
        .unwrap();
    assert_eq!(sim.value("I").unwrap(), 15.0);
    assert_eq!(
        sim.segment_name(SegmentRef::Index(0)).unwrap(),
        "modified-current"
    );
}

#[test]
fn seed_example_2_resume_with_new_parameters() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(2.0).tag("phase-1")).unwrap();
    sim.create_snapshot("phase-1-end", "End of phase 1")
        .unwrap();
    sim.reset("phase-1-end").unwrap();
    sim.assign(&[("a", 0.02), ("b", 0.25)], false).unwrap();
    sim.run(
        &RunOptions::new()
            .t(5.0)
            .resume(true)
            .tag("phase-2-modified"),
    )
    .unwrap();
    let rec = sim.results().unwrap();
    assert_eq!(rec.t[0], 2.0);
    assert_eq!(*rec.t.last().unwrap(), 5.0);
    assert_eq!(sim.value("b").unwrap(), 0.25);
}

#[test]
fn seed_example_3_assign_with_clear_history() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(2.0).tag("initial")).unwrap();
    let (t, step) = (sim.time(), sim.step_count());
    sim.assign(&[("I", 20.0)], true).unwrap();
    assert_eq!((sim.time(), sim.step_count()), (t, step));
    // "Clears all previous results and segments": no results, exactly as after reset.
    assert_eq!(
        sim.results().unwrap_err().kind(),
        dynlib::ErrorKind::NoResults
    );
    assert!(sim.segments().is_empty());
    sim.run(&RunOptions::new().t(3.0).record(true).tag("new-segment"))
        .unwrap();
    assert_eq!(sim.segments().len(), 1);
}

#[test]
fn resume_refuses_overrides_and_non_advancing_horizons() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(1.0)).unwrap();
    let cases = [
        (
            RunOptions::new().t(2.0).resume(true).ic(&[0.0, 0.0]),
            "'ic'",
        ),
        (
            RunOptions::new().t(2.0).resume(true).params(&[0.0; 6]),
            "'params'",
        ),
        (RunOptions::new().t(2.0).resume(true).t0(0.5), "'t0'"),
        (RunOptions::new().t(2.0).resume(true).dt(0.1), "'dt'"),
        (
            RunOptions::new().t(2.0).resume(true).transient(1.0),
            "'transient'",
        ),
        (
            RunOptions::new().t(2.0).resume(true).record_vars(&["v"]),
            "'record_vars'",
        ),
        (
            RunOptions::new().t(1.0).resume(true),
            "must exceed the current time",
        ),
    ];
    let before = sim.session_state().clone();
    for (opts, what) in cases {
        let e = sim.run(&opts).unwrap_err();
        assert!(e.message().contains(what), "{what}: {e}");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    assert!(sim.session_state().bits_eq(&before));
}

#[test]
fn map_resume_counts_iterations_since_the_recorded_start() {
    let model = Model::load("builtin://map/logistic").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().n(5)).unwrap();
    sim.run(&RunOptions::new().n(12).resume(true)).unwrap();
    let rec = sim.results().unwrap();
    assert_eq!(rec.len(), 13);
    assert_eq!(rec.step.last().unwrap(), 12);
    let e = sim.run(&RunOptions::new().n(12).resume(true)).unwrap_err();
    assert!(e.message().contains("already reached"), "{e}");
    // With a warm-up, N still counts recorded iterations.
    sim.run(&RunOptions::new().n(10).transient(5.0)).unwrap();
    let rec = sim.results().unwrap();
    assert_eq!(
        (rec.len(), rec.step.last().unwrap(), sim.step_count()),
        (11, 10, 15)
    );
}

#[test]
fn assign_is_atomic_and_suggests_names() {
    let mut sim = izh();
    let before = sim.session_state().clone();
    let e = sim.assign(&[("v", -70.0), ("Ix", 3.0)], false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownName);
    assert!(e.message().contains("'Ix' (did you mean 'I'?)"), "{e}");
    assert!(e.message().contains("Valid states: [v, u]"), "{e}");
    assert!(
        sim.session_state().bits_eq(&before),
        "a failed assign changed the state"
    );
    sim.assign(&[("v", -70.0), ("I", 3.0)], false).unwrap();
    assert_eq!(
        (sim.value("v").unwrap(), sim.value("I").unwrap()),
        (-70.0, 3.0)
    );
}

#[test]
fn presets_set_their_values_like_assign() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(5.0)).unwrap();
    let t = sim.time();
    sim.apply_preset("bursting").unwrap();
    // izhikevich.toml: bursting = (a, b, c, d) = (0.02, 0.2, -50, 2).
    let abcd: Vec<f64> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| sim.value(n).unwrap())
        .collect();
    assert_eq!(abcd, [0.02, 0.2, -50.0, 2.0]);
    assert_eq!(sim.time(), t, "a preset changes values, not time");
    assert!(sim.results().is_ok(), "results are kept");
    let before = sim.session_state().clone();
    let e = sim.apply_preset("burstng").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownName);
    assert!(e.message().contains("did you mean 'bursting'"), "{e}");
    assert!(e.message().contains("regular_spiking"), "{e}");
    assert!(sim.session_state().bits_eq(&before));
}

#[test]
fn snapshots_never_change_with_the_live_state() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(1.0)).unwrap();
    sim.create_snapshot("s", "").unwrap();
    sim.assign(&[("v", -90.0)], false).unwrap();
    sim.run(&RunOptions::new().t(2.0).resume(true)).unwrap();
    sim.reset("s").unwrap();
    assert_ne!(sim.value("v").unwrap(), -90.0);
    assert_eq!(sim.time(), 1.0);
    sim.reset("initial").unwrap();
    assert_eq!((sim.value("v").unwrap(), sim.time()), (-65.0, 0.0));
    let names: Vec<String> = sim.list_snapshots().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["initial", "s"]);
    assert_eq!(
        sim.create_snapshot("s", "").unwrap_err().kind(),
        ErrorKind::DuplicateName
    );
    assert_eq!(
        sim.create_snapshot("", "").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        sim.reset("nope").unwrap_err().kind(),
        ErrorKind::UnknownName
    );
    let (ok, diff) = sim.compat_check("s").unwrap();
    assert!(ok && diff.is_empty());
    assert_eq!(sim.can_resume(), (true, None));
    let summary = sim.summary();
    assert_eq!(summary["stepper"], "rk4");
    assert_eq!(summary["stepper_config"]["hash"], "empty");
}

#[test]
fn segment_names_stay_unique() {
    let mut sim = izh();
    sim.run(&RunOptions::new().t(1.0).tag("a")).unwrap();
    sim.run(&RunOptions::new().t(2.0).resume(true).tag("a"))
        .unwrap();
    sim.run(&RunOptions::new().t(3.0).resume(true)).unwrap();
    let names: Vec<String> = (0..3)
        .map(|i| sim.segment_name(i.into()).unwrap())
        .collect();
    assert_eq!(names, ["a", "a-2", "run#2"]);
    assert_eq!(
        sim.name_segment(SegmentRef::Name("run#2"), "baseline")
            .unwrap(),
        "baseline"
    );
    assert_eq!(sim.name_last_segment("baseline").unwrap(), "baseline");
    assert_eq!(
        sim.name_segment(0.into(), "baseline").unwrap(),
        "baseline-2"
    );
    let r = sim.segment_samples(SegmentRef::Name("a-2")).unwrap();
    let rec = sim.results().unwrap();
    assert_eq!(rec.t[r.start], 1.0 + 0.01);
    assert_eq!(rec.t[r.end - 1], 2.0);
}

#[test]
fn a_failing_run_changes_nothing() {
    let model = Model::from_toml(
        "[model]\ntype=\"ode\"\n[states]\nx = 1.0\n[equations.rhs]\nx = \"x^2\"\n",
    )
    .unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().t(0.5).dt(0.01)).unwrap();
    let before = sim.session_state().clone();
    let results_before = sim.results().unwrap().clone();
    // x' = x^2 from x(0.5) = 2 blows up at t = 1.
    let e = sim.run(&RunOptions::new().t(3.0).resume(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite, "{e}");
    assert!(e.message().contains("run failed at t ="), "{e}");
    assert!(sim.session_state().bits_eq(&before));
    assert_eq!(sim.results().unwrap(), &results_before);
    // A failing fresh run keeps the earlier results too.
    let e = sim.run(&RunOptions::new().t(3.0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert_eq!(sim.results().unwrap(), &results_before);
    // max_steps reached before the horizon is a failure as well.
    let e = sim
        .run(&RunOptions::new().t(0.9).resume(true).max_steps(5))
        .unwrap_err();
    assert!(e.message().contains("max_steps = 5"), "{e}");
    assert!(sim.session_state().bits_eq(&before));
}

#[test]
fn record_vars_in_request_order_with_aux() {
    let model = Model::load("builtin://ode/hodgkin-huxley").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(
        &RunOptions::new()
            .t(1.0)
            .record_vars(&["m", "aux.tau_m", "V", "n_inf"]),
    )
    .unwrap();
    let rec = sim.results().unwrap();
    assert_eq!(*rec.names, ["m", "tau_m", "V", "n_inf"]);
    assert_eq!(rec.column("aux.tau_m").unwrap().len(), rec.len());
    let e = sim
        .run(&RunOptions::new().t(1.0).record_vars(&["Vv"]))
        .unwrap_err();
    assert!(e.message().contains("did you mean 'V'"), "{e}");
}

#[test]
fn stop_condition_ends_the_run_early_and_matrix_view() {
    let model = Model::from_toml(
        "[model]\ntype=\"map\"\n[states]\nx = 0.0\n[equations.rhs]\nx = \"x + 1\"\n[sim]\nstop = \"x >= 4\"\n",
    )
    .unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().n(100)).unwrap();
    assert_eq!(sim.status(), dynlib::session::Status::EarlyExit);
    let rec = sim.results().unwrap();
    assert_eq!(rec.column("x").unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0]);
    let m = rec.matrix();
    assert_eq!(m.shape(), [5, 1]);
    assert_eq!(m[[4, 0]], 4.0);
}
