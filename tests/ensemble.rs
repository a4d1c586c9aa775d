//! Ensembles: member i is bit-identical to a single `Sim` given the same inputs, whatever the
//! thread count, member count, seams and parameters; inputs are checked transactionally; a
//! failing member does not poison the others; one checkpoint file resumes the whole ensemble
//! bit for bit.

use dynlib::session::{Ensemble, Recording};
use dynlib::{ErrorKind, Model, RunOptions, Sim};
use proptest::prelude::*;

/// Everything recorded, as bits.
type RecBits = (
    Vec<u64>,
    Vec<u64>,
    Vec<Vec<u64>>,
    Vec<(usize, u64, u64, Vec<u64>)>,
);

fn rec_bits(r: &Recording) -> RecBits {
    (
        r.t.iter().map(|v| v.to_bits()).collect(),
        r.step.to_vec(),
        r.columns
            .iter()
            .map(|c| c.iter().map(|v| v.to_bits()).collect())
            .collect(),
        r.events
            .iter()
            .map(|e| {
                (
                    e.event,
                    e.t.to_bits(),
                    e.step,
                    e.values.iter().map(|v| v.to_bits()).collect(),
                )
            })
            .collect(),
    )
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// (source, stepper, param to vary, its range, horizon pieces)
const CASES: &[(&str, &str, &str, f64, f64)] = &[
    ("builtin://ode/izhikevich", "rk4", "I", 0.0, 20.0),
    ("builtin://ode/izhikevich", "rk45", "I", 0.0, 20.0),
    ("builtin://ode/lorenz", "rk4", "rho", 10.0, 40.0),
    ("builtin://ode/lorenz", "ab3", "rho", 10.0, 40.0),
    ("builtin://map/logistic", "map", "r", 2.5, 4.0),
];

fn horizon(src: &str, piece: u32) -> RunOptions {
    if src.contains("map/") {
        RunOptions::new().n(u64::from(piece) * 37)
    } else if src.contains("lorenz") {
        RunOptions::new().t(f64::from(piece) * 0.25)
    } else {
        RunOptions::new().t(f64::from(piece) * 20.0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn member_i_is_bit_identical_to_a_single_sim(
        case in 0..CASES.len(),
        n in 1usize..9,
        threads in 0usize..5,
        seams in proptest::collection::vec(1u32..4, 1..4),
        fractions in proptest::collection::vec(0.0f64..1.0, 8),
        record in any::<bool>(),
        via_checkpoint in any::<bool>(),
    ) {
        let (src, stepper, pname, lo, hi) = CASES[case];
        let model = Model::load(src).unwrap();
        let values: Vec<f64> = (0..n).map(|i| lo + (hi - lo) * fractions[i % fractions.len()]).collect();
        let mut ens = Ensemble::with_stepper(&model, Some(stepper), n).unwrap();
        ens.set_param_column(pname, &values).unwrap();

        let mut singles: Vec<Sim> = values.iter().map(|v| {
            let mut s = Sim::with_stepper(&model, Some(stepper)).unwrap();
            s.assign(&[(pname, *v)], false).unwrap();
            s
        }).collect();
        let mut single_events = vec![0u64; n];
        let mut end = 0u32;
        for (k, piece) in seams.iter().enumerate() {
            end += piece;
            let opts = horizon(src, end).resume(k > 0).record(record);
            if via_checkpoint && k > 0 {
                // Interrupt: a fresh ensemble (other inputs) imports the checkpoint and resumes.
                let bytes = ens.serialize_checkpoint().unwrap();
                let mut other = Ensemble::with_stepper(&model, Some(stepper), n).unwrap();
                other.deserialize_checkpoint(&bytes).unwrap();
                ens = other;
                for s in &mut singles {
                    let b = s.serialize_snapshot(None).unwrap();
                    let mut t = Sim::with_stepper(&model, Some(stepper)).unwrap();
                    t.deserialize_snapshot(&b).unwrap();
                    *s = t;
                }
            }
            ens.run(&opts, threads).unwrap();
            for (s, count) in singles.iter_mut().zip(&mut single_events) {
                let before = if k > 0 { s.results().map_or(0, |r| r.events.len()) } else { 0 };
                s.run(&opts).unwrap();
                *count = if k > 0 { *count } else { 0 } + (s.results().unwrap().events.len() - before) as u64;
            }
        }
        let finals = ens.final_states();
        let ns = model.n_states();
        for (i, s) in singles.iter().enumerate() {
            prop_assert_eq!(bits(&finals[i * ns..(i + 1) * ns]), bits(s.state()), "member {}", i);
            let m = ens.member(i).unwrap();
            prop_assert!(m.session_state().bits_eq(s.session_state()), "member {} session", i);
            prop_assert_eq!(ens.times()[i].to_bits(), s.time().to_bits());
            if record {
                prop_assert_eq!(rec_bits(m.results().unwrap()), rec_bits(s.results().unwrap()));
            } else {
                // Reduction only: no samples, no event log kept; the count matches the single sim.
                let r = m.results().unwrap();
                prop_assert_eq!(r.len(), 0);
                prop_assert!(r.events.is_empty());
            }
            prop_assert_eq!(ens.event_counts()[i], single_events[i], "member {} events", i);
        }
    }
}

#[test]
fn thread_count_never_changes_a_bit() {
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let n = 64;
    let current: Vec<f64> = (0..n).map(|i| 2.0 + 0.25 * i as f64).collect();
    let mut reference = None;
    for threads in [1, 2, 3, 0, 7] {
        let mut ens = Ensemble::new(&model, n).unwrap();
        ens.set_param_column("I", &current).unwrap();
        ens.run(&RunOptions::new().t(100.0).record(false), threads)
            .unwrap();
        ens.run(
            &RunOptions::new().t(150.0).resume(true).record(false),
            threads,
        )
        .unwrap();
        // Reduction only: no sample or event buffers are kept between runs.
        for i in [0, n - 1] {
            let r = ens.member(i).unwrap().results().unwrap();
            assert_eq!((r.t.capacity(), r.events.capacity()), (0, 0), "member {i}");
        }
        let got = (bits(&ens.final_states()), ens.event_counts());
        assert!(got.1.iter().any(|c| *c > 0), "some members spike");
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(r, &got, "threads = {threads}"),
        }
    }
}

#[test]
fn inputs_are_checked_before_anything_changes() {
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let e = Ensemble::new(&model, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("n_members is 0"), "{}", e.message());

    let mut ens = Ensemble::new(&model, 3).unwrap();
    let np = model.n_params();
    let before = ens.params();
    let e = ens.set_params(&vec![1.0; 2 * np], 2, np).unwrap_err();
    assert!(
        e.message().contains("2 rows") && e.message().contains("3 members"),
        "{}",
        e.message()
    );
    let e = ens
        .set_params(&vec![1.0; 3 * (np + 1)], 3, np + 1)
        .unwrap_err();
    assert!(e.message().contains("columns"), "{}", e.message());
    let mut m = vec![1.0; 3 * np];
    m[2 * np + 1] = f64::NAN;
    let e = ens.set_params(&m, 3, np).unwrap_err();
    assert!(
        e.message().contains("row 2, column 1") && e.message().contains("NaN"),
        "{}",
        e.message()
    );
    let e = ens.set_ic(&[0.0; 5], 3, 2).unwrap_err();
    assert!(e.message().contains("needs 6 values"), "{}", e.message());
    let e = ens.set_param_column("II", &[1.0, 2.0, 3.0]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownName);
    assert!(e.message().contains("did you mean"), "{}", e.message());
    let e = ens
        .set_param_column("I", &[1.0, f64::INFINITY, 3.0])
        .unwrap_err();
    assert!(e.message().contains("[row 1]"), "{}", e.message());
    assert_eq!(bits(&ens.params()), bits(&before), "nothing changed");
    // Options no member accepts: refused before any member runs.
    let e = ens
        .run(&RunOptions::new().t(10.0).resume(true).ic(&[0.0, 0.0]), 1)
        .unwrap_err();
    assert!(
        e.message().contains("does not accept 'ic'"),
        "{}",
        e.message()
    );
    assert!(ens.member(0).unwrap().results().is_err(), "no member ran");
    assert!(ens.member(3).is_err());

    let ic = [-70.0, -14.0, -65.0, -13.0, -60.0, -12.0];
    ens.set_ic(&ic, 3, 2).unwrap();
    assert_eq!(bits(&ens.final_states()), bits(&ic));
}

const BLOWUP: &str = r#"inline:
[model]
type = "ode"
[states]
x = 1.0
[params]
a = 1.0
[equations.rhs]
x = "a*x*x"
[sim]
dt = 0.01
t_end = 1.0
"#;

#[test]
fn a_failing_member_does_not_poison_the_others() {
    let model = Model::load(BLOWUP).unwrap();
    let mut ens = Ensemble::new(&model, 4).unwrap();
    // dx/dt = a x^2 blows up at t = 1/a: member 2 (a = 5) fails before T = 0.5.
    ens.set_param_column("a", &[-1.0, 0.5, 5.0, 1.0]).unwrap();
    let e = ens.run(&RunOptions::new().t(0.5), 2).unwrap_err();
    assert!(
        e.message().starts_with("1 of 4 members failed") && e.message().contains("member 2"),
        "{}",
        e.message()
    );
    assert_eq!(ens.n_failed(), 1);
    assert!(ens.member_error(2).unwrap().is_some());
    for i in [0, 1, 3] {
        assert!(ens.member_error(i).unwrap().is_none());
        let mut s = Sim::new(&model).unwrap();
        s.assign(&[("a", [-1.0, 0.5, 5.0, 1.0][i])], false).unwrap();
        s.run(&RunOptions::new().t(0.5)).unwrap();
        assert_eq!(bits(ens.member(i).unwrap().state()), bits(s.state()));
    }
    // The failed member kept its previous state (a failed run changes nothing).
    assert_eq!(ens.times()[2], 0.0);
    assert_eq!(ens.final_states()[2], 1.0);
    // A later run with a fixed input clears its status.
    ens.set_param_column("a", &[-1.0, 0.5, 0.1, 1.0]).unwrap();
    ens.run(&RunOptions::new().t(0.5), 1).unwrap();
    assert_eq!(ens.n_failed(), 0);
}

#[test]
fn one_checkpoint_file_resumes_the_ensemble_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/ens.npz");
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let n = 16;
    let current: Vec<f64> = (0..n).map(|i| 5.0 + i as f64).collect();
    let fresh = || {
        let mut e = Ensemble::new(&model, n).unwrap();
        e.set_param_column("I", &current).unwrap();
        e
    };
    let mut whole = fresh();
    whole
        .run(&RunOptions::new().t(300.0).record(false), 0)
        .unwrap();

    let mut a = fresh();
    a.run(&RunOptions::new().t(120.0).record(false), 2).unwrap();
    a.export_checkpoint(&path).unwrap();
    let mut b = Ensemble::new(&model, n).unwrap(); // default params: the file brings them
    b.import_checkpoint(&path).unwrap();
    assert_eq!(bits(&b.params()), bits(&a.params()));
    b.run(&RunOptions::new().t(300.0).resume(true).record(false), 1)
        .unwrap();
    assert_eq!(bits(&b.final_states()), bits(&whole.final_states()));
    assert_eq!(b.event_counts(), whole.event_counts());
    assert_eq!(b.step_counts(), whole.step_counts());

    // Refusals change nothing.
    let mut c = Ensemble::new(&model, n + 1).unwrap();
    let e = c.import_checkpoint(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Incompatible);
    assert!(e.message().contains("holds 16 members"), "{}", e.message());
    let mut lorenz = Ensemble::new(&Model::load("builtin://ode/lorenz").unwrap(), n).unwrap();
    let e = lorenz.import_checkpoint(&path).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Incompatible), "{e:?}");
    let mut sim = Sim::new(&model).unwrap();
    let e = sim.import_snapshot(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CorruptSnapshot, "{e:?}");
    let mut bytes = std::fs::read(&path).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 0x55;
    let before = bits(&b.final_states());
    assert!(b.deserialize_checkpoint(&bytes).is_err());
    assert!(b.deserialize_checkpoint(&bytes[..100]).is_err());
    assert_eq!(bits(&b.final_states()), before);
}

#[test]
fn from_sim_copies_the_session_state() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().t(1.0)).unwrap();
    let mut ens = Ensemble::from_sim(&sim, 3).unwrap();
    assert_eq!(bits(&ens.final_states()[..3]), bits(sim.state()));
    ens.run(&RunOptions::new().t(2.0).resume(true), 0).unwrap();
    sim.run(&RunOptions::new().t(2.0).resume(true)).unwrap();
    for i in 0..3 {
        let m = ens.member_sim(i).unwrap();
        assert!(m.session_state().bits_eq(sim.session_state()));
        // A member's recording holds only what it ran as a member: the sim's last samples.
        let (mr, sr) = (m.results().unwrap(), sim.results().unwrap());
        assert!(
            mr.len() >= 100 && mr.len() < sr.len(),
            "{} {}",
            mr.len(),
            sr.len()
        );
        let off = sr.len() - mr.len();
        assert_eq!(rec_bits(mr).0, rec_bits(sr).0[off..].to_vec());
        assert_eq!(rec_bits(mr).2[0], rec_bits(sr).2[0][off..].to_vec());
    }
}

/// A child process runs the first piece, exports the checkpoint and dies (abort, no cleanup);
/// this process imports the file and resumes: the same bits as one uninterrupted run.
#[test]
fn a_killed_process_checkpoint_resumes_bit_for_bit() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let n = 24;
    let rho: Vec<f64> = (0..n).map(|i| 10.0 + i as f64).collect();
    let fresh = || {
        let mut e = Ensemble::new(&model, n).unwrap();
        e.set_param_column("rho", &rho).unwrap();
        e
    };
    if let Ok(path) = std::env::var("DYNLIB_ENSEMBLE_CHILD_CHECKPOINT") {
        let mut e = fresh();
        e.run(&RunOptions::new().t(1.5).record(false), 2).unwrap();
        e.export_checkpoint(&path).unwrap();
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("child.npz");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_killed_process_checkpoint_resumes_bit_for_bit",
            "--exact",
            "--nocapture",
        ])
        .env("DYNLIB_ENSEMBLE_CHILD_CHECKPOINT", &path)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die");
    let mut resumed = Ensemble::new(&model, n).unwrap();
    resumed.import_checkpoint(&path).unwrap();
    resumed
        .run(&RunOptions::new().t(4.0).resume(true).record(false), 0)
        .unwrap();
    let mut whole = fresh();
    whole
        .run(&RunOptions::new().t(4.0).record(false), 1)
        .unwrap();
    assert_eq!(bits(&resumed.final_states()), bits(&whole.final_states()));
    assert_eq!(resumed.step_counts(), whole.step_counts());
}

// ------------------------------------------------------------ lock-step kernel

/// A lagged oscillator whose crossing event kicks the state and counts in a parameter,
/// whose stop condition ends some members early (`x_stop`), and whose cubic term blows
/// some members up to a non-finite state (`g`).
const LOCKSTEP_MODEL: &str = r#"inline:
[model]
type = "ode"
[states]
x = 1.0
y = 0.0
[params]
k = 4.0
c = 0.0
g = 0.0
x_stop = 100.0
[equations.rhs]
x = "y"
y = "-k*x - 0.1*y + 0.3*lag_x(2) + g*y*y*y + 0.01*sin(t)"
[events.kick]
cond = "cross_up(x, 0.2)"
action = """
y = y + 0.05
c = c + 1
"""
[sim]
stop = "x > x_stop"
"#;

/// (source, stepper, varied parameters (name, low, high), horizon of piece 1)
type LockstepCase = (
    &'static str,
    &'static str,
    &'static [(&'static str, f64, f64)],
    f64,
);

const LOCKSTEP_CASES: &[LockstepCase] = &[
    ("builtin://ode/izhikevich", "rk4", &[("I", 0.0, 20.0)], 20.0),
    ("builtin://ode/lorenz", "rk4", &[("rho", 10.0, 40.0)], 0.25),
    (
        "builtin://ode/lorenz",
        "euler",
        &[("rho", 10.0, 40.0)],
        0.25,
    ),
    ("builtin://ode/lorenz", "rk2", &[("rho", 10.0, 40.0)], 0.25),
    ("builtin://ode/lorenz", "ab2", &[("rho", 10.0, 40.0)], 0.25),
    ("builtin://ode/lorenz", "ab3", &[("rho", 10.0, 40.0)], 0.25),
    ("builtin://ode/izhikevich", "ab2", &[("I", 0.0, 20.0)], 20.0),
    ("builtin://map/logistic", "map", &[("r", 2.5, 4.0)], 37.0),
    (
        LOCKSTEP_MODEL,
        "rk4",
        &[("k", 1.0, 8.0), ("x_stop", 0.5, 3.0), ("g", 0.0, 40.0)],
        3.0,
    ),
    (
        LOCKSTEP_MODEL,
        "ab3",
        &[("k", 1.0, 8.0), ("x_stop", 0.5, 3.0), ("g", 0.0, 40.0)],
        3.0,
    ),
    (
        LOCKSTEP_MODEL,
        "euler",
        &[("k", 1.0, 8.0), ("x_stop", 0.5, 3.0), ("g", 0.0, 40.0)],
        3.0,
    ),
];

fn piece_opts(src: &str, horizon: f64, end: u32) -> RunOptions {
    if src.contains("map/") {
        RunOptions::new().n(horizon as u64 * u64::from(end))
    } else {
        RunOptions::new().t(horizon * f64::from(end))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Member i of a lock-step ensemble — any lane count, member count (not a multiple of
    /// it), thread count, seams — is bit-identical to a single Sim, including members whose
    /// events fire, that stop mid-run or whose state becomes non-finite (they fail, with the
    /// single Sim's error).
    #[test]
    fn lockstep_members_are_bit_identical_to_single_sims(
        case in 0..LOCKSTEP_CASES.len(),
        n in 1usize..40,
        lanes in prop::sample::select(vec![0usize, 2, 3, 4, 8, 16, 32]),
        threads in 0usize..4,
        seams in proptest::collection::vec(1u32..3, 1..4),
        fractions in proptest::collection::vec(0.0f64..1.0, 24),
        record in prop::bool::weighted(0.2),
    ) {
        let (src, stepper, varied, horizon) = LOCKSTEP_CASES[case];
        let model = Model::load(src).unwrap();
        let mut ens = Ensemble::with_stepper(&model, Some(stepper), n).unwrap();
        ens.set_lockstep_lanes(lanes).unwrap();
        let mut singles: Vec<Sim> = (0..n).map(|_| Sim::with_stepper(&model, Some(stepper)).unwrap()).collect();
        for (j, &(name, lo, hi)) in varied.iter().enumerate() {
            let values: Vec<f64> = (0..n)
                .map(|i| lo + (hi - lo) * fractions[(i * 7 + j * 5) % fractions.len()])
                .collect();
            ens.set_param_column(name, &values).unwrap();
            for (s, v) in singles.iter_mut().zip(&values) {
                s.assign(&[(name, *v)], false).unwrap();
            }
        }
        let mut single_events = vec![0u64; n];
        let mut end = 0u32;
        for (k, piece) in seams.iter().enumerate() {
            end += piece;
            let opts = piece_opts(src, horizon, end).resume(k > 0).record(record);
            let _ = ens.run(&opts, threads);
            for (i, (s, count)) in singles.iter_mut().zip(&mut single_events).enumerate() {
                let before = if k > 0 { s.results().map_or(0, |r| r.events.len()) } else { 0 };
                let single = s.run(&opts);
                let member = ens.member_error(i).unwrap();
                match (&single, member) {
                    (Ok(()), None) => {}
                    (Err(a), Some(b)) => prop_assert_eq!(a.message(), b.message(), "member {}", i),
                    _ => prop_assert!(false, "member {} single {:?} vs ensemble {:?}", i, single, member),
                }
                if single.is_ok() {
                    let fired = s.results().unwrap().events.len() - before;
                    *count = if k > 0 { *count } else { 0 } + fired as u64;
                    prop_assert_eq!(
                        ens.member(i).unwrap().last_run_stats().steps,
                        s.last_run_stats().steps,
                        "member {} steps", i
                    );
                }
            }
        }
        let ns = model.n_states();
        let finals = ens.final_states();
        for (i, s) in singles.iter().enumerate() {
            prop_assert_eq!(bits(&finals[i * ns..(i + 1) * ns]), bits(s.state()), "member {}", i);
            let m = ens.member(i).unwrap();
            prop_assert!(m.session_state().bits_eq(s.session_state()), "member {} session", i);
            prop_assert_eq!(m.status(), s.status(), "member {} status", i);
            prop_assert_eq!(ens.event_counts()[i], single_events[i], "member {} events", i);
            if record {
                prop_assert_eq!(m.results().ok().map(rec_bits), s.results().ok().map(rec_bits));
            }
        }
    }
}

/// The lock-step path really runs (and only when it may): nearly every member-step of a
/// reduction-only Izhikevich rk4 ensemble goes through the kernel, with spikes (events)
/// taken by the members' own runners; recording, lanes = 0 or an adaptive stepper use none.
#[test]
fn the_lockstep_kernel_takes_the_steps_of_plain_runs() {
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let n = 37;
    let current: Vec<f64> = (0..n).map(|i| 2.0 + 0.4 * i as f64).collect();
    let opts = RunOptions::new().t(200.0).dt(0.01).record(false);
    let steps_per_member = 20_000u64;
    let mut reference: Option<(Vec<u64>, Vec<u64>)> = None;
    for lanes in [8, 0, 2, 16] {
        let mut ens = Ensemble::with_stepper(&model, Some("rk4"), n).unwrap();
        ens.set_param_column("I", &current).unwrap();
        ens.set_lockstep_lanes(lanes).unwrap();
        ens.run(&opts, 2).unwrap();
        let taken = ens.last_run_lockstep_steps();
        if lanes == 0 {
            assert_eq!(taken, 0);
        } else {
            // Spiking members leave the kernel for one step per spike only.
            let total = n as u64 * steps_per_member;
            let spikes: u64 = ens.event_counts().iter().sum();
            assert!(spikes > 100, "the members spike ({spikes} events)");
            assert_eq!(taken + spikes, total, "lanes = {lanes}");
        }
        let got = (bits(&ens.final_states()), ens.event_counts());
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(r, &got, "lanes = {lanes}"),
        }
    }
    for (stepper, record) in [("rk4", true), ("rk45", false)] {
        let mut ens = Ensemble::with_stepper(&model, Some(stepper), 4).unwrap();
        ens.run(&RunOptions::new().t(5.0).record(record), 1)
            .unwrap();
        assert_eq!(
            ens.last_run_lockstep_steps(),
            0,
            "{stepper} record={record}"
        );
    }
    assert!(Ensemble::new(&model, 1)
        .unwrap()
        .set_lockstep_lanes(1000)
        .is_err());
}

/// Adams methods go through the kernel once their history is full: every member-step but
/// the start-up ones (ab2: 1, ab3: 2 per member) in a fresh run, every one in a resumed
/// run, and the members end as single sims do.
#[test]
fn the_lockstep_kernel_continues_adams_histories() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let n = 13;
    let rho: Vec<f64> = (0..n).map(|i| 10.0 + 2.0 * i as f64).collect();
    for (stepper, start_up) in [("ab2", 1u64), ("ab3", 2)] {
        let mut ens = Ensemble::with_stepper(&model, Some(stepper), n).unwrap();
        ens.set_param_column("rho", &rho).unwrap();
        let fresh = RunOptions::new().t(1.0).dt(0.001).record(false);
        ens.run(&fresh, 2).unwrap();
        assert_eq!(
            ens.last_run_lockstep_steps(),
            n as u64 * (1000 - start_up),
            "{stepper}"
        );
        let resumed = RunOptions::new().t(1.5).resume(true).record(false);
        ens.run(&resumed, 2).unwrap();
        assert_eq!(
            ens.last_run_lockstep_steps(),
            n as u64 * 500,
            "{stepper} resumed"
        );
        for (i, &r) in rho.iter().enumerate() {
            let mut s = Sim::with_stepper(&model, Some(stepper)).unwrap();
            s.assign(&[("rho", r)], false).unwrap();
            s.run(&fresh).unwrap();
            s.run(&resumed).unwrap();
            let m = ens.member(i).unwrap();
            assert!(
                m.session_state().bits_eq(s.session_state()),
                "{stepper} member {i}"
            );
        }
    }
}

/// In one lock-step run, members fire events, stop early and fail on a non-finite state —
/// each as its single Sim does — while the others stay in the kernel.
#[test]
fn lockstep_members_fire_stop_and_fail_like_single_sims() {
    let model = Model::load(LOCKSTEP_MODEL).unwrap();
    let n = 21;
    let mut ens = Ensemble::with_stepper(&model, Some("rk4"), n).unwrap();
    let x_stop: Vec<f64> = (0..n)
        .map(|i| if i % 3 == 0 { 0.9 } else { 100.0 })
        .collect();
    let g: Vec<f64> = (0..n)
        .map(|i| if i % 5 == 1 { 60.0 } else { 0.0 })
        .collect();
    ens.set_param_column("x_stop", &x_stop).unwrap();
    ens.set_param_column("g", &g).unwrap();
    let opts = RunOptions::new().t(20.0).record(false);
    assert!(ens.run(&opts, 2).is_err(), "the blown-up members fail");
    assert!(ens.last_run_lockstep_steps() > 0);
    let (mut stopped, mut failed, mut fired) = (0, 0, 0);
    for i in 0..n {
        let mut s = Sim::with_stepper(&model, Some("rk4")).unwrap();
        s.assign(&[("x_stop", x_stop[i]), ("g", g[i])], false)
            .unwrap();
        let single = s.run(&opts);
        let m = ens.member(i).unwrap();
        match (&single, ens.member_error(i).unwrap()) {
            (Err(a), Some(b)) => {
                assert_eq!(a.message(), b.message());
                failed += 1;
            }
            (Ok(()), None) => {
                stopped += usize::from(s.status() == dynlib::session::Status::EarlyExit);
                fired += usize::from(!s.results().unwrap().events.is_empty());
                assert_eq!(
                    ens.event_counts()[i],
                    s.results().unwrap().events.len() as u64
                );
            }
            other => panic!("member {i}: {other:?}"),
        }
        assert!(m.session_state().bits_eq(s.session_state()), "member {i}");
        assert_eq!(m.status(), s.status(), "member {i}");
    }
    assert!(
        stopped > 0 && failed > 0 && fired > 0,
        "{stopped} stopped, {failed} failed, {fired} fired"
    );
}

/// The kernel's finiteness check flags a lane when the sum of its new state is not finite:
/// members whose states are finite but sum past the largest double take those steps through
/// their own runners (no failure, single-sim bits), the others stay in the kernel.
#[test]
fn lockstep_lanes_whose_state_sum_overflows_take_host_steps() {
    let model = Model::load(
        r#"inline:
[model]
type = "ode"
[states]
a = 1.0
b = 1.0
[params]
r = 0.0
[equations.rhs]
a = "r*a"
b = "-r*b"
"#,
    )
    .unwrap();
    let n = 11;
    let big: Vec<f64> = (0..n)
        .map(|i| if i % 3 == 0 { 1.5e308 } else { 0.5 })
        .collect();
    let rate: Vec<f64> = (0..n).map(|i| 1e-3 * i as f64).collect();
    let opts = RunOptions::new().t(1.0).dt(0.01).record(false);
    for stepper in ["rk4", "rk2", "euler"] {
        let mut ens = Ensemble::with_stepper(&model, Some(stepper), n).unwrap();
        ens.set_column("a", &big).unwrap();
        ens.set_column("b", &big).unwrap();
        ens.set_param_column("r", &rate).unwrap();
        ens.set_lockstep_lanes(4).unwrap();
        ens.run(&opts, 1).unwrap();
        let huge = big.iter().filter(|&&v| v > 1.0).count() as u64;
        assert_eq!(
            ens.last_run_lockstep_steps(),
            (n as u64 - huge) * 100,
            "{stepper}: every step of the ordinary members, none of the huge ones"
        );
        for i in 0..n {
            let mut s = Sim::with_stepper(&model, Some(stepper)).unwrap();
            s.assign(&[("a", big[i]), ("b", big[i]), ("r", rate[i])], false)
                .unwrap();
            s.run(&opts).unwrap();
            let m = ens.member(i).unwrap();
            assert!(
                m.session_state().bits_eq(s.session_state()),
                "{stepper} member {i}"
            );
            assert!(m.session_state().y.iter().all(|v| v.is_finite()));
        }
    }
}

/// The default lane count follows the model (16 without events, 8 with), and a batch is
/// never wider than the ensemble: a 3-member ensemble still takes every step in the kernel
/// and ends as single sims do.
#[test]
fn default_lanes_follow_the_model_and_the_member_count() {
    let lorenz = Model::load("builtin://ode/lorenz").unwrap();
    let izhikevich = Model::load("builtin://ode/izhikevich").unwrap();
    assert_eq!(Ensemble::new(&lorenz, 4).unwrap().lockstep_lanes(), 16);
    assert_eq!(Ensemble::new(&izhikevich, 4).unwrap().lockstep_lanes(), 8);
    let rho = [12.0, 28.0, 35.0];
    let opts = RunOptions::new().t(2.0).dt(0.01).record(false);
    let mut ens = Ensemble::with_stepper(&lorenz, Some("rk4"), 3).unwrap();
    ens.set_param_column("rho", &rho).unwrap();
    ens.run(&opts, 1).unwrap();
    assert_eq!(ens.last_run_lockstep_steps(), 3 * 200);
    for (i, &r) in rho.iter().enumerate() {
        let mut s = Sim::with_stepper(&lorenz, Some("rk4")).unwrap();
        s.assign(&[("rho", r)], false).unwrap();
        s.run(&opts).unwrap();
        assert!(ens
            .member(i)
            .unwrap()
            .session_state()
            .bits_eq(s.session_state()));
    }
}

/// `bytes` (an npz) with its members passed through `edit`.
fn edited_npz(
    bytes: &[u8],
    edit: impl FnOnce(&mut Vec<(String, dynlib::persist::npy::NpyArray)>),
) -> Vec<u8> {
    use dynlib::persist::npz::{read_npz, write_npz, Limits};
    let mut members = read_npz(bytes, &Limits::default()).unwrap();
    edit(&mut members);
    write_npz(&members).unwrap()
}

#[test]
fn malformed_checkpoints_are_refused_with_the_problem_named() {
    use dynlib::persist::npy::{NpyArray, NpyData};
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let n = 4;
    let mut ens = Ensemble::new(&model, n).unwrap();
    ens.run(&RunOptions::new().t(5.0).record(false), 1).unwrap();
    let good = ens.serialize_checkpoint().unwrap();
    let before = bits(&ens.final_states());
    let meta_with = |bytes: &[u8], key: &str, value: serde_json::Value| {
        edited_npz(bytes, |m| {
            let (_, a) = m.iter_mut().find(|(k, _)| k == "meta.json").unwrap();
            let NpyData::U8(raw) = &a.data else {
                panic!("meta")
            };
            let mut meta: serde_json::Value = serde_json::from_slice(raw).unwrap();
            meta[key] = value;
            let raw = serde_json::to_vec(&meta).unwrap();
            *a = NpyArray {
                shape: vec![raw.len()],
                data: NpyData::U8(raw),
            };
        })
    };
    let single = Sim::new(&model).unwrap().serialize_snapshot(None).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (single, "single-sim snapshot"),
        (
            meta_with(&good, "schema", "dynlib-ensemble-v9".into()),
            "unsupported schema",
        ),
        (
            meta_with(&good, "n_members", 5.into()),
            "holds 5 members, this ensemble has 4",
        ),
        (
            meta_with(&good, "state_names", 7.into()),
            "'state_names' must be a list of strings",
        ),
        (
            edited_npz(&good, |m| m.retain(|(k, _)| k != "event_counts")),
            "missing member 'event_counts'",
        ),
        (
            edited_npz(&good, |m| {
                let (_, a) = m.iter_mut().find(|(k, _)| k == "y").unwrap();
                a.shape[0] = 2;
                a.shape[1] *= 2;
            }),
            "member 'y' must be a float64 array with 4 rows",
        ),
        (
            edited_npz(&good, |m| {
                let (_, a) = m.iter_mut().find(|(k, _)| k == "event_counts").unwrap();
                a.data = NpyData::I64(vec![1, -1, 0, 0]);
            }),
            "'event_counts' must be 4 non-negative int64 values",
        ),
        (
            edited_npz(&good, |m| {
                let junk = NpyArray {
                    shape: vec![3],
                    data: NpyData::F64(vec![0.0; 3]),
                };
                m.push(("notes".into(), junk));
            }),
            "unexpected member 'notes'",
        ),
        (
            edited_npz(&good, |m| {
                let junk = NpyArray {
                    shape: vec![3, 1],
                    data: NpyData::F64(vec![0.0; 3]),
                };
                m.push(("workspace/stepper/extra".into(), junk));
            }),
            "member 'workspace/stepper/extra' must have 4 rows",
        ),
    ];
    for (bytes, needle) in cases {
        let e = ens.deserialize_checkpoint(&bytes).unwrap_err();
        assert!(e.message().contains(needle), "{needle}: {}", e.message());
        assert_eq!(
            bits(&ens.final_states()),
            before,
            "{needle}: nothing changed"
        );
    }
    // The untouched file still imports, so each refusal above is the edit's.
    ens.deserialize_checkpoint(&good).unwrap();
}

/// The kernel adds the stages to `y + 0`, as the single loop does, not to `y`: they differ
/// only for a state of -0.0 whose increment is -0.0 (`-0 + -0 = -0`, `+0 + -0 = +0`). A
/// state `x' = x` from -0.0 (every slope -0.0 or +0.0) and one from +0.0 end with the
/// single sims' signs, in every Runge-Kutta method and lane count; the kernel takes every
/// step.
#[test]
fn lockstep_signed_zeros_are_the_single_loops() {
    let model = Model::load(
        r#"inline:
[model]
type = "ode"
[states]
x = 0.0
[params]
r = 1.0
[equations.rhs]
x = "r*x"
"#,
    )
    .unwrap();
    let starts = [-0.0, 0.0, -0.0, -0.0, 0.0];
    let opts = RunOptions::new().t(0.1).dt(0.01).record(false);
    for stepper in ["rk4", "rk2", "euler"] {
        let mut s = Sim::with_stepper(&model, Some(stepper)).unwrap();
        s.assign(&[("x", -0.0)], false).unwrap();
        s.run(&opts).unwrap();
        let from_negative = s.state()[0].to_bits();
        for lanes in [2, 4] {
            let mut ens = Ensemble::with_stepper(&model, Some(stepper), starts.len()).unwrap();
            ens.set_column("x", &starts).unwrap();
            ens.set_lockstep_lanes(lanes).unwrap();
            ens.run(&opts, 1).unwrap();
            assert_eq!(ens.last_run_lockstep_steps(), 10 * starts.len() as u64);
            for (i, &x0) in starts.iter().enumerate() {
                let mut s = Sim::with_stepper(&model, Some(stepper)).unwrap();
                s.assign(&[("x", x0)], false).unwrap();
                s.run(&opts).unwrap();
                assert_eq!(
                    ens.final_states()[i].to_bits(),
                    s.state()[0].to_bits(),
                    "{stepper}, {lanes} lanes, member {i} from {x0:?}"
                );
            }
        }
        if stepper == "rk4" {
            // What makes the test bite: y + 0 and y really part ways here.
            assert_eq!(
                from_negative,
                0.0f64.to_bits(),
                "rk4 from -0.0 ends at +0.0"
            );
        }
    }
}

/// Batches whose lanes share some parameters run a loop that reads those once per call
/// (`batch.rs`, `shared_params`): a batch sharing every parameter, one sharing all but
/// `rho`, one sharing none, and a member count that leaves a partial last batch — each
/// member bit-identical to the one-by-one run, every step in the kernel.
#[test]
fn lockstep_shared_parameters_give_the_per_lane_bits() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let n = 14;
    // Lanes 0-3 share everything, 4-7 share sigma and beta, 8-13 share nothing.
    let rho: Vec<f64> = (0..n)
        .map(|i| if i < 4 { 28.0 } else { 20.0 + i as f64 })
        .collect();
    let sigma: Vec<f64> = (0..n)
        .map(|i| if i < 8 { 10.0 } else { 9.0 + 0.25 * i as f64 })
        .collect();
    let opts = RunOptions::new().t(2.0).dt(0.001).record(false);
    let mut reference: Option<Vec<u64>> = None;
    for lanes in [0, 4, 2] {
        let mut ens = Ensemble::with_stepper(&model, Some("rk4"), n).unwrap();
        ens.set_param_column("rho", &rho).unwrap();
        ens.set_param_column("sigma", &sigma).unwrap();
        ens.set_lockstep_lanes(lanes).unwrap();
        ens.run(&opts, 1).unwrap();
        let expected = if lanes == 0 { 0 } else { n as u64 * 2000 };
        assert_eq!(ens.last_run_lockstep_steps(), expected, "lanes = {lanes}");
        let got = bits(&ens.final_states());
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(r, &got, "lanes = {lanes}"),
        }
    }
}

/// A member's "initial" snapshot is the state its first run started from (its options' t0,
/// ic and dt applied), as a single Sim's, whether the run went lock-step or one by one: the
/// snapshot is packed when the run starts and kept when it commits.
#[test]
fn members_initial_snapshots_are_the_single_sims() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let n = 5;
    let rho: Vec<f64> = (0..n).map(|i| 10.0 + 3.0 * i as f64).collect();
    let ic = [1.0, 2.0, 3.0];
    let opts = RunOptions::new()
        .t0(0.5)
        .t(1.0)
        .dt(0.01)
        .ic(&ic)
        .record(false);
    for lanes in [0, 4] {
        let mut ens = Ensemble::with_stepper(&model, Some("rk4"), n).unwrap();
        ens.set_param_column("rho", &rho).unwrap();
        ens.set_lockstep_lanes(lanes).unwrap();
        ens.run(&opts, 1).unwrap();
        assert_eq!(
            ens.last_run_lockstep_steps() > 0,
            lanes > 0,
            "lanes = {lanes}"
        );
        for (i, &r) in rho.iter().enumerate() {
            let mut single = Sim::with_stepper(&model, Some("rk4")).unwrap();
            single.assign(&[("rho", r)], false).unwrap();
            single.run(&opts).unwrap();
            let mut member = ens.member_sim(i).unwrap();
            assert_eq!(bits(member.state()), bits(single.state()));
            for sim in [&mut member, &mut single] {
                sim.reset("initial").unwrap();
            }
            assert_eq!(
                bits(member.state()),
                bits(&ic),
                "lanes = {lanes}, member {i}"
            );
            assert_eq!(member.time(), 0.5, "lanes = {lanes}, member {i}");
            assert_eq!(bits(member.state()), bits(single.state()));
            assert_eq!(bits(member.params()), bits(single.params()));
            assert_eq!(member.step_count(), single.step_count());
        }
    }
}
