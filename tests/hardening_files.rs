//! Hardening of snapshot files, knobs and the spec hash (issue 18, items 6–12): crafted files
//! that used to import and then fail or hang, knobs that used to panic, models that used to
//! share a hash. Every refusal is checked for its kind, its message and that nothing changed.

use dynlib::persist::npy::{NpyArray, NpyData};
use dynlib::persist::npz::{read_npz, write_npz, Limits};
use dynlib::{Backend, ErrorKind, Model, RunOptions, Sim};

/// A damped oscillator with a lagged term: lag ring, pending step (rk45) and history.
const ODE: &str = r#"inline:
[model]
type = "ode"
[states]
u = 0.5
v = -0.2
[params]
w = 3.0
[equations.rhs]
u = "v"
v = "-w*u - 0.05*v + 0.2*lag_u(3)"
"#;

fn members_of(bytes: &[u8]) -> Vec<(String, NpyArray)> {
    read_npz(bytes, &Limits::default()).unwrap()
}

/// `bytes` with member `key`'s float data edited by `edit`.
fn edit_f64(bytes: &[u8], key: &str, edit: impl Fn(&mut Vec<f64>)) -> Vec<u8> {
    let mut m = members_of(bytes);
    let (_, a) = m
        .iter_mut()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no member {key}"));
    let NpyData::F64(v) = &mut a.data else {
        panic!("{key} is not float64")
    };
    edit(v);
    write_npz(&m).unwrap()
}

fn edit_i64(bytes: &[u8], key: &str, edit: impl Fn(&mut Vec<i64>)) -> Vec<u8> {
    let mut m = members_of(bytes);
    let (_, a) = m.iter_mut().find(|(k, _)| k == key).unwrap();
    let NpyData::I64(v) = &mut a.data else {
        panic!("{key} is not int64")
    };
    edit(v);
    write_npz(&m).unwrap()
}

/// A session of `stepper` after a short run, and a valid file of another such session.
fn fixture(stepper: &str, t: f64) -> (Sim, Vec<u8>) {
    let model = Model::load(ODE).unwrap();
    let mut other = Sim::with_stepper(&model, Some(stepper)).unwrap();
    other.run(&RunOptions::new().t(t)).unwrap();
    let valid = other.serialize_snapshot(None).unwrap();
    let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
    sim.run(&RunOptions::new().t(0.3)).unwrap();
    (sim, valid)
}

/// Importing `bytes` fails with `kind` and a message containing `needle`; nothing changes.
fn refused(sim: &mut Sim, bytes: &[u8], kind: ErrorKind, needle: &str) {
    let before = sim.session_state().clone();
    let n = sim.results().map(|r| r.len()).unwrap_or(0);
    let err = sim.deserialize_snapshot(bytes).unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        err.message().contains(needle),
        "expected '{needle}' in: {}",
        err.message()
    );
    assert!(sim.session_state().bits_eq(&before));
    assert_eq!(sim.results().map(|r| r.len()).unwrap_or(0), n);
}

// ------------------------------------------------------------------ item 6: clock fields

#[test]
fn absurd_clock_fields_are_refused_at_import() {
    let corrupt = ErrorKind::CorruptSnapshot;
    let clock = "workspace/runtime/clock"; // [t, dt, grid_t0, nominal_dt, time_shift]
    for stepper in ["rk4", "rk45", "ab2", "bdf2"] {
        let (mut sim, valid) = fixture(stepper, 1.0);
        sim.deserialize_snapshot(&valid).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                edit_f64(&valid, clock, |c| c[2] = f64::NEG_INFINITY),
                "grid_t0 is -inf; it must be finite",
            ),
            (
                edit_f64(&valid, clock, |c| c[0] = f64::INFINITY),
                "t is inf; it must be finite",
            ),
            (
                edit_f64(&valid, clock, |c| c[3] = 5e-324),
                "nominal_dt is 5e-324; a step size must be a positive normal number",
            ),
            (
                edit_f64(&valid, clock, |c| c[1] = 0.0),
                "dt is 0.0; a step size must be a positive normal number",
            ),
            (
                edit_f64(&valid, clock, |c| c[4] = f64::NAN),
                "workspace 'runtime/clock' holds NaN",
            ),
            (
                edit_f64(&valid, clock, |c| c[4] = -1.0),
                "time_shift is -1.0; a warm-up only moves time forward",
            ),
            (
                edit_f64(&valid, clock, |c| c[4] = f64::INFINITY),
                "time_shift is inf; it must be finite",
            ),
            (
                edit_i64(&valid, "workspace/runtime/counters", |c| c[2] = c[0] + 1),
                "counters are inconsistent",
            ),
        ];
        for (bytes, needle) in &cases {
            refused(&mut sim, bytes, corrupt, needle);
        }
        if stepper != "rk45" {
            // The crafted file of the issue: fixed-step grid far off, time shift ahead of
            // any warm-up, clock off the grid.
            let crafted = edit_f64(&valid, clock, |c| {
                c[4] = 1e16;
            });
            refused(
                &mut sim,
                &crafted,
                corrupt,
                "time_shift = 1e16 exceeds what 0 warm-up steps",
            );
            let off_grid = edit_f64(&valid, clock, |c| c[2] += 0.5);
            refused(&mut sim, &off_grid, corrupt, "is not on the step grid");
            let stalled = edit_f64(&valid, clock, |c| {
                c[0] = 1e20;
                c[2] = 1e20;
                c[3] = 1e-3;
            });
            let stalled = edit_i64(&stalled, "workspace/runtime/counters", |c| c[1] = c[0]);
            refused(&mut sim, &stalled, corrupt, "does not advance time");
        }
    }
}

// ------------------------------------------------------------------ item 10: resume relies on

#[test]
fn non_finite_history_lags_and_pending_steps_are_refused() {
    let corrupt = ErrorKind::CorruptSnapshot;
    // rk45 stopped inside a step: a pending step and a dense span.
    let (mut sim, valid) = fixture("rk45", 1.0);
    sim.deserialize_snapshot(&valid).unwrap();
    assert!(sim.session_state().pending.is_some());
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/stepper/dense_span", |s| s[1] = 0.0),
        corrupt,
        "dense output in workspace/stepper cannot produce the pending step",
    );
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/stepper/dense", |d| d[3] = f64::NAN),
        corrupt,
        "workspace array 'stepper/dense' holds NaN at index 3",
    );
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/runtime/pending_y", |y| {
            y[1] = f64::INFINITY
        }),
        corrupt,
        "pending step in workspace/runtime is not finite",
    );
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/runtime/pending", |p| p[2] = f64::NAN),
        corrupt,
        "proposes the next step size NaN",
    );
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/runtime/pending", |p| p[0] = 0.5),
        corrupt,
        "'runtime/pending' has flag 0.5",
    );
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/runtime/lag_ring", |r| {
            r[0] = f64::NEG_INFINITY
        }),
        corrupt,
        "'runtime/lag_ring' holds -inf at index 0",
    );
    // Multistep history.
    let (mut sim, valid) = fixture("ab3", 1.0);
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/stepper/f_nm1", |f| f[0] = f64::INFINITY),
        corrupt,
        "'stepper/f_nm1' holds inf",
    );
    let (mut sim, valid) = fixture("bdf2", 1.0);
    refused(
        &mut sim,
        &edit_f64(&valid, "workspace/stepper/h_nm1", |h| h[0] = 1e-320),
        corrupt,
        "workspace 'h_nm1' of bdf2 is 1e-320",
    );
    // A pending step in a fixed-step session cannot be resumed.
    let (mut sim, valid) = fixture("rk4", 1.0);
    let t = sim.session_state().t;
    let _ = t;
    let with_pending = edit_f64(&valid, "workspace/runtime/pending", |p| {
        p[0] = 1.0;
        p[1] = 2.0;
        p[2] = 0.01;
    });
    refused(&mut sim, &with_pending, corrupt, "is not adaptive");
    // The untouched files still import and resume.
    for stepper in ["rk45", "ab3", "bdf2", "bdf2a", "tr-bdf2a"] {
        let (mut sim, valid) = fixture(stepper, 1.0);
        sim.deserialize_snapshot(&valid).unwrap();
        sim.run(&RunOptions::new().t(2.0).resume(true)).unwrap();
    }
}

// ------------------------------------------------------------------ item 9: knobs

/// A bad knob set for the step controller: (knob, value, expected message part).
const BAD_KNOBS: [(&str, f64, &str); 6] = [
    (
        "min_factor",
        6.0,
        "'min_factor' (6) must not exceed 'max_factor' (5)",
    ),
    (
        "max_factor",
        0.0,
        "knob 'max_factor' must be positive and finite, got 0",
    ),
    (
        "min_factor",
        f64::INFINITY,
        "knob 'min_factor' must be positive and finite, got inf",
    ),
    ("safety", -1.0, "knob 'safety' must be positive and finite"),
    ("max_tries", 0.0, "knob 'max_tries' must be at least 1"),
    (
        "atol",
        f64::NEG_INFINITY,
        "knob 'atol' must be non-negative and finite",
    ),
];

#[test]
fn bad_controller_knobs_are_refused_on_every_entry_path() {
    let model = Model::load(ODE).unwrap();
    for stepper in ["rk45", "bdf2a", "tr-bdf2a"] {
        for (knob, value, needle) in BAD_KNOBS {
            // Run config.
            let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
            sim.run(&RunOptions::new().t(0.5)).unwrap();
            let before = sim.session_state().clone();
            let err = sim
                .run(&RunOptions::new().t(1.0).resume(true).config(knob, value))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.message().contains(needle), "{stepper}: {err}");
            assert!(err.message().contains(stepper), "{err}");
            assert!(sim.session_state().bits_eq(&before));
            let err = sim
                .run(&RunOptions::new().t(1.0).config(knob, value))
                .unwrap_err();
            assert!(err.message().contains(needle), "{stepper}: {err}");

            // [sim] defaults: a knob-named key.
            let text = format!(
                "{}[sim]\nstepper = \"{stepper}\"\n{knob} = {}\n",
                ODE.trim_start_matches("inline:"),
                if value.is_infinite() {
                    if value > 0.0 {
                        "inf".into()
                    } else {
                        "-inf".into()
                    }
                } else {
                    format!("{value:?}")
                }
            );
            match Model::from_toml(&text) {
                Err(e) => panic!("{stepper} {knob}: the model itself is refused: {e}"),
                Ok(m) => {
                    let err = Sim::new(&m).err().expect("[sim] knobs must be checked");
                    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
                    assert!(err.message().contains("[sim]"), "{err}");
                    assert!(err.message().contains(needle), "{err}");
                }
            }

            // A snapshot's stepper_config.
            let mut good = Sim::with_stepper(&model, Some(stepper)).unwrap();
            good.run(&RunOptions::new().t(0.5)).unwrap();
            let valid = good.serialize_snapshot(None).unwrap();
            let i = dynlib::stepper::knob_index(good.stepper(), knob).unwrap();
            let crafted = edit_f64(&valid, "stepper_config", |c| c[i] = value);
            // meta.json repeats the values; make it agree so only the rule can refuse.
            let crafted = with_meta_config(&crafted, i, value);
            refused(&mut good, &crafted, ErrorKind::CorruptSnapshot, needle);
        }
        // The boundary: min_factor == max_factor is allowed and runs.
        let mut sim = Sim::with_stepper(&model, Some(stepper)).unwrap();
        sim.run(
            &RunOptions::new()
                .t(0.5)
                .config("min_factor", 1.0)
                .config("max_factor", 1.0),
        )
        .unwrap();
    }
}

fn with_meta_config(bytes: &[u8], i: usize, value: f64) -> Vec<u8> {
    let mut m = members_of(bytes);
    for (k, a) in &mut m {
        if k == "meta.json" {
            let NpyData::U8(raw) = &a.data else { panic!() };
            let mut v: serde_json::Value = serde_json::from_slice(raw).unwrap();
            v["stepper_config_values"][i] = if value.is_finite() {
                value.into()
            } else if value > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            };
            let text = serde_json::to_vec_pretty(&v).unwrap();
            *a = NpyArray::u8(vec![text.len()], text).unwrap();
        }
    }
    write_npz(&m).unwrap()
}

// ------------------------------------------------------------------ item 7: spec hash

#[test]
fn non_finite_constants_give_distinct_hashes_and_code() {
    let model = |k: &str| {
        let text = format!(
            "[model]\ntype = \"ode\"\n[constants]\nk = {k}\n[states]\nx = 1.0\n[aux]\n\
             kind = \"(k > 0) + 2*(k != k)\"\n[equations.rhs]\nx = \"-x\"\n"
        );
        Model::from_toml_with(&text, Backend::Native).unwrap()
    };
    // Each loaded twice, in an order where a shared cache entry would hand a later model the
    // earlier one's code.
    let mut hashes = Vec::new();
    for (k, expected) in [("inf", 1.0), ("-inf", 0.0), ("nan", 2.0), ("inf", 1.0)] {
        let m = model(k);
        assert_eq!(m.backend(), Backend::Native);
        let mut sim = Sim::with_stepper(&m, Some("rk4")).unwrap();
        sim.run(
            &RunOptions::new()
                .t(0.1)
                .dt(0.05)
                .record_vars(&["x", "kind"]),
        )
        .unwrap();
        let kind = sim.results().unwrap().column("kind").unwrap().to_vec();
        assert!(kind.iter().all(|v| *v == expected), "k = {k}: {kind:?}");
        // The interpreter agrees.
        let interp = m.with_backend(Backend::Interpreter).unwrap();
        assert_eq!(interp.spec_hash, m.spec_hash);
        let mut sim = Sim::with_stepper(&interp, Some("rk4")).unwrap();
        sim.run(
            &RunOptions::new()
                .t(0.1)
                .dt(0.05)
                .record_vars(&["x", "kind"]),
        )
        .unwrap();
        assert_eq!(sim.results().unwrap().column("kind").unwrap(), &kind[..]);
        hashes.push(m.spec_hash.clone());
    }
    assert_ne!(hashes[0], hashes[1]);
    assert_ne!(hashes[0], hashes[2]);
    assert_ne!(hashes[1], hashes[2]);
    assert_eq!(hashes[0], hashes[3]);
    // Other float-valued places: states, params, [sim] values.
    let base = "[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[params]\np = 1.0\n\
                [equations.rhs]\nx = \"-x*p\"\n";
    let hash = |text: &str| Model::from_toml(text).unwrap().spec_hash.clone();
    let sim_tail = |v: &str| format!("{base}[sim]\nt_end = {v}\n");
    assert_ne!(hash(&sim_tail("inf")), hash(&sim_tail("-inf")));
    assert_ne!(hash(&sim_tail("inf")), hash(&sim_tail("nan")));
    let param = |v: &str| base.replace("p = 1.0", &format!("p = {v}"));
    assert_ne!(hash(&param("inf")), hash(&param("-inf")));
    assert_ne!(hash(&param("nan")), hash(&param("-inf")));
    assert_ne!(hash(&param("0.0")), hash(&param("-0.0")));
}

#[test]
fn snapshots_do_not_cross_between_models_differing_in_a_non_finite_constant() {
    let model = |k: &str| {
        Model::from_toml(&format!(
            "[model]\ntype = \"ode\"\n[constants]\nk = {k}\n[states]\nx = 1.0\n\
             [equations.rhs]\nx = \"-x + 0*(k > 0)\"\n"
        ))
        .unwrap()
    };
    let (plus, minus) = (model("inf"), model("-inf"));
    let mut a = Sim::new(&plus).unwrap();
    a.run(&RunOptions::new().t(0.2)).unwrap();
    let bytes = a.serialize_snapshot(None).unwrap();
    let mut b = Sim::new(&minus).unwrap();
    let err = b.deserialize_snapshot(&bytes).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Incompatible, "{err}");
    assert!(err.message().contains("spec_hash"), "{err}");
}
