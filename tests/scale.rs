//! Scale (issue 13): large models load and run with both backends giving the same bits,
//! nested functions are lowered once per distinct call, compact (v2) snapshot files of large
//! models round-trip exactly and are checked like v1 files, and segment and snapshot names
//! keep their semantics with O(1) checks.

use std::time::Instant;

use dynlib::persist::npy::{NpyArray, NpyData};
use dynlib::persist::npz::{read_npz, write_npz, Limits};
use dynlib::{Backend, ErrorKind, Model, RunOptions, SegmentRef, Sim};

/// A chain of `n` states sharing one aux value (which crosses native-code chunks, so it goes
/// through the spill area), with a lag on the first state.
fn chain_with_aux(n: usize) -> String {
    let mut s = String::from("[model]\ntype = \"ode\"\n\n[states]\n");
    for i in 0..n {
        s.push_str(&format!("x{i} = {}\n", 0.001 * i as f64));
    }
    s.push_str("\n[params]\nk = 0.5\n\n[aux]\na = \"sin(x0) + 0.1*lag_x0(2)\"\n");
    s.push_str("\n[equations.rhs]\nx0 = \"1 - k*x0\"\n");
    for i in 1..n {
        s.push_str(&format!(
            "x{i} = \"a*(x{p} - x{i}) + 0.01*sin(x{i})\"\n",
            p = i - 1
        ));
    }
    s
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_model_compiled_in_chunks_matches_the_interpreter_bit_for_bit() {
    // ~7 instructions per state: 10^3 states is several chunks of native code.
    let text = chain_with_aux(1000);
    let native = Model::from_toml_with(&text, Backend::Native).unwrap();
    let interp = Model::from_toml_with(&text, Backend::Interpreter).unwrap();
    assert_eq!(native.backend(), Backend::Native);
    let mut states = Vec::new();
    for m in [&native, &interp] {
        let mut sim = Sim::with_stepper(m, Some("rk4")).unwrap();
        sim.run(&RunOptions::new().t(0.5).dt(0.01).record(false))
            .unwrap();
        states.push(bits(sim.state()));
    }
    assert_eq!(states[0], states[1]);
    assert!(states[0].iter().any(|&b| b != 0));
}

fn nested(depth: usize) -> String {
    let mut s = String::from("[model]\ntype = \"ode\"\n\n[states]\nx = 1.0\n\n[functions]\n");
    s.push_str("f0 = { args = [\"z\"], expr = \"0.5*z + 1\" }\n");
    for i in 1..=depth {
        s.push_str(&format!(
            "f{i} = {{ args = [\"z\"], expr = \"f{p}(z) + f{p}(z)\" }}\n",
            p = i - 1
        ));
    }
    s.push_str(&format!("\n[equations.rhs]\nx = \"-f{depth}(x)\"\n"));
    s
}

#[test]
fn functions_nested_25_deep_load_fast_and_compute_the_same_value() {
    let text = nested(25);
    for backend in [Backend::Native, Backend::Interpreter] {
        let t = Instant::now();
        let m = Model::from_toml_with(&text, backend).unwrap();
        let took = t.elapsed().as_secs_f64();
        // Re-inlining every call took > 60 s; once per distinct call it is milliseconds
        // (the bound leaves room for a loaded machine).
        assert!(took < 2.0, "{backend:?} load took {took} s");
        let mut sim = Sim::with_stepper(&m, Some("euler")).unwrap();
        sim.run(&RunOptions::new().t(1e-9).dt(1e-9)).unwrap();
        // f25(1) = 2^25 * (0.5 + 1); one Euler step of -f25.
        let want = 1.0 - 1e-9 * (2f64.powi(25) * 1.5);
        assert_eq!(sim.state()[0].to_bits(), want.to_bits(), "{backend:?}");
    }
}

/// dx_i = -x_i as a host model of `n` states (loads instantly at any size).
struct Decay;
impl dynlib::model::host::HostModel for Decay {
    fn rhs(&self, _t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        for (o, v) in out.iter_mut().zip(y) {
            *o = -p[0] * v;
        }
        Ok(())
    }
}

fn host(n: usize) -> Model {
    let def = dynlib::model::host::HostModelDef {
        id: format!("scale-test/decay{n}"),
        version: "1".into(),
        kind: dynlib::model::ModelKind::Ode,
        state_names: (0..n).map(|i| format!("y{i}")).collect(),
        state_init: (0..n).map(|i| 1.0 + i as f64).collect(),
        param_names: vec!["k".into()],
        param_init: vec![0.25],
        aux_names: Vec::new(),
        event_names: Vec::new(),
        dt: 0.01,
        stepper: "rk45".into(),
    };
    Model::from_host(def, Box::new(Decay)).unwrap()
}

fn meta_of(bytes: &[u8]) -> serde_json::Value {
    dynlib::session::inspect_snapshot_bytes(bytes).unwrap()
}

#[test]
fn host_models_with_many_names_build_and_duplicates_are_still_refused() {
    let n = 200_000;
    let t = Instant::now();
    let m = host(n);
    assert_eq!(m.n_states(), n);
    let took = t.elapsed().as_secs_f64();
    assert!(took < 5.0, "building took {took} s");
    let mut def = dynlib::model::host::HostModelDef {
        id: "dup".into(),
        version: "1".into(),
        kind: dynlib::model::ModelKind::Ode,
        state_names: (0..1000).map(|i| format!("y{i}")).collect(),
        state_init: vec![0.0; 1000],
        param_names: vec!["y500".into()],
        param_init: vec![1.0],
        aux_names: Vec::new(),
        event_names: Vec::new(),
        dt: 0.01,
        stepper: "rk4".into(),
    };
    let err = Model::from_host(def.clone(), Box::new(Decay)).unwrap_err();
    assert!(err.message().contains("duplicate name 'y500'"), "{err}");
    def.param_names = vec!["k".into()];
    Model::from_host(def, Box::new(Decay)).unwrap();
}

#[test]
fn large_models_get_compact_files_that_resume_exactly() {
    let m = host(5000);
    let mut sim = Sim::new(&m).unwrap();
    sim.run(&RunOptions::new().t(0.3)).unwrap();
    let bytes = sim.serialize_snapshot(None).unwrap();
    let meta = meta_of(&bytes);
    assert_eq!(meta["schema"], "dynlib-snapshot-v2");
    assert!(meta.get("state_names").is_none());
    assert_eq!(meta["n_state"], 5000);
    // No lags: the lag heads are all zero and listed, not stored.
    let zero = meta["zero_members"].as_object().unwrap();
    assert_eq!(
        zero["workspace/runtime/lag_head"],
        serde_json::json!({"dtype": "int64", "shape": [5000]})
    );
    let members = read_npz(&bytes, &Limits::default()).unwrap();
    assert!(members.iter().all(|(k, _)| !zero.contains_key(k)));
    // 5000 states: the file is the state and the stepper's arrays, not names.
    let y_bytes = 5000 * 8;
    assert!(bytes.len() < 12 * y_bytes, "{} bytes", bytes.len());

    // Import into a fresh session and continue: the same bits as the uninterrupted run.
    let mut resumed = Sim::new(&m).unwrap();
    resumed.deserialize_snapshot(&bytes).unwrap();
    assert!(resumed.session_state().bits_eq(sim.session_state()));
    sim.run(&RunOptions::new().t(0.6).resume(true)).unwrap();
    resumed.run(&RunOptions::new().t(0.6).resume(true)).unwrap();
    assert_eq!(bits(sim.state()), bits(resumed.state()));

    // A small model still writes v1, with its names.
    let small = host(10);
    let mut s = Sim::new(&small).unwrap();
    s.run(&RunOptions::new().t(0.1)).unwrap();
    let meta = meta_of(&s.serialize_snapshot(None).unwrap());
    assert_eq!(meta["schema"], "dynlib-snapshot-v1");
    assert_eq!(meta["state_names"].as_array().unwrap().len(), 10);
}

/// `bytes` with its meta.json edited by `edit`.
fn edit_meta(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut members = read_npz(bytes, &Limits::default()).unwrap();
    let (_, a) = members.iter_mut().find(|(k, _)| k == "meta.json").unwrap();
    let NpyData::U8(raw) = &a.data else {
        panic!("meta.json is uint8")
    };
    let mut v: serde_json::Value = serde_json::from_slice(raw).unwrap();
    edit(&mut v);
    let text = serde_json::to_vec(&v).unwrap();
    *a = NpyArray::u8(vec![text.len()], text).unwrap();
    write_npz(&members).unwrap()
}

#[test]
fn crafted_compact_files_are_refused_and_change_nothing() {
    let m = host(5000);
    let mut other = Sim::new(&m).unwrap();
    other.run(&RunOptions::new().t(0.2)).unwrap();
    let valid = other.serialize_snapshot(None).unwrap();
    let mut sim = Sim::new(&m).unwrap();
    sim.run(&RunOptions::new().t(0.1)).unwrap();
    let before = sim.session_state().clone();
    let key = "workspace/runtime/lag_head";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            edit_meta(&valid, |v| {
                v["zero_members"][key]["shape"] = serde_json::json!([4999]);
            }),
            "is not an array of this session's workspace",
        ),
        (
            edit_meta(&valid, |v| {
                v["zero_members"][key]["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40]);
            }),
            "is larger than a snapshot can be",
        ),
        (
            edit_meta(&valid, |v| {
                v["zero_members"]["workspace/runtime/y"] =
                    serde_json::json!({"dtype": "float64", "shape": [5000]});
            }),
            "is not an array of this session's workspace",
        ),
        (
            edit_meta(&valid, |v| {
                v["zero_members"][key]["dtype"] = serde_json::json!("uint8");
            }),
            "is not an array of this session's workspace",
        ),
        (
            edit_meta(&valid, |v| {
                v["zero_members"] = serde_json::json!([1, 2]);
            }),
            "'zero_members' must be an object",
        ),
        (
            edit_meta(&valid, |v| {
                v.as_object_mut().unwrap().remove("zero_members");
            }),
            "is missing",
        ),
    ];
    for (bytes, want) in cases {
        let err = sim.deserialize_snapshot(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "{err}");
        assert!(err.message().contains(want), "want '{want}' in: {err}");
        assert!(sim.session_state().bits_eq(&before));
    }
    // A file of another model of the same size is refused by its pins, names or not.
    let other_model = {
        let def = dynlib::model::host::HostModelDef {
            id: "scale-test/other".into(),
            ..host_def(5000)
        };
        Model::from_host(def, Box::new(Decay)).unwrap()
    };
    let mut foreign = Sim::new(&other_model).unwrap();
    let err = foreign.deserialize_snapshot(&valid).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Incompatible, "{err}");
    assert!(err.message().contains("spec_hash"), "{err}");
    sim.deserialize_snapshot(&valid).unwrap();
}

/// `bytes` with member `key` stored as `array` instead of listed in `zero_members`, or (with
/// `None`) listed as all-zero `float64` of `shape` instead of stored.
fn swap_zero_member(bytes: &[u8], key: &str, array: Option<NpyArray>, shape: &[usize]) -> Vec<u8> {
    let listed = edit_meta(bytes, |v| {
        let zero = v["zero_members"].as_object_mut().unwrap();
        match &array {
            Some(_) => drop(zero.remove(key)),
            None => drop(zero.insert(
                key.into(),
                serde_json::json!({"dtype": "float64", "shape": shape}),
            )),
        }
    });
    let mut members = read_npz(&listed, &Limits::default()).unwrap();
    members.retain(|(k, _)| k != key);
    members.extend(array.map(|a| (key.to_string(), a)));
    write_npz(&members).unwrap()
}

#[test]
fn an_all_zero_pending_state_is_checked_but_made_only_for_a_pending_step() {
    let n = 5000;
    let m = host(n);
    let key = "workspace/runtime/pending_y";
    // Fixed step: no pending step, so the file lists pending_y as zero; an import resumes
    // exactly.
    let mut fixed = Sim::with_stepper(&m, Some("rk4")).unwrap();
    fixed.run(&RunOptions::new().t(0.2).dt(0.01)).unwrap();
    let file = fixed.serialize_snapshot(None).unwrap();
    assert_eq!(
        meta_of(&file)["zero_members"][key],
        serde_json::json!({"dtype": "float64", "shape": [n]})
    );
    let mut resumed = Sim::with_stepper(&m, Some("rk4")).unwrap();
    resumed.deserialize_snapshot(&file).unwrap();
    assert!(resumed.session_state().bits_eq(fixed.session_state()));
    for sim in [&mut fixed, &mut resumed] {
        sim.run(&RunOptions::new().t(0.4).resume(true)).unwrap();
    }
    assert_eq!(bits(fixed.state()), bits(resumed.state()));

    // Crafted: each refused with the session unchanged.
    let before = resumed.session_state().clone();
    let zeros = |len: usize| NpyArray::f64(vec![len], vec![0.0; len]).unwrap();
    // A pending step flagged in a fixed-step file (`pending` is all zero, so listed too).
    let flagged = NpyArray::f64(vec![3], vec![1.0, 0.3, 0.01]).unwrap();
    let pending_flag = |bytes: &[u8]| {
        swap_zero_member(
            bytes,
            "workspace/runtime/pending",
            Some(flagged.clone()),
            &[3],
        )
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            swap_zero_member(&file, key, None, &[n - 1]),
            "is not an array of this session's workspace",
        ),
        (
            {
                // Listed and stored.
                let mut members = read_npz(&file, &Limits::default()).unwrap();
                members.push((key.to_string(), zeros(n)));
                write_npz(&members).unwrap()
            },
            "stored and also listed in zero_members",
        ),
        (
            // Neither listed nor stored.
            edit_meta(&file, |v| {
                v["zero_members"].as_object_mut().unwrap().remove(key);
            }),
            "'runtime/pending_y' is missing",
        ),
        (pending_flag(&file), "is not adaptive"),
    ];
    for (bytes, want) in cases {
        let err = resumed.deserialize_snapshot(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "{err}");
        assert!(err.message().contains(want), "want '{want}' in: {err}");
        assert!(resumed.session_state().bits_eq(&before));
    }

    // Adaptive, ending inside a step: the pending state is stored and resumes exactly.
    let mut adaptive = Sim::new(&m).unwrap();
    adaptive.run(&RunOptions::new().t(0.3)).unwrap();
    assert!(adaptive.session_state().pending.is_some());
    let file = adaptive.serialize_snapshot(None).unwrap();
    assert!(meta_of(&file)["zero_members"].get(key).is_none());
    let mut resumed = Sim::new(&m).unwrap();
    resumed.deserialize_snapshot(&file).unwrap();
    assert!(resumed.session_state().bits_eq(adaptive.session_state()));
    // A pending step whose state is listed as zero gets the state a stored zero array
    // gives: the listed one is made when a step is pending.
    let listed = swap_zero_member(&file, key, None, &[n]);
    let stored = swap_zero_member(&listed, key, Some(zeros(n)), &[n]);
    let (mut a, mut b) = (Sim::new(&m).unwrap(), Sim::new(&m).unwrap());
    a.deserialize_snapshot(&listed).unwrap();
    b.deserialize_snapshot(&stored).unwrap();
    let pending = a.session_state().pending.as_ref().unwrap();
    assert!(pending.y_new.len() == n && pending.y_new.iter().all(|&v| v.to_bits() == 0));
    assert!(a.session_state().bits_eq(b.session_state()));
}

fn host_def(n: usize) -> dynlib::model::host::HostModelDef {
    dynlib::model::host::HostModelDef {
        id: format!("scale-test/decay{n}"),
        version: "1".into(),
        kind: dynlib::model::ModelKind::Ode,
        state_names: (0..n).map(|i| format!("y{i}")).collect(),
        state_init: (0..n).map(|i| 1.0 + i as f64).collect(),
        param_names: vec!["k".into()],
        param_init: vec![0.25],
        aux_names: Vec::new(),
        event_names: Vec::new(),
        dt: 0.01,
        stepper: "rk45".into(),
    }
}

#[test]
fn segment_names_stay_unique_through_renames_and_failed_runs() {
    let m = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::with_stepper(&m, Some("rk4")).unwrap();
    let dt = 1.0 / 64.0;
    let mut horizon = 0.0;
    let mut run = |sim: &mut Sim, tag: Option<&str>, first: bool| {
        horizon += 4.0 * dt;
        let mut o = RunOptions::new().t(horizon);
        o = if first { o.dt(dt) } else { o.resume(true) };
        if let Some(t) = tag {
            o = o.tag(t);
        }
        sim.run(&o).unwrap();
    };
    run(&mut sim, Some("seg"), true);
    for _ in 0..300 {
        run(&mut sim, Some("seg"), false);
    }
    run(&mut sim, None, false);
    let names: Vec<String> = (0..302)
        .map(|i| sim.segment_name(SegmentRef::Index(i)).unwrap())
        .collect();
    assert_eq!(names[0], "seg");
    assert_eq!(names[1], "seg-2");
    assert_eq!(names[300], "seg-301");
    assert_eq!(names[301], "run#301");
    let unique: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), 302);
    assert_eq!(
        sim.segment_samples(SegmentRef::Name("seg-150")).unwrap(),
        sim.segment_samples(SegmentRef::Index(149)).unwrap()
    );
    assert_eq!(
        sim.segment_samples(SegmentRef::Name("run#7")).unwrap(),
        sim.segment_samples(SegmentRef::Index(7)).unwrap()
    );
    // Renaming frees "seg-2": the next run tagged "seg" takes it (the smallest free suffix).
    assert_eq!(
        sim.name_segment(SegmentRef::Index(1), "warmup").unwrap(),
        "warmup"
    );
    run(&mut sim, Some("seg"), false);
    assert_eq!(sim.segment_name(SegmentRef::Index(302)).unwrap(), "seg-2");
    // A name taken by the automatic name of another segment gets a suffix.
    assert_eq!(
        sim.name_segment(SegmentRef::Index(0), "run#5").unwrap(),
        "run#5-2"
    );
    assert!(sim.segment_samples(SegmentRef::Name("seg-999")).is_err());
}

#[test]
fn many_snapshots_keep_unique_names_and_are_found_by_name() {
    let m = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::new(&m).unwrap();
    sim.run(&RunOptions::new().t(0.1)).unwrap();
    for i in 0..2000 {
        sim.create_snapshot(&format!("s{i}"), "").unwrap();
    }
    let err = sim.create_snapshot("s1234", "").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateName);
    let err = sim.create_snapshot("initial", "").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateName);
    let list = sim.list_snapshots();
    assert_eq!(list.len(), 2001);
    assert_eq!(list[0].name, "initial");
    assert_eq!(list[2000].name, "s1999");
    let t_snap = sim.time();
    sim.run(&RunOptions::new().t(0.2).resume(true)).unwrap();
    sim.reset("s1500").unwrap();
    assert_eq!(sim.time().to_bits(), t_snap.to_bits());
    assert_eq!(
        sim.reset("s2000").unwrap_err().kind(),
        ErrorKind::UnknownName
    );
}

/// The C ABI's size query and the call that follows serialize once: the copy a second later
/// is the size query's bytes (its `created_at` is from before the pause) while the state is
/// unchanged, and fresh bytes once the state has changed.
#[test]
fn the_c_abi_size_query_and_the_copy_serialize_once() {
    use dynlib::ffi::model::{dynlib_model_free, dynlib_model_load};
    use dynlib::ffi::sim::{
        dynlib_run_options_init, dynlib_sim_free, dynlib_sim_new, dynlib_sim_run, DynlibRunOptions,
    };
    use dynlib::ffi::snapshot::dynlib_sim_serialize_snapshot;
    use std::time::{Duration, SystemTime};
    let pause = Duration::from_millis(1100);
    // Size query, pause, copy; returns the bytes and an upper bound (exclusive) for the time
    // stamp of bytes made at the size query.
    let fetch = |sim| -> (Vec<u8>, String) {
        let before = SystemTime::now();
        let mut needed = 0usize;
        // SAFETY: a live handle; `needed` is writable; a NULL buffer with capacity 0.
        let st = unsafe {
            dynlib_sim_serialize_snapshot(
                sim,
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                &mut needed,
            )
        };
        assert_eq!(st, 0);
        let mut buf = vec![0u8; needed];
        std::thread::sleep(pause);
        // SAFETY: `buf` holds `needed` writable bytes.
        let st = unsafe {
            dynlib_sim_serialize_snapshot(
                sim,
                std::ptr::null(),
                buf.as_mut_ptr(),
                needed,
                &mut needed,
            )
        };
        assert_eq!(st, 0);
        assert_eq!(needed, buf.len());
        let bound = humantime::format_rfc3339_seconds(before + pause).to_string();
        (buf, bound)
    };
    let created = |bytes: &[u8]| meta_of(bytes)["created_at"].as_str().unwrap().to_string();
    let source = c"builtin://ode/lorenz";
    let mut model = std::ptr::null_mut();
    let mut sim = std::ptr::null_mut();
    // SAFETY: valid C strings and out-pointers.
    unsafe {
        assert_eq!(
            dynlib_model_load(source.as_ptr(), std::ptr::null(), &mut model),
            0
        );
        assert_eq!(dynlib_sim_new(model, &mut sim), 0);
    }
    let (first, bound) = fetch(sim);
    assert!(created(&first) < bound, "{} vs {bound}", created(&first));
    let mut opts = std::mem::MaybeUninit::<DynlibRunOptions>::uninit();
    // SAFETY: `opts` is written by init before use; the handles are live.
    unsafe {
        assert_eq!(dynlib_run_options_init(opts.as_mut_ptr()), 0);
        let mut opts = opts.assume_init();
        opts.T = 0.5;
        assert_eq!(dynlib_sim_run(sim, &opts), 0);
    }
    // The state changed between two size queries: the bytes are new.
    let (after, bound) = fetch(sim);
    let t_after = meta_of(&after)["t_curr"].as_f64().unwrap();
    assert!((t_after - 0.5).abs() < 1e-9, "{t_after}");
    assert_eq!(meta_of(&first)["t_curr"], serde_json::json!(0.0));
    assert!(created(&after) < bound);
    // SAFETY: live handles, freed once.
    unsafe {
        dynlib_sim_free(sim);
        dynlib_model_free(model);
    }
}

/// `bytes` with member `key` (a float64 vector) edited by `edit`, written again (so its CRC
/// is right).
fn edit_vector(bytes: &[u8], key: &str, edit: impl Fn(&mut Vec<f64>)) -> Vec<u8> {
    let mut members = read_npz(bytes, &Limits::default()).unwrap();
    let (_, a) = members.iter_mut().find(|(k, _)| k == key).unwrap();
    let NpyData::F64(v) = &mut a.data else {
        panic!("{key} is float64")
    };
    edit(v);
    write_npz(&members).unwrap()
}

/// Imports read stored members in place and, for a stepper that carries nothing (rk4), make
/// no stepper: the state still round-trips bit for bit for fixed-step and adaptive steppers,
/// and a flipped data byte, a non-finite value (at any position, block boundaries included)
/// or a foreign workspace member is refused without changing the session.
#[test]
fn compact_imports_in_place_resume_exactly_and_stay_checked() {
    let m = host(5000);
    for stepper in ["rk4", "rk45", "bdf"] {
        let mut sim = Sim::with_stepper(&m, Some(stepper)).unwrap();
        sim.run(&RunOptions::new().t(0.25)).unwrap();
        let bytes = sim.serialize_snapshot(None).unwrap();
        let mut resumed = Sim::with_stepper(&m, Some(stepper)).unwrap();
        resumed.deserialize_snapshot(&bytes).unwrap();
        assert!(
            resumed.session_state().bits_eq(sim.session_state()),
            "{stepper}"
        );
        sim.run(&RunOptions::new().t(0.5).resume(true)).unwrap();
        resumed.run(&RunOptions::new().t(0.5).resume(true)).unwrap();
        assert_eq!(bits(sim.state()), bits(resumed.state()), "{stepper}");

        let before = resumed.session_state().clone();
        let refuse = |sim: &mut Sim, bytes: &[u8], want: &str| {
            let err = sim.deserialize_snapshot(bytes).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "{stepper}: {err}");
            assert!(
                err.message().contains(want),
                "{stepper}: want '{want}' in {err}"
            );
        };
        // A flipped byte in the middle of the (stored) state vector: its CRC no longer fits.
        let at = bytes.len() / 2;
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        refuse(&mut resumed, &flipped, "checksum");
        for i in [0, 63, 64, 4321, 4999] {
            let bad = edit_vector(&bytes, "y", |y| y[i] = f64::NAN);
            refuse(&mut resumed, &bad, &format!("state 'y{i}' is NaN"));
        }
        let mut members = read_npz(&bytes, &Limits::default()).unwrap();
        members.push((
            "workspace/stepper/extra".into(),
            NpyArray::f64(vec![2], vec![0.0, 1.0]).unwrap(),
        ));
        refuse(
            &mut resumed,
            &write_npz(&members).unwrap(),
            "is not part of this stepper's workspace",
        );
        assert!(resumed.session_state().bits_eq(&before), "{stepper}");
    }
}

/// The runtime layout an import checks against is the one the session writes (lags included).
#[test]
fn the_runtime_layout_is_the_written_one() {
    for text in [chain_with_aux(50), nested(3)] {
        let m = Model::from_toml(&text).unwrap();
        let info = dynlib::stepper::lookup("rk4").unwrap();
        let written: Vec<_> = dynlib::session::SessionState::bootstrap(&m, info)
            .runtime_ws()
            .into_iter()
            .map(|a| (a.name.clone(), a.dtype(), a.shape.clone()))
            .collect();
        let layout: Vec<_> = dynlib::session::SessionState::runtime_layout(&m)
            .into_iter()
            .map(|(n, d, s)| (n.to_string(), d, s))
            .collect();
        assert_eq!(written, layout);
    }
}

/// A chain of `n` states in the model language (`x_i' = k (x_{i-1} - x_i)`).
fn chain(n: usize) -> String {
    let mut s = String::from("[model]\ntype = \"ode\"\n\n[states]\n");
    for i in 0..n {
        s.push_str(&format!("x{i} = {}\n", if i == 0 { 1.0 } else { 0.0 }));
    }
    s.push_str("\n[params]\nk = 0.5\n\n[equations.rhs]\nx0 = \"-k*x0\"\n");
    for i in 1..n {
        s.push_str(&format!("x{i} = \"k*(x{} - x{i})\"\n", i - 1));
    }
    s
}

#[test]
fn errors_in_a_large_model_point_at_their_line_and_column() {
    // The position index is built only when an error needs it: these positions come from it.
    let n = 5000;
    let text = chain(n);
    // Line of the equation of x_i: 4 header lines, n states, 5 more lines, then x0, x1, ...
    let line_of = |i: usize| 4 + n + 5 + i + 1;
    let bad = text.replace("\"k*(x4320 - x4321)\"", "\"k*(x4320 - y4321)\"");
    let e = Model::from_toml(&bad).unwrap_err();
    let d = &e.diagnostics()[0];
    assert_eq!(d.location, "[equations.rhs].x4321", "{e}");
    assert!(d.message.contains("y4321"), "{e}");
    // `y4321` starts at character 12 of the string, which starts at column 9 (after `"`).
    assert_eq!((d.line, d.column), (line_of(4321), 9 + 12), "{e}");
    // A syntax error inside an expression string, and a key that is not a state.
    let bad = text.replace("\"k*(x4320 - x4321)\"", "\"k*(x4320 - x4321\"");
    let d = Model::from_toml(&bad).unwrap_err().diagnostics()[0].clone();
    assert_eq!(d.line, line_of(4321));
    let bad = text.replace("x17 = \"k*(x16 - x17)\"", "z17 = \"k*(x16 - x17)\"");
    let d = Model::from_toml(&bad).unwrap_err().diagnostics()[0].clone();
    assert_eq!((d.line, d.column), (line_of(17), 1), "{}", d.message);
    // A state whose initial value is a string expression still reads as a number.
    let text = text.replace("x3 = 0\n", "x3 = \"2*pi\"\n");
    let m = Model::from_toml(&text).unwrap();
    let sim = Sim::new(&m).unwrap();
    assert_eq!(sim.state()[3], 2.0 * std::f64::consts::PI);
}

#[test]
fn runs_reusing_the_last_stepper_stay_exact_through_failed_runs() {
    // Resumed runs reuse the previous run's stepper when it carries nothing (rk4); the others
    // make theirs. A failed run in between (max_steps) must not leave anything behind.
    let m = Model::load("builtin://ode/lorenz").unwrap();
    for method in ["rk4", "euler", "rk45", "bdf"] {
        let dt = 1.0 / 128.0;
        let mut whole = Sim::with_stepper(&m, Some(method)).unwrap();
        whole
            .run(&RunOptions::new().t(2.0).dt(dt).record(false))
            .unwrap();
        let mut split = Sim::with_stepper(&m, Some(method)).unwrap();
        split
            .run(&RunOptions::new().t(0.25).dt(dt).tag("s"))
            .unwrap();
        for k in 2..=8 {
            let e = split
                .run(&RunOptions::new().t(2.0).resume(true).max_steps(1))
                .unwrap_err();
            assert!(e.message().contains("max_steps"), "{method}: {e}");
            split
                .run(&RunOptions::new().t(0.25 * k as f64).resume(true).tag("s"))
                .unwrap();
        }
        assert_eq!(bits(split.state()), bits(whole.state()), "{method}");
        // A copy of the session (which starts without a kept stepper) continues the same.
        let mut copy = split.clone();
        split.run(&RunOptions::new().t(2.5).resume(true)).unwrap();
        copy.run(&RunOptions::new().t(2.5).resume(true)).unwrap();
        assert_eq!(bits(split.state()), bits(copy.state()), "{method}");
    }
}

/// A lagged oscillator whose event changes a parameter: its state has lag rings and heads,
/// and parameters that runs change.
const LAGGED_KICKED: &str = r#"inline:
[model]
type = "ode"
[states]
x = 1.0
y = 0.0
[params]
k = 4.0
c = 0.0
[equations.rhs]
x = "y"
y = "-k*x - 0.1*y + 0.3*lag_x(3)"
[events.kick]
cond = "cross_up(x, 0.2)"
action = """
y = y + 0.05
c = c + 1
"""
"#;

/// Every field of the session state, bit for bit (Debug prints the shortest text that reads
/// back to the same bits).
fn whole_state(sim: &Sim) -> String {
    format!("{:?}", sim.session_state())
}

/// Stepper knob overrides of a run.
type Knobs<'a> = &'a [(&'a str, f64)];

#[test]
fn snapshots_and_reused_run_buffers_keep_every_field_bit_for_bit() {
    // Snapshots store the state's vectors packed in one block, and each run advances a copy
    // made in the buffers of the state the previous run replaced: neither may lose or mix up
    // a field (a pending adaptive step, a stepper workspace, lag rings and heads, parameters
    // changed by an event, a knob override).
    let lorenz = Model::load("builtin://ode/lorenz").unwrap();
    let lagged = Model::load(LAGGED_KICKED).unwrap();
    let cases: [(&Model, &str, Knobs); 5] = [
        (&lorenz, "rk45", &[("rtol", 1e-7)]),
        (&lorenz, "bdf", &[]),
        (&lorenz, "rk4", &[]),
        (&lagged, "rk4", &[]),
        (&lagged, "euler", &[]),
    ];
    for (m, method, knobs) in cases {
        let dt = 1.0 / 64.0;
        let mut sim = Sim::with_stepper(m, Some(method)).unwrap();
        // Horizons on the fixed-step grid; adaptive runs end inside a step (kept pending).
        let mut o = RunOptions::new().t(66.0 * dt).dt(dt).tag("a");
        for (k, v) in knobs {
            o = o.config(k, *v);
        }
        sim.run(&o).unwrap();
        let at_snapshot = whole_state(&sim);
        sim.create_snapshot("mid", "").unwrap();
        sim.run(&RunOptions::new().t(148.0 * dt).resume(true).tag("a"))
            .unwrap();
        let at_end = whole_state(&sim);
        // One uninterrupted run ends in the same state (exact resume).
        let mut whole = Sim::with_stepper(m, Some(method)).unwrap();
        let mut o = RunOptions::new().t(148.0 * dt).dt(dt);
        for (k, v) in knobs {
            o = o.config(k, *v);
        }
        whole.run(&o).unwrap();
        assert_eq!(at_end, whole_state(&whole), "{method}: split run");
        // A failed run changes nothing (its copy goes back to the spare buffers).
        let e = sim
            .run(&RunOptions::new().t(9.0).resume(true).max_steps(2))
            .unwrap_err();
        assert!(e.message().contains("max_steps"), "{method}: {e}");
        assert_eq!(whole_state(&sim), at_end, "{method}: failed run");
        sim.reset("mid").unwrap();
        assert_eq!(whole_state(&sim), at_snapshot, "{method}: reset");
        // The replay from the snapshot continues exactly as the first pass did.
        sim.run(&RunOptions::new().t(148.0 * dt).resume(true))
            .unwrap();
        assert_eq!(whole_state(&sim), at_end, "{method}: replay");
        // A fresh run with its own initial state after all that equals a new session's.
        let ic = [0.3, -0.2, 0.1][..m.n_states()].to_vec();
        // (Knob overrides stay with the session's state, so the new session takes them too.)
        let mut o = RunOptions::new().t(0.77).dt(dt).ic(&ic);
        for (k, v) in knobs {
            o = o.config(k, *v);
        }
        sim.run(&o).unwrap();
        let mut new = Sim::with_stepper(m, Some(method)).unwrap();
        new.run(&o).unwrap();
        assert_eq!(whole_state(&sim), whole_state(&new), "{method}: fresh run");
    }
}

#[test]
fn models_past_the_shared_instruction_window_compute_every_equation_exactly() {
    // 40,000 equations of two new instructions each, all using k*k: the program is past the
    // compiler's 2^16-instruction window of shared instructions, so k*k is computed again in
    // later windows. Each state after one Euler step is checked against the same IEEE
    // operations done here.
    let n = 40_000;
    let mut s = String::from("[model]\ntype = \"ode\"\n\n[states]\n");
    let y0: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 / 997.0).collect();
    for (i, y) in y0.iter().enumerate() {
        s.push_str(&format!("x{i} = {y:?}\n"));
    }
    s.push_str("\n[params]\nk = 0.73\n\n[equations.rhs]\nx0 = \"-(k*k)*x0\"\n");
    for i in 1..n {
        s.push_str(&format!("x{i} = \"(k*k)*(x{p} - x{i})\"\n", p = i - 1));
    }
    let (k, h) = (0.73f64, 0.5f64);
    let mut want = vec![y0[0] + h * -(k * k * y0[0])];
    want.extend((1..n).map(|i| y0[i] + h * ((k * k) * (y0[i - 1] - y0[i]))));
    for backend in [Backend::Native, Backend::Interpreter] {
        let m = Model::from_toml_with(&s, backend).unwrap();
        let mut sim = Sim::with_stepper(&m, Some("euler")).unwrap();
        sim.run(&RunOptions::new().t(h).dt(h).record(false))
            .unwrap();
        assert_eq!(bits(sim.state()), bits(&want), "{backend:?}");
    }
}

/// Columns, times and step labels of a recording, bit for bit.
fn recorded_bits(sim: &Sim) -> (Vec<u64>, Vec<Vec<u64>>, Vec<u64>) {
    let rec = sim.results().unwrap();
    let steps = (0..rec.len()).map(|i| rec.step.get(i)).collect();
    (
        bits(&rec.t),
        rec.columns.iter().map(|c| bits(c)).collect(),
        steps,
    )
}

#[test]
fn columns_growing_into_their_own_mappings_keep_every_sample_through_failed_runs() {
    // 60 resumed segments of 1000 steps, recording every step: the columns outgrow the
    // heap (256 KiB) into mappings of their own that grow by moving pages (and a failed
    // run grows them in between), and must hold exactly the unsplit run's samples,
    // contiguous and in order; so must a copy of the session, which copies them.
    let m = Model::load("builtin://ode/lorenz").unwrap();
    let dt = 1.0 / 1024.0;
    let steps = |k: u64| (k * 1000) as f64 * dt;
    let mut whole = Sim::with_stepper(&m, Some("rk4")).unwrap();
    whole
        .run(&RunOptions::new().t(steps(60)).dt(dt).max_steps(u64::MAX))
        .unwrap();
    let whole_rec = whole.results().unwrap();
    assert_eq!(whole_rec.len(), 60_001);
    let linux = cfg!(target_os = "linux");
    // One run reserves what it records (rounded to the mapping's 64 KiB grain), not more.
    for c in whole_rec.columns.iter().chain([&whole_rec.t]) {
        assert!(c.capacity() < 60_001 + 8192, "{}", c.capacity());
        assert_eq!(c.is_mapped(), linux);
    }

    let mut split = Sim::with_stepper(&m, Some("rk4")).unwrap();
    split.run(&RunOptions::new().t(steps(1)).dt(dt)).unwrap();
    assert!(
        !split.results().unwrap().t.is_mapped(),
        "small columns are heap memory"
    );
    for k in 2..=60 {
        if k % 20 == 0 {
            // Fails after 30000 more steps, recorded into grown columns, then rolled back.
            let before = recorded_bits(&split);
            let e = split
                .run(
                    &RunOptions::new()
                        .t(steps(k + 40))
                        .resume(true)
                        .max_steps(30_000),
                )
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::StepFailed, "{e}");
            assert!(
                recorded_bits(&split) == before,
                "a failed run left samples behind"
            );
        }
        split
            .run(&RunOptions::new().t(steps(k)).resume(true).tag("seg"))
            .unwrap();
    }
    let rec = split.results().unwrap();
    assert!(
        rec.columns
            .iter()
            .chain([&rec.t])
            .all(|c| c.is_mapped() == linux),
        "the grown columns are not mapped"
    );
    assert!(recorded_bits(&split) == recorded_bits(&whole));
    assert_eq!(bits(split.state()), bits(whole.state()));
    let copy = split.clone();
    assert!(recorded_bits(&copy) == recorded_bits(&split));
    let (mut a, mut b) = (split, copy);
    for sim in [&mut a, &mut b] {
        sim.run(&RunOptions::new().t(steps(61)).resume(true))
            .unwrap();
    }
    assert!(
        recorded_bits(&a) == recorded_bits(&b),
        "the copy went on differently"
    );
    assert_eq!(a.results().unwrap().len(), 61_001);
}

/// The C ABI's zero-copy views read the columns in place once they have moved into mappings
/// of their own: after each of 40 resumed runs of 1000 recorded steps (past 32,768 samples
/// the columns are mapped), the views hold the bits of the Rust session that ran the same
/// runs, and the length of the recording.
#[test]
fn the_c_views_read_mapped_columns_in_place() {
    use dynlib::ffi::model::{dynlib_model_free, dynlib_model_load};
    use dynlib::ffi::results::{dynlib_sim_results_t_view, dynlib_sim_results_var_view};
    use dynlib::ffi::sim::{
        dynlib_run_options_init, dynlib_sim_free, dynlib_sim_new, dynlib_sim_run, DynlibRunOptions,
    };
    let dt = 1.0 / 1024.0;
    let (mut model, mut sim) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: valid C strings and out-pointers.
    unsafe {
        let source = c"builtin://ode/lorenz";
        assert_eq!(
            dynlib_model_load(source.as_ptr(), c"rk4".as_ptr(), &mut model),
            0
        );
        assert_eq!(dynlib_sim_new(model, &mut sim), 0);
    }
    let m = Model::load("builtin://ode/lorenz").unwrap();
    let mut rust = Sim::with_stepper(&m, Some("rk4")).unwrap();
    for k in 1..=40u64 {
        let horizon = (k * 1000) as f64 * dt;
        let mut opts = std::mem::MaybeUninit::<DynlibRunOptions>::uninit();
        // SAFETY: `opts` is initialised by the call before it is read.
        let mut opts = unsafe {
            assert_eq!(dynlib_run_options_init(opts.as_mut_ptr()), 0);
            opts.assume_init()
        };
        opts.T = horizon;
        opts.resume = k > 1;
        if k == 1 {
            opts.dt = dt;
        }
        // SAFETY: a live handle and initialised options.
        assert_eq!(unsafe { dynlib_sim_run(sim, &opts) }, 0);
        let o = RunOptions::new().t(horizon);
        let o = if k == 1 { o.dt(dt) } else { o.resume(true) };
        rust.run(&o).unwrap();
        let rec = rust.results().unwrap();
        let view = |name: Option<&std::ffi::CStr>| -> Vec<u64> {
            let (mut data, mut n) = (std::ptr::null(), 0usize);
            // SAFETY: a live handle, writable out-pointers; the view is read before the
            // next call that could change the recording.
            unsafe {
                let st = match name {
                    None => dynlib_sim_results_t_view(sim, &mut data, &mut n),
                    Some(v) => dynlib_sim_results_var_view(sim, v.as_ptr(), &mut data, &mut n),
                };
                assert_eq!(st, 0);
                bits(std::slice::from_raw_parts(data, n))
            }
        };
        assert_eq!(view(None), bits(&rec.t), "t after run {k}");
        for (i, name) in [c"x", c"y", c"z"].into_iter().enumerate() {
            assert_eq!(
                view(Some(name)),
                bits(&rec.columns[i]),
                "{name:?} after run {k}"
            );
        }
        assert_eq!(rec.len() as u64, k * 1000 + 1);
    }
    assert_eq!(
        rust.results().unwrap().t.is_mapped(),
        cfg!(target_os = "linux")
    );
    // SAFETY: handles from the calls above, freed once.
    unsafe {
        dynlib_sim_free(sim);
        dynlib_model_free(model);
    }
}

#[test]
fn the_fused_loop_kept_between_runs_follows_the_recorded_selection() {
    // A session keeps its last fused loop for the next run; a run that records other
    // variables (same count, another order), or nothing, must get its own loop. A copy of
    // the session (which starts without the kept loop) runs the same runs as reference.
    let m = Model::load("builtin://ode/lorenz").unwrap();
    let dt = 1.0 / 256.0;
    let plans: [&[&str]; 3] = [&["x", "y"], &["z", "x"], &["y", "x"]];
    let mut sim = Sim::with_stepper(&m, Some("rk4")).unwrap();
    sim.run(&RunOptions::new().t(0.5).dt(dt)).unwrap();
    for (k, vars) in plans.into_iter().enumerate() {
        let mut copy = sim.clone();
        for s in [&mut sim, &mut copy] {
            let t = k as f64;
            s.run(&RunOptions::new().t(t + 1.0).dt(dt).record_vars(vars))
                .unwrap();
            s.run(&RunOptions::new().t(t + 1.5).resume(true).record(false))
                .unwrap();
            s.run(&RunOptions::new().t(t + 2.0).resume(true)).unwrap();
            assert!(s.last_run_stats().fused_steps > 0);
        }
        assert_eq!(
            &*sim.results().unwrap().names,
            &*copy.results().unwrap().names
        );
        assert!(recorded_bits(&sim) == recorded_bits(&copy), "{vars:?}");
    }
}
