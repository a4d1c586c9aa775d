//! Snapshot files and buffers: export, inspect, import, in-memory bytes, across processes,
//! periodic checkpoints (with a child killed by SIGKILL), hostile input and NumPy interop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dynlib::persist::npy::{NpyArray, NpyData};
use dynlib::persist::npz::{read_npz, write_npz, Limits};
use dynlib::session::{
    inspect_snapshot, latest_checkpoint, list_checkpoints, CheckpointPolicy, Recording,
};
use dynlib::{ErrorKind, Model, RunOptions, Sim};

mod common;

use common::committed_samples as samples;

/// Event-log entries without their sample index (which differs between a whole run and its
/// continuation).
fn event_bits(rec: &Recording) -> Vec<(usize, u64, u64, Vec<u64>)> {
    common::event_bits(rec)
        .into_iter()
        .map(|(e, t, step, _, v)| (e, t, step, v))
        .collect()
}
use proptest::prelude::*;

/// A forced oscillator with delayed feedback, an aux variable and an event that changes a
/// parameter: state in every workspace bucket (stepper history, lag ring, pending step).
const ODE: &str = r#"inline:
[model]
type = "ode"
name = "kicked oscillator"
[states]
u = 0.5
v = -0.2
[params]
w = 3.0
hits = 0.0
[aux]
amp = "sqrt(u^2 + v^2)"
[equations.rhs]
u = "v"
v = "-w*u - 0.05*v + 0.2*lag_u(3) + 0.1*sin(t)"
[events.hit]
cond = "cross_up(u, 0.4)"
action = """
v = v - 0.03
hits = hits + 1
"""
log = ["t", "u", "hits"]
"#;

const MAP: &str = r#"inline:
[model]
type = "map"
[states]
x = 0.2
[params]
r = 3.8
[equations.rhs]
x = "r*x*(1 - x) + 0.001*lag_x(2)"
"#;

fn model_for(stepper: &str) -> Model {
    Model::load(if stepper == "map" { MAP } else { ODE }).unwrap()
}

fn steppers() -> Vec<&'static str> {
    dynlib::stepper::all().iter().map(|i| i.name).collect()
}

fn horizon(stepper: &str, k: u64) -> RunOptions {
    if stepper == "map" {
        RunOptions::new().n(k)
    } else {
        RunOptions::new().t(k as f64 * 0.01)
    }
}

fn fresh(stepper: &str, k: u64) -> RunOptions {
    let o = horizon(stepper, k);
    if stepper == "map" {
        o
    } else {
        o.dt(0.01)
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Continuing from an imported snapshot reproduces the tail of the uninterrupted run: samples,
/// events and the final session state, bit for bit.
fn check_continuation(whole: &Sim, continued: &Sim) -> Result<(), String> {
    let (a, b) = (whole.results().unwrap(), continued.results().unwrap());
    let (sa, sb) = (samples(a), samples(b));
    // Committed-step samples: the continued run's are the tail of the whole run's (it may
    // have none when the horizon falls inside an adaptive step taken before the seam).
    if sb.len() > sa.len() || sa[sa.len() - sb.len()..] != sb[..] {
        return Err(format!(
            "samples differ: continued run has {} samples, whole run {}; first continued {:?}",
            sb.len(),
            sa.len(),
            sb.first()
        ));
    }
    // The final output point (interpolated or not) is the same.
    let last = |r: &Recording| {
        r.len().checked_sub(1).map(|i| {
            (
                r.t[i].to_bits(),
                r.interpolated.get(i),
                r.columns.iter().map(|c| c[i].to_bits()).collect::<Vec<_>>(),
            )
        })
    };
    if last(b).is_none() || last(a) != last(b) {
        return Err(format!(
            "last samples differ: {:?} vs {:?}",
            last(a),
            last(b)
        ));
    }
    let (ea, eb) = (event_bits(a), event_bits(b));
    if eb.len() > ea.len() || ea[ea.len() - eb.len()..] != eb[..] {
        return Err(format!("event logs differ: {} vs {}", ea.len(), eb.len()));
    }
    if !whole.session_state().bits_eq(continued.session_state()) {
        return Err(format!(
            "final states differ: {:?} vs {:?}",
            whole.session_state(),
            continued.session_state()
        ));
    }
    Ok(())
}

fn run_split_through_bytes(stepper: &str, seam: u64, total: u64) -> Result<(), String> {
    let model = model_for(stepper);
    let mut whole = Sim::with_stepper(&model, Some(stepper)).unwrap();
    whole.run(&fresh(stepper, total)).unwrap();

    let mut first = Sim::with_stepper(&model, Some(stepper)).unwrap();
    first.run(&fresh(stepper, seam)).unwrap();
    let bytes = first.serialize_snapshot(None).unwrap();

    let mut second = Sim::with_stepper(&model, Some(stepper)).unwrap();
    second.deserialize_snapshot(&bytes).unwrap();
    if !second.session_state().bits_eq(first.session_state()) {
        return Err(format!(
            "{stepper}: imported state differs from the exported one"
        ));
    }
    second
        .run(&horizon(stepper, total).resume(true))
        .map_err(|e| format!("{stepper}: resume failed: {e}"))?;
    check_continuation(&whole, &second).map_err(|e| format!("{stepper}, seam {seam}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn resume_from_serialized_bytes_is_bit_identical(seam in 1u64..299, total_extra in 1u64..200) {
        for stepper in steppers() {
            let total = seam + total_extra;
            if let Err(e) = run_split_through_bytes(stepper, seam, total) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

/// Seams right before the horizon: an adaptive stepper's whole continuation can lie inside
/// the step it took before the seam (found by the property test).
#[test]
fn resume_from_bytes_with_the_horizon_inside_the_pending_step() {
    for stepper in steppers() {
        for (seam, total) in [(108, 109), (1, 2), (299, 300)] {
            run_split_through_bytes(stepper, seam, total).unwrap();
        }
    }
}

#[test]
fn export_then_import_restores_state_clears_results_keeps_snapshots() {
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let mut a = Sim::new(&model).unwrap();
    a.run(&RunOptions::new().t(40.0).transient(3.0)).unwrap();
    let dir = tempdir();
    let path = dir.path().join("nested/dir/state.npz");
    a.export_snapshot(&path, None).unwrap();

    let mut b = Sim::new(&model).unwrap();
    b.run(&RunOptions::new().t(5.0)).unwrap();
    b.create_snapshot("mine", "kept across import").unwrap();
    b.import_snapshot(&path).unwrap();
    assert!(b.session_state().bits_eq(a.session_state()));
    assert_eq!(b.session_state().time_shift, a.session_state().time_shift);
    assert!(b.session_state().time_shift > 0.0);
    assert_eq!(
        b.results().unwrap_err().kind(),
        ErrorKind::NoResults,
        "import clears results"
    );
    assert!(b.segments().is_empty());
    let names: Vec<String> = b.list_snapshots().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["initial", "mine"]);
    // Both continue identically.
    a.run(&RunOptions::new().t(60.0).resume(true)).unwrap();
    b.run(&RunOptions::new().t(60.0).resume(true)).unwrap();
    assert!(a.session_state().bits_eq(b.session_state()));
}

#[test]
fn exporting_a_stored_snapshot_keeps_its_own_shift_and_dt() {
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().t(1.0).transient(0.4)).unwrap();
    sim.create_snapshot("warm", "after warm-up").unwrap();
    let warm = sim.session_state().clone();
    sim.run(&RunOptions::new().t(0.5).dt(0.002)).unwrap();
    assert_eq!(sim.session_state().time_shift, 0.0);

    let dir = tempdir();
    let path = dir.path().join("warm.npz");
    sim.export_snapshot(&path, Some("warm")).unwrap();
    let meta = inspect_snapshot(&path).unwrap();
    assert_eq!(meta["name"], "warm");
    assert_eq!(meta["description"], "after warm-up");
    assert_eq!(meta["time_shift"].as_f64().unwrap(), warm.time_shift);
    assert_eq!(meta["nominal_dt"].as_f64().unwrap(), warm.nominal_dt);
    assert!((warm.time_shift - 0.4).abs() < 0.011);

    let mut other = Sim::new(&model).unwrap();
    other.import_snapshot(&path).unwrap();
    assert!(other.session_state().bits_eq(&warm));
    let err = sim.export_snapshot(&path, Some("wram")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownName);
    assert!(
        err.message().contains("did you mean 'warm'"),
        "{}",
        err.message()
    );
}

#[test]
fn inspect_returns_the_meta_and_changes_nothing() {
    let model = Model::load(ODE).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    sim.run(&RunOptions::new().t(2.0)).unwrap();
    let dir = tempdir();
    let path = dir.path().join("s.npz");
    sim.export_snapshot(&path, None).unwrap();
    let before = sim.summary();
    let meta = inspect_snapshot(&path).unwrap();
    assert_eq!(sim.summary(), before);
    for key in [
        "schema",
        "created_at",
        "name",
        "description",
        "pins",
        "n_state",
        "n_params",
        "state_names",
        "param_names",
        "t_curr",
        "dt_curr",
        "step_count",
        "status",
        "time_shift",
        "nominal_dt",
        "stepper_config_names",
        "stepper_config_values",
    ] {
        assert!(meta.get(key).is_some(), "meta.json lacks '{key}'");
    }
    assert_eq!(meta["schema"], "dynlib-snapshot-v1");
    assert_eq!(meta["pins"]["stepper_name"], "rk45");
    assert_eq!(meta["pins"]["spec_hash"], sim.pins().spec_hash);
    assert_eq!(meta["state_names"], serde_json::json!(["u", "v"]));
    assert_eq!(meta["t_curr"].as_f64().unwrap(), sim.time());
    assert_eq!(meta["step_count"].as_u64().unwrap(), sim.step_count());
    // rk45's dt_max default is infinite: JSON has no infinity, so it is written as a string.
    let values = meta["stepper_config_values"].as_array().unwrap();
    assert!(values.iter().any(|v| v == "inf"), "{values:?}");
}

#[test]
fn atomic_export_replaces_the_target_and_leaves_no_temporary_files() {
    let model = Model::load(ODE).unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.run(&RunOptions::new().t(1.0)).unwrap();
    let dir = tempdir();
    let path = dir.path().join("s.npz");
    std::fs::write(&path, b"an older file").unwrap();
    sim.export_snapshot(&path, None).unwrap();
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(dir.path()), ["s.npz"]);
    assert!(inspect_snapshot(&path).is_ok());

    // A failing export (the target is a directory) keeps the old content and leaves no
    // temporary file behind.
    let blocker = dir.path().join("d.npz");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("inside"), b"x").unwrap();
    let err = sim.export_snapshot(&blocker, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.message().contains("d.npz"), "{}", err.message());
    assert_eq!(listing(dir.path()), ["d.npz", "s.npz"]);
    // A parent that is a file cannot become a directory.
    let err = sim
        .export_snapshot(dir.path().join("s.npz/child.npz"), None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(listing(dir.path()), ["d.npz", "s.npz"]);
}

// ------------------------------------------------------------------ rejections

/// A valid snapshot's members, for tampering.
fn members_of(bytes: &[u8]) -> Vec<(String, NpyArray)> {
    read_npz(bytes, &Limits::default()).unwrap()
}

fn with_meta(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut m = members_of(bytes);
    for (k, a) in &mut m {
        if k == "meta.json" {
            let NpyData::U8(raw) = &a.data else { panic!() };
            let mut v: serde_json::Value = serde_json::from_slice(raw).unwrap();
            edit(&mut v);
            let text = serde_json::to_vec_pretty(&v).unwrap();
            *a = NpyArray::u8(vec![text.len()], text).unwrap();
        }
    }
    write_npz(&m).unwrap()
}

fn with_member(bytes: &[u8], key: &str, new: Option<NpyArray>) -> Vec<u8> {
    let mut m = members_of(bytes);
    let i = m.iter().position(|(k, _)| k == key).unwrap();
    match new {
        Some(a) => m[i].1 = a,
        None => {
            m.remove(i);
        }
    }
    write_npz(&m).unwrap()
}

struct Fixture {
    sim: Sim,
    valid: Vec<u8>,
}

/// A session with results and a snapshot, plus a valid file exported from another session
/// of the same model.
fn fixture() -> Fixture {
    let model = Model::load(ODE).unwrap();
    let mut other = Sim::with_stepper(&model, Some("rk4")).unwrap();
    other.run(&RunOptions::new().t(1.5)).unwrap();
    let valid = other.serialize_snapshot(None).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
    sim.run(&RunOptions::new().t(0.7)).unwrap();
    sim.create_snapshot("s1", "").unwrap();
    Fixture { sim, valid }
}

/// Importing `bytes` fails with `kind` and a message containing `needle`, and changes nothing.
fn assert_rejected(f: &mut Fixture, bytes: &[u8], kind: ErrorKind, needle: &str) {
    let state = f.sim.session_state().clone();
    let n_samples = f.sim.results().unwrap().len();
    let snaps = f.sim.list_snapshots().len();
    let err = f.sim.deserialize_snapshot(bytes).unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        err.message().contains(needle),
        "expected '{needle}' in: {}",
        err.message()
    );
    assert!(f.sim.session_state().bits_eq(&state));
    assert_eq!(f.sim.results().unwrap().len(), n_samples);
    assert_eq!(f.sim.list_snapshots().len(), snaps);
}

#[test]
fn each_rejection_names_its_reason_and_changes_nothing() {
    let mut f = fixture();
    let valid = f.valid.clone();
    let corrupt = ErrorKind::CorruptSnapshot;
    assert_rejected(&mut f, b"hello, not a zip", corrupt, "not a zip archive");
    assert_rejected(
        &mut f,
        &with_member(&valid, "y", None),
        corrupt,
        "missing member 'y'",
    );
    assert_rejected(
        &mut f,
        &with_member(&valid, "meta.json", None),
        corrupt,
        "missing member 'meta.json'",
    );
    let bad_json = b"{\n  \"schema\": \"dynlib-snapshot-v1\",\n  \"name\": oops\n}".to_vec();
    assert_rejected(
        &mut f,
        &with_member(
            &valid,
            "meta.json",
            Some(NpyArray::u8(vec![bad_json.len()], bad_json).unwrap()),
        ),
        corrupt,
        "meta.json is not valid JSON at line 3",
    );
    assert_rejected(
        &mut f,
        &with_meta(&valid, |m| m["schema"] = "dynlib-snapshot-v9".into()),
        corrupt,
        "unsupported schema 'dynlib-snapshot-v9'",
    );
    assert_rejected(
        &mut f,
        &with_member(
            &valid,
            "y",
            Some(NpyArray::i64(vec![2], vec![1, 2]).unwrap()),
        ),
        corrupt,
        "member 'y' must be a 1-D float64 array, found a 1-D int64 array",
    );
    assert_rejected(
        &mut f,
        &with_member(
            &valid,
            "y",
            Some(NpyArray::f64(vec![1, 2], vec![0.1, 0.2]).unwrap()),
        ),
        corrupt,
        "must be a 1-D float64 array, found a 2-D",
    );
    assert_rejected(
        &mut f,
        &with_member(
            &valid,
            "workspace/runtime/counters",
            Some(NpyArray::f64(vec![4], vec![1.0; 4]).unwrap()),
        ),
        corrupt,
        "'runtime/counters' is float64 [4], expected int64 [4]",
    );
    assert_rejected(
        &mut f,
        &with_meta(&valid, |m| m["n_state"] = (-1).into()),
        corrupt,
        "'n_state' must be a non-negative integer, found -1",
    );
    assert_rejected(
        &mut f,
        &with_meta(&valid, |m| m["step_count"] = 2.5.into()),
        corrupt,
        "'step_count' must be a non-negative integer, found 2.5",
    );
    assert_rejected(
        &mut f,
        &with_meta(&valid, |m| m["t_curr"] = "NaN".into()),
        corrupt,
        "meta.json 't_curr' disagrees with workspace/runtime/clock",
    );
    assert_rejected(
        &mut f,
        &with_meta(&valid, |m| m["t_curr"] = 123.0.into()),
        corrupt,
        "'t_curr' disagrees",
    );
    assert_rejected(
        &mut f,
        &with_meta(&valid, |m| m["state_names"] = serde_json::json!(["u", "w"])),
        ErrorKind::Incompatible,
        "state names differ: the file has [u, w], the model has [u, v]",
    );
    assert_rejected(
        &mut f,
        &with_meta(&valid, |m| m["pins"]["dynlib_version"] = "0.0.1".into()),
        ErrorKind::Incompatible,
        "incompatible snapshot: dynlib_version is '0.0.1' in the file",
    );
    let mut nan_y = members_of(&valid);
    for (k, a) in &mut nan_y {
        if k == "y" {
            a.data = NpyData::F64(vec![f64::NAN, 0.0]);
        }
    }
    assert_rejected(
        &mut f,
        &write_npz(&nan_y).unwrap(),
        corrupt,
        "state 'u' is NaN in the file",
    );
    let mut extra = members_of(&valid);
    extra.push((
        "workspace/stepper/bogus".into(),
        NpyArray::f64(vec![1], vec![0.0]).unwrap(),
    ));
    assert_rejected(
        &mut f,
        &write_npz(&extra).unwrap(),
        corrupt,
        "'stepper/bogus' is not part of this stepper's workspace",
    );
    let mut stray = members_of(&valid);
    stray.push(("notes".into(), NpyArray::u8(vec![1], vec![1]).unwrap()));
    assert_rejected(
        &mut f,
        &write_npz(&stray).unwrap(),
        corrupt,
        "unexpected member 'notes'",
    );
    // Still importable after all that.
    f.sim.deserialize_snapshot(&valid).unwrap();
}

#[test]
fn files_from_another_stepper_or_model_are_refused() {
    let model = Model::load(ODE).unwrap();
    let mut euler = Sim::with_stepper(&model, Some("euler")).unwrap();
    euler.run(&RunOptions::new().t(0.3)).unwrap();
    let dir = tempdir();
    let path = dir.path().join("euler.npz");
    euler.export_snapshot(&path, None).unwrap();
    let mut rk4 = Sim::with_stepper(&model, Some("rk4")).unwrap();
    let err = rk4.import_snapshot(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Incompatible);
    assert!(
        err.message()
            .contains("incompatible snapshot: stepper_name is 'euler' in the file, 'rk4' here"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("euler.npz"), "{}", err.message());

    let one_state = Model::load("builtin://ode/expdecay").unwrap();
    let mut small = Sim::with_stepper(&one_state, Some("euler")).unwrap();
    let err = small.import_snapshot(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Incompatible);
    assert!(
        err.message()
            .contains("state vector has 2 entries, the model has 1"),
        "{}",
        err.message()
    );
    let err = small
        .import_snapshot(dir.path().join("missing.npz"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.message().contains("missing.npz"), "{}", err.message());
}

// ------------------------------------------------------------------ hostile input

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let mut f = fixture();
    let valid = f.valid.clone();
    let state = f.sim.session_state().clone();
    for len in 0..valid.len() {
        let err = f.sim.deserialize_snapshot(&valid[..len]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "at {len}: {err}");
    }
    assert!(f.sim.session_state().bits_eq(&state));
    eprintln!("truncations rejected: {}", valid.len());
}

#[test]
fn zip_bombs_and_huge_declared_shapes_are_bounded() {
    let mut f = fixture();
    // A member inflating to 300 MiB of zeros: refused once it passes the snapshot limit,
    // without holding it all in memory.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    zip.start_file("y.npy", opts).unwrap();
    let header = b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f8', 'fortran_order': False, 'shape': (39321600,), }";
    use std::io::Write;
    let mut h = header.to_vec();
    while (h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let hl = (h.len() - 10) as u16;
    h[8..10].copy_from_slice(&hl.to_le_bytes());
    zip.write_all(&h).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..300 {
        zip.write_all(&chunk).unwrap();
    }
    let bomb = zip.finish().unwrap().into_inner();
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let t = Instant::now();
    assert_rejected(&mut f, &bomb, ErrorKind::CorruptSnapshot, "expands beyond");
    assert!(t.elapsed() < Duration::from_secs(20));

    // A header declaring 10^15 elements over a few bytes of data.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("y.npy", opts).unwrap();
    let mut h = b"\x93NUMPY\x01\x00\x00\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000000,), }".to_vec();
    while (h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let hl = (h.len() - 10) as u16;
    h[8..10].copy_from_slice(&hl.to_le_bytes());
    zip.write_all(&h).unwrap();
    zip.write_all(&[0u8; 16]).unwrap();
    let liar = zip.finish().unwrap().into_inner();
    let err = f.sim.deserialize_snapshot(&liar).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "{err}");
}

#[test]
fn member_names_escaping_the_archive_are_refused() {
    let mut f = fixture();
    for name in [
        "../evil.npy",
        "/abs.npy",
        "workspace/../../x.npy",
        "a\\b.npy",
    ] {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        use std::io::Write;
        zip.write_all(&dynlib::persist::npy::write_npy(
            &NpyArray::f64(vec![1], vec![1.0]).unwrap(),
        ))
        .unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert_rejected(&mut f, &bytes, ErrorKind::CorruptSnapshot, "unsafe name");
    }
}

/// Deterministic xorshift so failures reproduce from the printed seed.
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
}

/// One mutation of `input`: a bit flip, an overwrite with a boundary value, a deletion, an
/// insertion or a splice with another corpus file.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    match rng.below(5) {
        0 => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(input.len());
            input[i] = [0x00, 0xff, 0x7f, 0x80, b'9'][rng.below(5)];
        }
        2 if input.len() > 2 => {
            let i = rng.below(input.len() - 1);
            let n = 1 + rng.below((input.len() - i).min(64));
            input.drain(i..i + n);
        }
        3 => {
            let i = rng.below(input.len());
            let b = (rng.next() & 0xff) as u8;
            input.insert(i, b);
        }
        _ => {
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(input.len().min(other.len()));
            input.truncate(cut);
            input.extend_from_slice(&other[cut..]);
        }
    }
}

/// Fuzz harness for the importer: mutations of valid files (byte flips, overwrites with
/// boundary values, deletions, insertions, splices of two files), each run through the
/// snapshot-import fuzz target (`dynlib::fuzzing::snapshot_import`, also behind
/// `fuzz/fuzz_targets/snapshot_import.rs`): offered to a session of every workspace kind, a
/// refusal must change nothing and an acceptance must resume. Every input must give a result,
/// never a panic. The count is printed; `DYNLIB_FUZZ_CASES` sets it.
#[test]
fn fuzz_the_importer_with_mutated_files() {
    let corpus = dynlib::fuzzing::snapshot_corpus();
    let budget: usize = std::env::var("DYNLIB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rng = Rng(seed);
    let mut total = dynlib::fuzzing::ImportOutcome::default();
    let (mut any_accepted, mut all_refused) = (0usize, 0usize);
    for case in 0..budget {
        let mut input = corpus[case % corpus.len()].clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, &corpus);
        }
        let out = match std::panic::catch_unwind(|| dynlib::fuzzing::snapshot_import(&input)) {
            Ok(out) => out,
            Err(_) => panic!("snapshot_import panicked on case {case} (seed {seed:#x})"),
        };
        total.accepted += out.accepted;
        total.refused += out.refused;
        total.resume_errors += out.resume_errors;
        if out.accepted > 0 {
            any_accepted += 1;
        } else {
            all_refused += 1;
        }
    }
    eprintln!(
        "fuzzed the snapshot-import target with {budget} mutated files ({} imports): \
         {all_refused} files refused by every session, {any_accepted} accepted by one \
         (mutations outside checked data, e.g. zip comments or timestamps); {} resumes of \
         accepted files failed with an error; 0 panics",
        total.accepted + total.refused,
        total.resume_errors
    );
    assert_eq!(any_accepted + all_refused, budget);
    assert!(all_refused > budget / 2);
}

// ------------------------------------------------------------------ other processes

const CHILD_ENV: &str = "DYNLIB_SNAPSHOT_TEST_CHILD";

fn spawn_child(role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .env("DYNLIB_SNAPSHOT_TEST_DIR", dir)
        .spawn()
        .unwrap()
}

/// Not a test on its own: the body of the child processes the tests below start.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("DYNLIB_SNAPSHOT_TEST_DIR").unwrap());
    match role.as_str() {
        "resume" => {
            for stepper in steppers() {
                let mut sim = Sim::with_stepper(&model_for(stepper), Some(stepper)).unwrap();
                sim.import_snapshot(dir.join(format!("{stepper}-seam.npz")))
                    .unwrap();
                sim.run(&horizon(stepper, 400).resume(true)).unwrap();
                sim.export_snapshot(dir.join(format!("{stepper}-end.npz")), None)
                    .unwrap();
                let lines: Vec<String> = samples(sim.results().unwrap())
                    .iter()
                    .map(|s| format!("{:?}", s))
                    .collect();
                std::fs::write(dir.join(format!("{stepper}-samples.txt")), lines.join("\n"))
                    .unwrap();
            }
        }
        "checkpoint-rk4" => {
            let model = Model::load("builtin://ode/izhikevich").unwrap();
            let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
            let policy = CheckpointPolicy::every_steps(&dir, 20_000, 3);
            // Runs far longer than the parent waits: it is killed part-way.
            sim.run(
                &RunOptions::new()
                    .t(1e8)
                    .record(false)
                    .max_steps(u64::MAX)
                    .checkpoint(policy),
            )
            .unwrap();
        }
        "checkpoint-rk45" => {
            let model = Model::load(ODE).unwrap();
            let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
            let policy = CheckpointPolicy::every_time(&dir, 25.0, 2);
            sim.run(
                &RunOptions::new()
                    .t(1e9)
                    .record(false)
                    .max_steps(u64::MAX)
                    .checkpoint(policy),
            )
            .unwrap();
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn export_in_one_process_import_and_resume_in_another_is_bit_identical() {
    let dir = tempdir();
    let mut wholes = Vec::new();
    for stepper in steppers() {
        let model = model_for(stepper);
        let mut first = Sim::with_stepper(&model, Some(stepper)).unwrap();
        first.run(&fresh(stepper, 173)).unwrap();
        first
            .export_snapshot(dir.path().join(format!("{stepper}-seam.npz")), None)
            .unwrap();
        let mut whole = Sim::with_stepper(&model, Some(stepper)).unwrap();
        whole.run(&fresh(stepper, 400)).unwrap();
        wholes.push((stepper, model, whole));
    }
    let status = spawn_child("resume", dir.path()).wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    for (stepper, model, whole) in wholes {
        let mut end = Sim::with_stepper(&model, Some(stepper)).unwrap();
        end.import_snapshot(dir.path().join(format!("{stepper}-end.npz")))
            .unwrap();
        assert!(
            whole.session_state().bits_eq(end.session_state()),
            "{stepper}: final state after resuming in the other process differs"
        );
        let child: Vec<String> =
            std::fs::read_to_string(dir.path().join(format!("{stepper}-samples.txt")))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
        let ours: Vec<String> = samples(whole.results().unwrap())
            .iter()
            .map(|s| format!("{:?}", s))
            .collect();
        assert!(!child.is_empty());
        assert_eq!(
            ours[ours.len() - child.len()..],
            child[..],
            "{stepper}: samples recorded by the other process differ"
        );
    }
}

/// Waits until `dir` holds a checkpoint at step >= `min_step`, then kills the child with
/// SIGKILL. Returns the checkpoints left.
fn kill_after_checkpoints(
    mut child: std::process::Child,
    dir: &Path,
    min_step: u64,
) -> Vec<(u64, PathBuf)> {
    let start = Instant::now();
    loop {
        let newest = list_checkpoints(dir)
            .unwrap()
            .last()
            .map(|(s, _)| *s)
            .unwrap_or(0);
        if newest >= min_step {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("checkpointing child exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint past step {min_step} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix: no chance to clean up.
    let status = child.wait().unwrap();
    assert!(!status.success());
    list_checkpoints(dir).unwrap()
}

#[test]
fn checkpoints_survive_sigkill_and_resume_bit_identically() {
    // Fixed step, every 20000 steps, keep 3: Izhikevich with its spike-reset event.
    let dir = tempdir();
    let left = kill_after_checkpoints(
        spawn_child("checkpoint-rk4", dir.path()),
        dir.path(),
        80_000,
    );
    assert!(
        (1..=4).contains(&left.len()),
        "keep = 3 (one more may exist between write and prune): {left:?}"
    );
    assert!(left.iter().all(|(s, _)| s % 20_000 == 0));
    let newest = latest_checkpoint(dir.path()).unwrap().unwrap();
    let meta = inspect_snapshot(&newest).unwrap();
    let k = meta["step_count"].as_u64().unwrap();
    assert!(k >= 80_000);

    let model = Model::load("builtin://ode/izhikevich").unwrap();
    let mut resumed = Sim::with_stepper(&model, Some("rk4")).unwrap();
    resumed.import_snapshot(&newest).unwrap();
    let t_end = resumed.time() + 20.0;
    resumed
        .run(&RunOptions::new().t(t_end).resume(true).record_interval(7))
        .unwrap();
    let mut whole = Sim::with_stepper(&model, Some("rk4")).unwrap();
    whole
        .run(
            &RunOptions::new()
                .t(t_end)
                .record_interval(7)
                .max_steps(u64::MAX),
        )
        .unwrap();
    check_continuation(&whole, &resumed).unwrap();
    assert!(whole.step_count() > k + 1000);

    // Adaptive, every 25 time units, keep 2: the kicked oscillator with lag and events.
    let dir = tempdir();
    let child = spawn_child("checkpoint-rk45", dir.path());
    let start = Instant::now();
    let mut child = Some(child);
    while start.elapsed() < Duration::from_secs(120) {
        let times: Vec<f64> = list_checkpoints(dir.path())
            .unwrap()
            .iter()
            .filter_map(|(_, p)| inspect_snapshot(p).ok())
            .filter_map(|m| m["t_curr"].as_f64())
            .collect();
        if times.iter().any(|t| *t >= 100.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let left = list_checkpoints(dir.path()).unwrap();
    assert!((1..=3).contains(&left.len()), "{left:?}");
    let newest = latest_checkpoint(dir.path()).unwrap().unwrap();
    let model = Model::load(ODE).unwrap();
    let mut resumed = Sim::with_stepper(&model, Some("rk45")).unwrap();
    resumed.import_snapshot(&newest).unwrap();
    assert!(resumed.time() >= 100.0);
    let t_end = resumed.time() + 30.0;
    resumed
        .run(&RunOptions::new().t(t_end).resume(true))
        .unwrap();
    let mut whole = Sim::with_stepper(&model, Some("rk45")).unwrap();
    whole
        .run(&RunOptions::new().t(t_end).max_steps(u64::MAX))
        .unwrap();
    check_continuation(&whole, &resumed).unwrap();
}

#[test]
fn checkpoint_policies_keep_the_newest_and_refuse_later_directories() {
    let model = Model::load(ODE).unwrap();
    let dir = tempdir();
    let mut sim = Sim::with_stepper(&model, Some("rk4")).unwrap();
    sim.run(
        &RunOptions::new()
            .t(10.0)
            .checkpoint(CheckpointPolicy::every_steps(dir.path(), 100, 2)),
    )
    .unwrap();
    let steps: Vec<u64> = list_checkpoints(dir.path())
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(steps, [900, 1000]);
    // Resuming from the last checkpoint matches the live session.
    let mut other = Sim::with_stepper(&model, Some("rk4")).unwrap();
    other
        .import_snapshot(latest_checkpoint(dir.path()).unwrap().unwrap())
        .unwrap();
    assert!(other.session_state().bits_eq(sim.session_state()));

    // A fresh run into a directory with later checkpoints is refused before it starts.
    let before = sim.session_state().clone();
    let err = sim
        .run(
            &RunOptions::new()
                .t(1.0)
                .checkpoint(CheckpointPolicy::every_steps(dir.path(), 10, 2)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("later than"), "{}", err.message());
    assert!(sim.session_state().bits_eq(&before));

    for bad in [
        CheckpointPolicy::every_steps(dir.path(), 0, 1),
        CheckpointPolicy::every_time(dir.path(), f64::NAN, 1),
        CheckpointPolicy::every_time(dir.path(), 1.0, 0),
    ] {
        let err = sim
            .run(&RunOptions::new().t(20.0).resume(true).checkpoint(bad))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    assert!(sim.session_state().bits_eq(&before));
}

// ------------------------------------------------------------------ NumPy

#[test]
fn numpy_load_reads_every_array_and_the_meta() {
    if std::env::var("DYNLIB_SKIP_NUMPY").is_ok_and(|v| v == "1") {
        common::skip(
            "numpy_load_reads_every_array_and_the_meta",
            "DYNLIB_SKIP_NUMPY=1",
        );
        return;
    }
    let model = Model::load(ODE).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("ab3")).unwrap();
    sim.run(&RunOptions::new().t(1.3).transient(0.2)).unwrap();
    let dir = tempdir();
    let path = dir.path().join("for-numpy.npz");
    sim.export_snapshot(&path, None).unwrap();

    // What the session holds, as raw bits, for the Python side to compare against.
    let st = sim.session_state();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut ws = serde_json::Map::new();
    for (bucket, arrays) in [
        ("stepper", st.stepper_ws.clone()),
        ("runtime", st.runtime_ws()),
    ] {
        for a in arrays {
            let (dtype, values): (&str, Vec<u64>) = match &a.data {
                dynlib::stepper::WsData::F64(v) => ("float64", bits(v)),
                dynlib::stepper::WsData::I64(v) => ("int64", v.iter().map(|x| *x as u64).collect()),
            };
            ws.insert(
                format!("workspace/{bucket}/{}", a.name),
                serde_json::json!({"dtype": dtype, "shape": a.shape, "bits": values}),
            );
        }
    }
    let expected = serde_json::json!({
        "y": bits(&st.y),
        "params": bits(&st.params),
        "stepper_config": bits(&st.config),
        "workspace": ws,
        "meta": {
            "schema": "dynlib-snapshot-v1",
            "n_state": 2, "n_params": 2,
            "state_names": ["u", "v"], "param_names": ["w", "hits"],
            "t_curr": st.t, "dt_curr": st.dt, "step_count": st.step,
            "time_shift": st.time_shift, "nominal_dt": st.nominal_dt,
            "status": st.status.code(),
            "pins": {
                "spec_hash": sim.pins().spec_hash, "stepper_name": "ab3",
                "workspace_sig": sim.pins().workspace_sig, "dtype_token": "float64",
                "dynlib_version": dynlib::VERSION,
            },
        },
    });
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_snapshot_npz.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&path)
        .arg(&expected_path)
        .output()
        .expect("python3 is needed for this test (set DYNLIB_SKIP_NUMPY=1 to skip)");
    assert!(
        out.status.success(),
        "numpy check failed (pip install numpy, or DYNLIB_SKIP_NUMPY=1 to skip):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("numpy check ok"), "{stdout}");
}

// ------------------------------------------------------------------ legacy tr-bdf2a files

/// tests/fixtures/tr_bdf2a_legacy_vanderpol.npz: a periodic checkpoint (step 680, t ≈ 17.77)
/// of `dynlib run builtin://ode/vanderpol --stepper tr-bdf2a --t-end 20 --checkpoint-every
/// 40`, written by the build before tr-bdf2a's predictive step rule (commit 7f4fa90: its
/// workspace held the dense-output nodes only). That run ended at t = 20 in this state.
const TR_BDF2A_LEGACY: &str = "tr_bdf2a_legacy_vanderpol.npz";
const TR_BDF2A_LEGACY_END: [f64; 2] = [2.0081277405291185, -0.043331909854423215];

fn legacy_fixture() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(TR_BDF2A_LEGACY);
    std::fs::read(path).unwrap()
}

fn vanderpol_tr_bdf2a() -> Sim {
    let model = Model::load("builtin://ode/vanderpol").unwrap();
    Sim::with_stepper(&model, Some("tr-bdf2a")).unwrap()
}

fn meta_of(bytes: &[u8]) -> serde_json::Value {
    let m = members_of(bytes);
    let (_, a) = m.iter().find(|(k, _)| k == "meta.json").unwrap();
    let NpyData::U8(raw) = &a.data else { panic!() };
    serde_json::from_slice(raw).unwrap()
}

/// A file of the old layout imports (its signature is the one the legacy template gives,
/// else the import would refuse it), resumes to where the writing build's run ended, and
/// exported again it is a file of today's layout that continues with the same bits.
#[test]
fn tr_bdf2a_files_of_the_layout_before_the_predictive_rule_import_and_resume() {
    let legacy = legacy_fixture();
    let mut sim = vanderpol_tr_bdf2a();
    sim.deserialize_snapshot(&legacy).unwrap();
    assert_eq!(sim.step_count(), 680);
    assert_eq!(sim.time(), meta_of(&legacy)["t_curr"].as_f64().unwrap());
    let again = sim.serialize_snapshot(None).unwrap();
    let today = vanderpol_tr_bdf2a().serialize_snapshot(None).unwrap();
    assert_eq!(
        meta_of(&again)["pins"]["workspace_sig"],
        meta_of(&today)["pins"]["workspace_sig"]
    );
    assert_ne!(
        meta_of(&again)["pins"]["workspace_sig"],
        meta_of(&legacy)["pins"]["workspace_sig"]
    );
    assert!(members_of(&again)
        .iter()
        .any(|(k, _)| k == "workspace/stepper/controller_history"));

    // The continuation is today's method (its steps are sized by the predictive rule from
    // the second step on), so it ends near the writing build's state, not on it: measured
    // 7.0e-7 and 5.3e-5 relative (rtol 1e-5 in the file's knobs).
    resumes_alike_near(&mut sim, &again, &TR_BDF2A_LEGACY_END);
}

/// `sim` and a new session importing `again` (its re-export) continue bit for bit alike to
/// t = 20, ending near `writer_end`, the state the build that wrote the file reached.
fn resumes_alike_near(sim: &mut Sim, again: &[u8], writer_end: &[f64]) {
    let mut other = vanderpol_tr_bdf2a();
    other.deserialize_snapshot(again).unwrap();
    for s in [&mut *sim, &mut other] {
        s.run(&RunOptions::new().t(20.0).resume(true)).unwrap();
    }
    assert!(sim.session_state().bits_eq(other.session_state()));
    for (got, old) in sim.state().iter().zip(writer_end) {
        assert!(
            (got - old).abs() <= 1e-3 * old.abs().max(0.05),
            "{got} against the writing build's {old}"
        );
    }
}

/// The same from a file of today's made legacy (no `controller_history`, the legacy
/// signature): it reads as today's file with no history, bit for bit, and continues alike.
/// Anything not exactly of one layout or the other is refused and changes nothing.
#[test]
fn legacy_tr_bdf2a_files_read_as_no_history_and_hostile_ones_are_refused() {
    let legacy_sig = meta_of(&legacy_fixture())["pins"]["workspace_sig"].clone();
    let mut first = vanderpol_tr_bdf2a();
    first.run(&RunOptions::new().t(5.0)).unwrap();
    let today = first.serialize_snapshot(None).unwrap();
    let history = "workspace/stepper/controller_history";
    let nodes_only = with_member(&with_member(&today, history, None), RATE, None);
    let made_legacy = with_meta(&nodes_only, |m| {
        m["pins"]["workspace_sig"] = legacy_sig.clone();
    });
    let no_history = with_member(
        &with_member(
            &today,
            history,
            Some(NpyArray::f64(vec![2], vec![0.0, 0.0]).unwrap()),
        ),
        RATE,
        Some(NpyArray::f64(vec![1], vec![1.0]).unwrap()),
    );
    let (mut a, mut b) = (vanderpol_tr_bdf2a(), vanderpol_tr_bdf2a());
    a.deserialize_snapshot(&made_legacy).unwrap();
    b.deserialize_snapshot(&no_history).unwrap();
    assert!(a.session_state().bits_eq(b.session_state()));
    for s in [&mut a, &mut b] {
        s.run(&RunOptions::new().t(9.0).resume(true)).unwrap();
    }
    assert!(a.session_state().bits_eq(b.session_state()));

    let mut sim = vanderpol_tr_bdf2a();
    sim.run(&RunOptions::new().t(0.5)).unwrap();
    sim.create_snapshot("s1", "").unwrap();
    let mut f = Fixture {
        sim,
        valid: today.clone(),
    };
    let history_of =
        |v: Vec<f64>| with_member(&today, history, Some(NpyArray::f64(vec![2], v).unwrap()));
    let cases: Vec<(&str, Vec<u8>, ErrorKind, &str)> = vec![
        (
            "the legacy members with today's signature",
            nodes_only.clone(),
            ErrorKind::CorruptSnapshot,
            "controller_history",
        ),
        (
            "today's members with the legacy signature",
            with_meta(&today, |m| m["pins"]["workspace_sig"] = legacy_sig.clone()),
            ErrorKind::CorruptSnapshot,
            "controller_history",
        ),
        (
            "a legacy file without its dense-output times",
            with_member(&made_legacy, "workspace/stepper/dense_t", None),
            ErrorKind::CorruptSnapshot,
            "dense_t",
        ),
        (
            "a negative step in the history",
            history_of(vec![-0.1, 0.5]),
            ErrorKind::CorruptSnapshot,
            "controller_history",
        ),
        (
            "an error below the floor",
            history_of(vec![0.1, 1e-3]),
            ErrorKind::CorruptSnapshot,
            "controller_history",
        ),
        (
            "a non-finite error",
            history_of(vec![0.1, f64::NAN]),
            ErrorKind::CorruptSnapshot,
            "controller_history",
        ),
    ];
    for (what, bytes, kind, needle) in cases {
        eprintln!("{what}");
        assert_rejected(&mut f, &bytes, kind, needle);
    }
    // The valid file still imports after all of that.
    let valid = f.valid.clone();
    f.sim.deserialize_snapshot(&valid).unwrap();
}

// ------------------------------------------------------- tr-bdf2a files before the carried rate

/// tests/fixtures/tr_bdf2a_before_rate_vanderpol.npz: the periodic checkpoint at step 760
/// (t ≈ 19.6) of `dynlib run builtin://ode/vanderpol --stepper tr-bdf2a --t-end 20
/// --checkpoint-every 40 --checkpoint-dir D`, written by the build before tr-bdf2a carried
/// its Newton rate across steps (commit 4cc09a8: dense-output nodes and the predictive
/// rule's history). That run ended at t = 20 in this state.
const TR_BDF2A_BEFORE_RATE: &str = "tr_bdf2a_before_rate_vanderpol.npz";
const TR_BDF2A_BEFORE_RATE_END: [f64; 2] = [2.008132977042765, -0.043320821113031815];
const RATE: &str = "workspace/stepper/newton_rate";

fn before_rate_fixture() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(TR_BDF2A_BEFORE_RATE);
    std::fs::read(path).unwrap()
}

/// A file of the layout before the carried rate imports (by its signature), resumes to
/// near where the writing build's run ended, and exported again is a file of today's
/// layout (with the rate) that continues with the same bits.
#[test]
fn tr_bdf2a_files_of_the_layout_before_the_carried_rate_import_and_resume() {
    let old = before_rate_fixture();
    assert!(!members_of(&old).iter().any(|(k, _)| k == RATE));
    let mut sim = vanderpol_tr_bdf2a();
    sim.deserialize_snapshot(&old).unwrap();
    assert_eq!(sim.step_count(), 760);
    let again = sim.serialize_snapshot(None).unwrap();
    let today = vanderpol_tr_bdf2a().serialize_snapshot(None).unwrap();
    let sig = |b: &[u8]| meta_of(b)["pins"]["workspace_sig"].clone();
    assert_eq!(sig(&again), sig(&today));
    assert_ne!(sig(&again), sig(&old));
    assert_ne!(sig(&old), sig(&legacy_fixture()));
    assert!(members_of(&again).iter().any(|(k, _)| k == RATE));
    // Today's Newton test stops at other iterates, so the end is near the old one only.
    resumes_alike_near(&mut sim, &again, &TR_BDF2A_BEFORE_RATE_END);
}

/// A file of today's stripped of the rate and given the old signature reads bit for bit as
/// today's file with the rate unknown (1); mixed layouts and rates outside [0, 1] are
/// refused and change nothing.
#[test]
fn tr_bdf2a_files_before_the_rate_read_as_an_unknown_rate_and_hostile_ones_are_refused() {
    let old_sig = meta_of(&before_rate_fixture())["pins"]["workspace_sig"].clone();
    let mut first = vanderpol_tr_bdf2a();
    first.run(&RunOptions::new().t(5.0)).unwrap();
    let today = first.serialize_snapshot(None).unwrap();
    let rate_of =
        |v: f64| with_member(&today, RATE, Some(NpyArray::f64(vec![1], vec![v]).unwrap()));
    let stripped = with_member(&today, RATE, None);
    let made_old = with_meta(&stripped, |m| m["pins"]["workspace_sig"] = old_sig.clone());
    let (mut a, mut b) = (vanderpol_tr_bdf2a(), vanderpol_tr_bdf2a());
    a.deserialize_snapshot(&made_old).unwrap();
    b.deserialize_snapshot(&rate_of(1.0)).unwrap();
    assert!(a.session_state().bits_eq(b.session_state()));
    for s in [&mut a, &mut b] {
        s.run(&RunOptions::new().t(9.0).resume(true)).unwrap();
    }
    assert!(a.session_state().bits_eq(b.session_state()));
    // The rate is part of the state: a file with another one continues differently.
    let (mut c, mut d) = (vanderpol_tr_bdf2a(), vanderpol_tr_bdf2a());
    c.deserialize_snapshot(&today).unwrap();
    d.deserialize_snapshot(&rate_of(1.0)).unwrap();
    for s in [&mut c, &mut d] {
        s.run(&RunOptions::new().t(9.0).resume(true)).unwrap();
    }
    assert!(!c.session_state().bits_eq(d.session_state()));

    let mut sim = vanderpol_tr_bdf2a();
    sim.run(&RunOptions::new().t(0.5)).unwrap();
    sim.create_snapshot("s1", "").unwrap();
    let mut f = Fixture {
        sim,
        valid: today.clone(),
    };
    let cases: Vec<(&str, Vec<u8>, ErrorKind, &str)> = vec![
        (
            "the old members with today's signature",
            stripped.clone(),
            ErrorKind::CorruptSnapshot,
            "newton_rate",
        ),
        (
            "today's members with the old signature",
            with_meta(&today, |m| m["pins"]["workspace_sig"] = old_sig.clone()),
            ErrorKind::CorruptSnapshot,
            "newton_rate",
        ),
        (
            "a negative rate",
            rate_of(-0.1),
            ErrorKind::CorruptSnapshot,
            "newton_rate",
        ),
        (
            "a rate above 1",
            rate_of(1.5),
            ErrorKind::CorruptSnapshot,
            "newton_rate",
        ),
        (
            "a NaN rate",
            rate_of(f64::NAN),
            ErrorKind::CorruptSnapshot,
            "newton_rate",
        ),
    ];
    for (what, bytes, kind, needle) in cases {
        eprintln!("{what}");
        assert_rejected(&mut f, &bytes, kind, needle);
    }
    let valid = f.valid.clone();
    f.sim.deserialize_snapshot(&valid).unwrap();
}
