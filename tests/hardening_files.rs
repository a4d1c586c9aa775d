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
    for stepper in ["rk45", "ab3", "bdf2", "bdf2a", "tr-bdf2a", "bdf"] {
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
                // The model language refuses a non-finite [sim] value at load, with its
                // position; a finite one that breaks a rule is refused by Sim::new.
                Err(e) => assert!(
                    e.message().contains(&format!("[sim].{knob}")),
                    "{stepper} {knob}: {e}"
                ),
                Ok(m) => {
                    let Err(err) = Sim::new(&m) else {
                        panic!("[sim] knobs must be checked")
                    };
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
    // Non-finite [sim] times are refused at load (so they never reach the hash).
    let sim_tail = |v: &str| format!("{base}[sim]\nt_end = {v}\n");
    for v in ["inf", "-inf", "nan"] {
        assert!(Model::from_toml(&sim_tail(v)).is_err(), "t_end = {v}");
    }
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

// ------------------------------------------------------------------ item 8: limits agree

use dynlib::persist::snapshot::{self, FileLimits};

fn meta_npy_len(bytes: &[u8]) -> usize {
    let m = members_of(bytes);
    let meta = &m.iter().find(|(k, _)| k == "meta.json").unwrap().1;
    dynlib::persist::npy::encoded_len(meta)
}

#[test]
fn what_the_writer_writes_the_reader_reads_on_both_sides_of_each_limit() {
    let model = Model::load(ODE).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    sim.run(&RunOptions::new().t(1.0)).unwrap();
    let valid = sim.serialize_snapshot(None).unwrap();
    let template = snapshot::decode(&valid).unwrap();
    let mut file = template.clone();

    // Name + description: at the limit both sides accept, one byte more the writer refuses.
    let limits = FileLimits {
        max_text_bytes: 1000,
        ..FileLimits::default()
    };
    file.meta.description = "d".repeat(1000 - file.meta.name.len());
    let at = snapshot::encode_with(&file, &limits).unwrap();
    let back = snapshot::decode_for_with(&at, &template, &limits).unwrap();
    assert_eq!(back.meta.description, file.meta.description);
    file.meta.description.push('d');
    let err = snapshot::encode_with(&file, &limits).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.message()
            .contains("name and description have 1001 bytes; snapshot files allow at most 1000"),
        "{err}"
    );
    // A reader with that limit refuses a meta.json larger than the writer could make.
    file.meta.description = "d".repeat(80_000);
    let big = snapshot::encode(&file).unwrap();
    let err = snapshot::decode_for_with(&big, &template, &limits).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptSnapshot);
    assert!(
        err.message().contains("member 'meta.json' expands beyond"),
        "{err}"
    );

    // The absolute meta.json cap.
    file.meta.description = "d".repeat(500);
    let size = meta_npy_len(&snapshot::encode(&file).unwrap()) as u64;
    let capped = FileLimits {
        max_meta_bytes: size,
        ..FileLimits::default()
    };
    let at = snapshot::encode_with(&file, &capped).unwrap();
    snapshot::decode_for_with(&at, &template, &capped).unwrap();
    file.meta.description.push('d');
    let err = snapshot::encode_with(&file, &capped).unwrap_err();
    assert!(
        err.message()
            .contains(&format!("meta.json would take {} bytes", size + 1)),
        "{err}"
    );
    let over = snapshot::encode(&file).unwrap();
    let err = snapshot::decode_for_with(&over, &template, &capped).unwrap_err();
    assert!(
        err.message()
            .contains(&format!("member 'meta.json' expands beyond {size} bytes")),
        "{err}"
    );

    // The whole file.
    let len = valid.len() as u64;
    let tight = FileLimits {
        max_file_bytes: len,
        ..FileLimits::default()
    };
    let same = snapshot::encode_with(&template, &tight).unwrap();
    assert_eq!(same.len() as u64, len);
    snapshot::decode_for_with(&same, &template, &tight).unwrap();
    let tighter = FileLimits {
        max_file_bytes: len - 1,
        ..FileLimits::default()
    };
    let err = snapshot::encode_with(&template, &tighter).unwrap_err();
    assert!(
        err.message().contains(&format!(
            "the file would take {len} bytes; snapshot files are limited to {}",
            len - 1
        )),
        "{err}"
    );
    let err = snapshot::decode_for_with(&same, &template, &tighter).unwrap_err();
    assert!(
        err.message()
            .contains(&format!("snapshot is {len} bytes; files above {}", len - 1)),
        "{err}"
    );
}

#[test]
fn export_refuses_up_front_what_import_would_refuse() {
    let model = Model::load(ODE).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
    sim.run(&RunOptions::new().t(0.5)).unwrap();
    let huge = "x".repeat(snapshot::MAX_TEXT_BYTES as usize + 1);
    sim.create_snapshot("big", &huge).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.npz");
    let err = sim.export_snapshot(&path, Some("big")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains("name and description have"), "{err}");
    assert!(!path.exists());
    assert!(sim.serialize_snapshot(Some("big")).is_err());
    // At the limit it round-trips.
    let fits = "x".repeat(snapshot::MAX_TEXT_BYTES as usize - 3);
    sim.create_snapshot("fit", &fits).unwrap();
    sim.export_snapshot(&path, Some("fit")).unwrap();
    let mut other = Sim::with_stepper(&model, Some("rk4")).unwrap();
    other.import_snapshot(&path).unwrap();
    assert_eq!(
        dynlib::session::inspect_snapshot(&path).unwrap()["description"],
        serde_json::Value::String(fits)
    );
}

/// A model whose lag rings dwarf everything else: member sizes come from the model, so a
/// file of any legitimate size imports.
#[test]
fn large_lag_rings_round_trip() {
    let n = 300;
    let mut text = String::from("[model]\ntype = \"ode\"\n[states]\n");
    for i in 0..n {
        text.push_str(&format!("x{i} = {}.0\n", i % 7));
    }
    text.push_str("[equations.rhs]\n");
    for i in 0..n {
        text.push_str(&format!("x{i} = \"-x{i} + 0.001*lag_x{i}(1000)\"\n"));
    }
    let model = Model::from_toml_with(&text, Backend::Interpreter).unwrap();
    assert_eq!(model.lag_total, n * 1001);
    let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
    sim.run(&RunOptions::new().t(0.05).record(false)).unwrap();
    let bytes = sim.serialize_snapshot(None).unwrap();
    let mut other = Sim::with_stepper(&model, Some("rk4")).unwrap();
    other.deserialize_snapshot(&bytes).unwrap();
    assert!(other.session_state().bits_eq(sim.session_state()));
}

// ------------------------------------------------------------------ item 11: amplification

/// A zip with the given members, each `size` zero bytes deflated (about 1/1000 of it).
fn zeros_zip(names: &[&str], size: usize) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .large_file(false);
    let chunk = vec![0u8; 1 << 20];
    for name in names {
        zip.start_file(*name, opts).unwrap();
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            zip.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn junk_members_are_refused_before_decompression_and_inspect_reads_only_meta() {
    let (mut sim, valid) = fixture("rk4", 1.0);
    let junk = zeros_zip(&["junk.npy", "y.npy"], 64 << 20);
    let start = std::time::Instant::now();
    refused(
        &mut sim,
        &junk,
        ErrorKind::CorruptSnapshot,
        "unexpected member 'junk'",
    );
    // Refused from the names alone: no time spent inflating 64 MiB.
    assert!(start.elapsed() < std::time::Duration::from_millis(200));
    let bomb = zeros_zip(&["y.npy"], 64 << 20);
    refused(
        &mut sim,
        &bomb,
        ErrorKind::CorruptSnapshot,
        "member 'y' expands beyond 65552 bytes",
    );

    // inspect: a valid meta.json plus a bomb is inspected without touching the bomb.
    let mut members = members_of(&valid);
    members.retain(|(k, _)| k == "meta.json");
    let meta_npy = dynlib::persist::npy::write_npy(&members[0].1);
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("meta.json.npy", opts).unwrap();
    zip.write_all(&meta_npy).unwrap();
    zip.start_file("y.npy", opts).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..256 {
        zip.write_all(&chunk).unwrap();
    }
    let mixed = zip.finish().unwrap().into_inner();
    assert!(mixed.len() < 1 << 20);
    let start = std::time::Instant::now();
    let meta = dynlib::session::inspect_snapshot_bytes(&mixed).unwrap();
    assert!(start.elapsed() < std::time::Duration::from_millis(100));
    assert_eq!(meta["schema"], "dynlib-snapshot-v1");

    // meta.json of many tiny values: refused by counting, before a JSON tree is built.
    let mut tiny = String::from("{\"schema\": \"dynlib-snapshot-v1\", \"x\": [");
    tiny.push_str(&"0,".repeat(3_000_000));
    tiny.push_str("0]}");
    let arr = NpyArray::u8(vec![tiny.len()], tiny.into_bytes()).unwrap();
    let mut m = members_of(&valid);
    m.iter_mut().find(|(k, _)| k == "meta.json").unwrap().1 = arr;
    let crafted = write_npz(&m).unwrap();
    let err = dynlib::session::inspect_snapshot_bytes(&crafted).unwrap_err();
    assert!(err.message().contains("meta.json holds more than"), "{err}");
    refused(
        &mut sim,
        &crafted,
        ErrorKind::CorruptSnapshot,
        "meta.json holds more than 259 values",
    );
}

// ------------------------------------------------------------------ item 12: files

fn listing(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn long_file_names_export_and_import() {
    let (mut sim, _) = fixture("rk4", 0.5);
    let dir = tempfile::tempdir().unwrap();
    for len in [254, 255] {
        let name = format!("{}.npz", "n".repeat(len - 4));
        assert_eq!(name.len(), len);
        let path = dir.path().join(&name);
        sim.export_snapshot(&path, None).unwrap();
        let mut other = Sim::with_stepper(sim.model(), Some("rk4")).unwrap();
        other.import_snapshot(&path).unwrap();
        assert!(other.session_state().bits_eq(sim.session_state()));
    }
    assert_eq!(listing(dir.path()).len(), 2);
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_and_symlinks_are_written_through() {
    let (mut sim, _) = fixture("rk4", 0.5);
    let dir = tempfile::tempdir().unwrap();
    // A FIFO stays a FIFO.
    let fifo = dir.path().join("pipe.npz");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let err = sim.export_snapshot(&fifo, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        err.message().contains("it is a FIFO, not a regular file"),
        "{err}"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // A device node (through a link, as no test can create one).
    let dev = dir.path().join("null.npz");
    std::os::unix::fs::symlink("/dev/null", &dev).unwrap();
    let err = sim.export_snapshot(&dev, None).unwrap_err();
    assert!(err.message().contains("it is a device node"), "{err}");
    assert!(
        err.message().contains("the link leads to '/dev/null'"),
        "{err}"
    );
    assert_eq!(listing(dir.path()), ["null.npz", "pipe.npz"]);

    // A symlink to a regular file: the file is replaced, the link stays a link.
    let real = dir.path().join("real.npz");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.path().join("link.npz");
    std::os::unix::fs::symlink("real.npz", &link).unwrap();
    sim.export_snapshot(&link, None).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(dynlib::session::inspect_snapshot(&real).is_ok());
    // A dangling link creates its target.
    let dangling = dir.path().join("dangling.npz");
    std::os::unix::fs::symlink("made.npz", &dangling).unwrap();
    sim.export_snapshot(&dangling, None).unwrap();
    assert!(dir.path().join("made.npz").is_file());
    // A loop of links is an error.
    let a = dir.path().join("a.npz");
    let b = dir.path().join("b.npz");
    std::os::unix::fs::symlink("b.npz", &a).unwrap();
    std::os::unix::fs::symlink("a.npz", &b).unwrap();
    let err = sim.export_snapshot(&a, None).unwrap_err();
    assert!(
        err.message().contains("too many levels of symbolic links"),
        "{err}"
    );
    assert!(!listing(dir.path()).iter().any(|n| n.contains(".tmp")));
}

#[test]
fn latest_checkpoint_is_a_regular_file() {
    let model = Model::load(ODE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
    sim.run(
        &RunOptions::new()
            .t(1.0)
            .checkpoint(dynlib::session::CheckpointPolicy::every_steps(
                dir.path(),
                50,
                5,
            )),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("checkpoint-99999999999999999999.npz")).unwrap();
    let latest = dynlib::session::latest_checkpoint(dir.path())
        .unwrap()
        .unwrap();
    assert!(
        latest.ends_with("checkpoint-00000000000000000100.npz"),
        "{latest:?}"
    );
    let steps: Vec<u64> = dynlib::session::list_checkpoints(dir.path())
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(steps, [50, 100]);
}

#[test]
fn stale_temporary_files_are_cleaned_by_the_next_write() {
    let (mut sim, _) = fixture("rk4", 0.5);
    let dir = tempfile::tempdir().unwrap();
    // As left by a process killed mid-write: one old, one fresh (a write in progress
    // elsewhere), and files that are not ours.
    let old = dir.path().join(".dynlib-AbCdE12345.tmp");
    let fresh = dir.path().join(".dynlib-ZyXwV98765.tmp");
    let foreign = dir.path().join(".other-AbCdE12345.tmp");
    let user = dir.path().join("notes.tmp");
    for p in [&old, &fresh, &foreign, &user] {
        std::fs::write(p, b"partial").unwrap();
    }
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in [&old, &foreign, &user] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    sim.export_snapshot(dir.path().join("s.npz"), None).unwrap();
    assert_eq!(
        listing(dir.path()),
        [
            ".dynlib-ZyXwV98765.tmp",
            ".other-AbCdE12345.tmp",
            "notes.tmp",
            "s.npz"
        ]
    );
}

#[test]
fn duplicate_names_in_assign_are_refused() {
    let (mut sim, _) = fixture("rk4", 0.5);
    let before = sim.session_state().clone();
    let err = sim
        .assign(&[("u", 1.0), ("w", 2.0), ("u", 3.0)], false)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateName, "{err}");
    assert!(
        err.message().contains("'u' is assigned more than once"),
        "{err}"
    );
    assert!(sim.session_state().bits_eq(&before));
    sim.assign(&[("u", 1.0), ("w", 2.0)], false).unwrap();
    assert_eq!(sim.value("u").unwrap(), 1.0);
}

// ------------------------------------------------------------------ fuzzing model loading

/// Deterministic xorshift, so a failing case reproduces from its printed number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NUMBERS: [&str; 14] = [
    "0", "1", "-1", "0.5", "2.5e-3", "1e308", "-1e308", "5e-324", "3", "1e-9", "inf", "-inf",
    "nan", "-0.0",
];
const FUNCS1: [&str; 16] = [
    "sin", "cos", "exp", "log", "sqrt", "abs", "tanh", "floor", "erf", "sign", "relu", "log1p",
    "atanh", "acos", "round", "expm1",
];
const FUNCS2: [&str; 8] = [
    "min", "max", "pow", "atan2", "hypot", "fmod", "copysign", "cross_up",
];
const OPS: [&str; 15] = [
    "+", "-", "*", "/", "^", "//", "%", "and", "or", "<", "<=", ">", "==", "!=", "**",
];

/// A random expression over `names` of depth at most `depth`.
fn expr(rng: &mut Rng, names: &[String], depth: usize) -> String {
    let leaf = depth == 0 || rng.below(4) == 0;
    if leaf {
        return match rng.below(5) {
            0 => {
                let n = rng.pick(&NUMBERS);
                // TOML literals inf/nan are not expression syntax; use their arithmetic forms.
                match n {
                    "inf" => "(1/0)".into(),
                    "-inf" => "(-1/0)".into(),
                    "nan" => "(0/0)".into(),
                    n => n.into(),
                }
            }
            1 => rng.pick(&["t", "pi", "e", "undefined_name"]).into(),
            _ if !names.is_empty() => names[rng.below(names.len())].clone(),
            _ => "1".into(),
        };
    }
    match rng.below(7) {
        0..=2 => format!(
            "({} {} {})",
            expr(rng, names, depth - 1),
            rng.pick(&OPS),
            expr(rng, names, depth - 1)
        ),
        3 => format!("{}({})", rng.pick(&FUNCS1), expr(rng, names, depth - 1)),
        4 => format!(
            "{}({}, {})",
            rng.pick(&FUNCS2),
            expr(rng, names, depth - 1),
            expr(rng, names, depth - 1)
        ),
        5 if !names.is_empty() => {
            let k = ["0", "1", "3", "50", "-1", "1.5", "100000000000"][rng.below(7)];
            format!("lag_{}({k})", names[rng.below(names.len())])
        }
        _ => format!("-{}", expr(rng, names, depth - 1)),
    }
}

/// A random model document: mostly well-formed TOML with random content.
fn random_model(rng: &mut Rng) -> String {
    let map = rng.below(4) == 0;
    let n_states = 1 + rng.below(4);
    let states: Vec<String> = (0..n_states).map(|i| format!("s{i}")).collect();
    let params: Vec<String> = (0..rng.below(3)).map(|i| format!("p{i}")).collect();
    let mut names: Vec<String> = states.iter().chain(&params).cloned().collect();
    let mut t = format!("[model]\ntype = \"{}\"\n", if map { "map" } else { "ode" });
    if rng.below(3) == 0 {
        t.push_str("[constants]\n");
        t.push_str(&format!("k = \"{}\"\n", expr(rng, &[], 2)));
        names.push("k".into());
    }
    t.push_str("[states]\n");
    for s in &states {
        t.push_str(&format!("{s} = {}\n", rng.pick(&NUMBERS)));
    }
    if !params.is_empty() {
        t.push_str("[params]\n");
        for p in &params {
            t.push_str(&format!("{p} = {}\n", rng.pick(&NUMBERS)));
        }
    }
    if rng.below(3) == 0 {
        t.push_str(&format!("[aux]\na0 = \"{}\"\n", expr(rng, &names, 3)));
    }
    t.push_str("[equations.rhs]\n");
    for s in &states {
        if rng.below(20) != 0 {
            t.push_str(&format!("{s} = \"{}\"\n", expr(rng, &names, 4)));
        }
    }
    if rng.below(4) == 0 {
        t.push_str(&format!(
            "[events.ev]\ncond = \"{}\"\naction = \"{} = {}\"\n",
            expr(rng, &names, 2),
            names[rng.below(names.len())],
            expr(rng, &names, 2)
        ));
    }
    if rng.below(2) == 0 {
        t.push_str("[sim]\n");
        let steppers = [
            "rk4", "rk45", "euler", "ab3", "bdf2", "bdf2a", "tr-bdf2a", "sdirk2", "bdf", "map",
            "nope",
        ];
        t.push_str(&format!("stepper = \"{}\"\n", rng.pick(&steppers)));
        for key in [
            "dt",
            "t_end",
            "t0",
            "atol",
            "max_factor",
            "min_factor",
            "newton_tol",
        ] {
            if rng.below(3) == 0 {
                t.push_str(&format!("{key} = {}\n", rng.pick(&NUMBERS)));
            }
        }
    }
    t
}

/// Mutations of the built-in models' text, and random models from a small grammar, through
/// the model-loading fuzz target (`dynlib::fuzzing::model_load`, also behind
/// `fuzz/fuzz_targets/model_load.rs`): loading may fail, never panic; a loaded model runs a
/// bounded run; every 10th case also loads native code, which must agree with the
/// interpreter bit for bit. The count is printed; `DYNLIB_FUZZ_CASES` sets it.
#[test]
fn fuzz_model_loading_with_generated_and_mutated_models() {
    let budget: usize = std::env::var("DYNLIB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let builtins: Vec<&str> = [
        "ode/izhikevich",
        "ode/lorenz",
        "ode/hodgkin-huxley",
        "ode/vanderpol",
        "map/henon",
        "map/logistic",
    ]
    .iter()
    .map(|id| dynlib::model::builtin::lookup(id).unwrap())
    .collect();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut loaded, mut refused, mut native) = (0usize, 0usize, 0usize);
    for case in 0..budget {
        let text = if case % 2 == 0 {
            random_model(&mut rng)
        } else {
            let mut bytes = builtins[rng.below(builtins.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[i] = b"0123456789.-+*/^()e\"[]=\n x"[rng.below(26)],
                    1 => {
                        bytes.remove(i);
                    }
                    2 => bytes.insert(i, b"0(-e.9\"\n["[rng.below(9)]),
                    _ => {
                        let n = rng.below(40).min(bytes.len() - i);
                        let chunk: Vec<u8> = bytes[i..i + n].to_vec();
                        let j = rng.below(bytes.len());
                        bytes.splice(j..j, chunk);
                    }
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let with_native = case % 10 == 0;
        native += usize::from(with_native);
        if std::env::var_os("DYNLIB_FUZZ_VERBOSE").is_some() {
            eprintln!("case {case}:\n{text}");
        }
        match std::panic::catch_unwind(|| dynlib::fuzzing::model_load(&text, with_native)) {
            Ok(true) => loaded += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("model_load panicked on case {case}:\n{text}"),
        }
    }
    eprintln!(
        "fuzzed the model-loading target with {budget} models: {loaded} loaded and ran, \
         {refused} refused with an error, {native} also compiled to native code; 0 panics"
    );
    assert_eq!(loaded + refused, budget);
    assert!(
        loaded > budget / 20,
        "the generator should produce loadable models"
    );
}
