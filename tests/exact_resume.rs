//! The exact-resume guarantee: a run split at random seams (resumed, or snapshotted and
//! replayed after a reset) gives bit-identical samples, step labels, aux, event logs and final
//! session state compared with one uninterrupted run — for every stepper.

mod common;

use common::{committed_samples as samples, first_difference, LAGGED_MAP as MAP_MODEL};
use dynlib::session::Recording;
use dynlib::{Model, RunOptions, Sim};
use proptest::prelude::*;

/// A damped oscillator with a lagged feedback term, an aux variable and an event that kicks
/// the state and counts firings in a parameter.
const ODE_MODEL: &str = r#"inline:
[model]
type = "ode"
[states]
x = 1.0
y = 0.0
[params]
k = 4.0
c = 0.0
[aux]
energy = "x^2 + y^2/k"
[equations.rhs]
x = "y"
y = "-k*x - 0.1*y + 0.3*lag_x(2)"
[events.kick]
cond = "cross_up(x, 0.2)"
action = """
y = y + 0.05
c = c + 1
"""
log = ["t", "x", "c"]
"#;

/// Events with their owning sample mapped to the index among non-interpolated samples.
/// (event, t bits, step, owning real sample, value bits).
type EventKey = (usize, u64, u64, Option<usize>, Vec<u64>);

fn events(rec: &Recording) -> Vec<EventKey> {
    let mut real_index = Vec::new();
    let mut k = 0usize;
    for i in 0..rec.len() {
        if rec.interpolated.get(i) {
            real_index.push(k.checked_sub(1));
        } else {
            real_index.push(Some(k));
            k += 1;
        }
    }
    rec.events
        .iter()
        .map(|e| {
            (
                e.event,
                e.t.to_bits(),
                e.step,
                e.sample.and_then(|s| real_index[s]),
                e.values.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

fn base_opts(record_interval: u64) -> RunOptions {
    RunOptions::new()
        .record_interval(record_interval)
        .record_vars(&["x", "aux.energy", "y"])
}

fn horizon(kind_map: bool, k: u64, dt: f64) -> RunOptions {
    if kind_map {
        RunOptions::new().n(k)
    } else {
        RunOptions::new().t(k as f64 * dt)
    }
}

fn check_split(stepper: &str, seams: &[u64], total: u64, interval: u64) -> Result<(), String> {
    check_split_with(stepper, &[], seams, total, interval)
}

/// [`check_split`] with knobs set by the first run of each session (later runs keep them).
fn check_split_with(
    stepper: &str,
    knobs: &[(&str, f64)],
    seams: &[u64],
    total: u64,
    interval: u64,
) -> Result<(), String> {
    let is_map = stepper == "map";
    let model = Model::load(if is_map { MAP_MODEL } else { ODE_MODEL }).unwrap();
    let dt = if is_map { 1.0 } else { 0.01 };
    let vars: &[&str] = if is_map {
        &["x", "aux.dx"]
    } else {
        &["x", "aux.energy", "y"]
    };
    let first = |k: u64| {
        let mut o = horizon(is_map, k, dt).dt(dt).record_interval(interval);
        for (name, value) in knobs {
            o = o.config(name, *value);
        }
        o.record_vars = Some(vars.iter().map(|s| s.to_string()).collect());
        o
    };

    let mut whole = Sim::with_stepper(&model, Some(stepper)).unwrap();
    whole.run(&first(total)).unwrap();

    // Resumed in pieces.
    let mut split = Sim::with_stepper(&model, Some(stepper)).unwrap();
    let mut cuts: Vec<u64> = seams
        .iter()
        .copied()
        .filter(|&s| s > 0 && s < total)
        .collect();
    cuts.sort();
    cuts.dedup();
    cuts.push(total);
    split.run(&first(cuts[0])).unwrap();
    for &c in &cuts[1..] {
        split
            .run(
                &horizon(is_map, c, dt)
                    .resume(true)
                    .record_interval(interval),
            )
            .unwrap();
    }

    // Snapshot at the first seam, run on, reset, replay.
    let mut replay = Sim::with_stepper(&model, Some(stepper)).unwrap();
    replay.run(&first(cuts[0])).unwrap();
    replay.create_snapshot("seam", "").unwrap();
    replay
        .run(
            &horizon(is_map, total, dt)
                .resume(true)
                .record_interval(interval),
        )
        .unwrap();
    let before_reset = replay.session_state().clone();
    replay.reset("seam").unwrap();
    replay
        .run(
            &horizon(is_map, total, dt)
                .resume(true)
                .record_interval(interval),
        )
        .unwrap();

    let (a, b) = (whole.results().unwrap(), split.results().unwrap());
    if samples(a) != samples(b) {
        return Err(format!(
            "{stepper}: samples differ, {}",
            first_difference(&samples(a), &samples(b))
        ));
    }
    if events(a) != events(b) {
        return Err(format!(
            "{stepper}: events differ, {}",
            first_difference(&events(a), &events(b))
        ));
    }
    if !whole.session_state().bits_eq(split.session_state()) {
        return Err(format!(
            "{stepper}: final state differs: {:?} vs {:?}",
            whole.session_state(),
            split.session_state()
        ));
    }
    let n_interp = b.interpolated.count();
    let adaptive = whole.stepper().adaptive;
    if adaptive && cuts.len() > 1 && n_interp < cuts.len() - 1 {
        return Err(format!(
            "{stepper}: expected an interpolated sample per seam, got {n_interp}"
        ));
    }
    if !adaptive && n_interp != 0 {
        return Err(format!(
            "{stepper}: fixed-step run has {n_interp} interpolated samples"
        ));
    }
    if !replay.session_state().bits_eq(&before_reset)
        || !replay.session_state().bits_eq(whole.session_state())
    {
        return Err(format!(
            "{stepper}: reset + replay does not reproduce the final state"
        ));
    }
    // The replayed part equals the tail of the uninterrupted run. (A reset clears the
    // recording selection, so the replay records the default variables: compare t, step, x.)
    let key = |v: Vec<(u64, u64, Vec<u64>)>| -> Vec<(u64, u64, u64)> {
        v.into_iter().map(|(t, s, c)| (t, s, c[0])).collect()
    };
    let tail = key(samples(replay.results().unwrap()));
    let full = key(samples(a));
    if !full.ends_with(&tail[tail.len().min(1)..]) {
        return Err(format!(
            "{stepper}: replayed samples are not the tail of the whole run"
        ));
    }
    Ok(())
}

/// Every registered stepper.
const STEPPERS: [&str; 12] = [
    "euler", "rk2", "rk4", "rk45", "ab2", "ab3", "map", "bdf2", "sdirk2", "bdf2a", "tr-bdf2a",
    "bdf",
];

fn stepper_strategy() -> impl Strategy<Value = &'static str> {
    prop::sample::select(STEPPERS.to_vec())
}

#[test]
fn the_property_tests_cover_every_registered_stepper() {
    let mut listed: Vec<&str> = STEPPERS.to_vec();
    let mut registered: Vec<&str> = dynlib::stepper::all().iter().map(|i| i.name).collect();
    listed.sort();
    registered.sort();
    assert_eq!(listed, registered);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn split_runs_are_bit_identical(
        stepper in stepper_strategy(),
        seams in prop::collection::vec(1u64..300, 1..5),
        interval in 1u64..4,
    ) {
        let total = 300;
        prop_assert!(check_split(stepper, &seams, total, interval).is_ok(),
            "{}", check_split(stepper, &seams, total, interval).unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// rk45 with its PI controller on: the previous error it weighs is carried across seams.
    #[test]
    fn rk45_pi_split_runs_are_bit_identical(
        beta in 0.01f64..=0.1,
        rtol in prop::sample::select(vec![1e-3, 1e-5, 1e-8]),
        seams in prop::collection::vec(1u64..300, 1..5),
        interval in 1u64..4,
    ) {
        let knobs = [("beta", beta), ("rtol", rtol)];
        let outcome = check_split_with("rk45", &knobs, &seams, 300, interval);
        prop_assert!(outcome.is_ok(), "beta {}: {}", beta, outcome.unwrap_err());
    }
}

#[test]
fn every_stepper_is_exact_at_fixed_seams() {
    for stepper in STEPPERS {
        for seams in [vec![1], vec![2, 3], vec![150], vec![7, 100, 299]] {
            check_split(stepper, &seams, 300, 1).unwrap();
            check_split(stepper, &seams, 300, 3).unwrap();
        }
    }
}

#[test]
fn kick_event_fires_and_is_logged_with_its_sample() {
    let model = Model::load(ODE_MODEL).unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&base_opts(1).t(3.0)).unwrap();
    let rec = sim.results().unwrap();
    assert!(
        !rec.events.is_empty(),
        "the test model must exercise events"
    );
    for e in &rec.events {
        let s = e.sample.unwrap();
        // The owning sample is the last one recorded before the firing step.
        assert_eq!(rec.step.get(s) + 1, e.step);
        assert_eq!(e.values[0].to_bits(), e.t.to_bits());
    }
    // c counts the kicks.
    assert_eq!(sim.value("c").unwrap(), rec.events.len() as f64);
}

/// A resume whose horizon is still inside the step taken past the previous horizon
/// interpolates that pending step again from the saved workspace: it must give the same bits
/// as interpolating it in the run that took the step.
#[test]
fn pending_steps_interpolate_identically_after_a_resume() {
    let model = Model::load(ODE_MODEL).unwrap();
    for info in dynlib::stepper::all().iter().filter(|i| i.adaptive) {
        let opts = |t: f64| RunOptions::new().t(t).config("rtol", 1e-3);
        let t2 = 1.0;
        let mut direct = Sim::with_stepper(&model, Some(info.name)).unwrap();
        direct.run(&opts(t2)).unwrap();
        let rec = direct.results().unwrap();
        let last_step = (0..rec.len())
            .rev()
            .find(|&i| !rec.interpolated.get(i))
            .unwrap();
        assert!(
            rec.interpolated.get(rec.len() - 1),
            "{}: t2 is inside a step",
            info.name
        );
        // t1 lies in the same (pending) step as t2.
        let t1 = 0.5 * (rec.t[last_step] + t2);
        let mut split = Sim::with_stepper(&model, Some(info.name)).unwrap();
        split.run(&opts(t1)).unwrap();
        split.run(&RunOptions::new().t(t2).resume(true)).unwrap();
        assert_eq!(split.time(), t2);
        assert!(
            split.session_state().bits_eq(direct.session_state()),
            "{}: {:?} vs {:?}",
            info.name,
            split.state(),
            direct.state()
        );
    }
}
