//! Runs that cannot be done are refused at once with a clear error, never hang or abort the
//! host: horizons beyond what the step grid can count, recordings that cannot be allocated,
//! and an event that makes a parameter non-finite (reported at the event).

use std::sync::mpsc;
use std::time::Duration;

use dynlib::{Backend, ErrorKind, Model, RunOptions, Sim};

/// Runs `f` on a thread and fails the test if it does not return within 20 s (a hang).
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the call did not return: it hangs")
}

fn run_err(source: &'static str, opts: RunOptions) -> dynlib::Error {
    within_seconds(move || {
        let model = Model::load_with(source, Backend::Interpreter).unwrap();
        let mut sim = Sim::new(&model).unwrap();
        let before = sim.session_state().clone();
        let e = sim.run(&opts).unwrap_err();
        assert!(
            sim.session_state().bits_eq(&before),
            "a failed run changed the session"
        );
        e
    })
}

#[test]
fn horizons_beyond_the_grid_are_refused_not_looped() {
    let lorenz = "builtin://ode/lorenz";
    let cases = [
        RunOptions::new().t(1e18).dt(0.01),
        RunOptions::new().t(1.0).dt(1e-300),
        RunOptions::new().t0(-1e308).t(1e308).dt(1.0),
        RunOptions::new().t(1.0).transient(1e300),
    ];
    for opts in cases {
        let e = run_err(lorenz, opts.clone());
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{opts:?}: {e}");
        assert!(e.to_string().contains("2^53"), "{e}");
    }
    // A model whose own [sim] dt is absurdly small.
    let tiny = "inline:\n[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[equations.rhs]\nx = \"-x\"\n[sim]\ndt = 1e-320\nt_end = 1.0\n";
    let e = run_err(tiny, RunOptions::new());
    assert!(e.to_string().contains("2^53"), "{e}");
}

#[test]
fn a_recording_that_cannot_fit_is_refused_up_front() {
    // 10^10 map iterations recorded: 250 GB.
    let e = run_err(
        "builtin://map/logistic",
        RunOptions::new()
            .n(10_000_000_000)
            .max_steps(10_000_000_000),
    );
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("bytes") && msg.contains("record_interval"),
        "{msg}"
    );
    // Without recording the same request is only bounded by max_steps.
    let e = run_err(
        "builtin://map/logistic",
        RunOptions::new()
            .n(10_000_000_000)
            .max_steps(1000)
            .record(false),
    );
    assert!(e.to_string().contains("max_steps"), "{e}");
}

#[test]
fn an_event_that_makes_a_parameter_nan_is_reported_at_the_event() {
    let src = r#"inline:
[model]
type = "ode"
[states]
x = 0.0
[params]
k = 1.0
[equations.rhs]
x = "k"
[events.poison]
cond = "x > 0.5"
action = "k = k * sqrt(-1)"
"#;
    let model = Model::load(src).unwrap();
    let mut sim = Sim::new(&model).unwrap();
    let e = sim.run(&RunOptions::new().t(2.0).dt(0.1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert!(
        e.to_string()
            .contains("event 'poison' set parameter 'k' to NaN"),
        "{e}"
    );
    // A parameter that was already infinite does not count against a later event.
    let ok = "inline:\n[model]\ntype = \"ode\"\n[states]\nx = 0.0\n[params]\nth = inf\n[equations.rhs]\nx = \"1\"\n[events.e]\ncond = \"x > 0.5\"\naction = \"x = 0\"\n";
    let model_ok = Model::load(ok).unwrap();
    let mut sim_ok = Sim::new(&model_ok).unwrap();
    sim_ok.run(&RunOptions::new().t(2.0).dt(0.1)).unwrap();
}
