//! Soak: many snapshot cycles and many distinct model loads in one process, asserting that
//! memory (VmRSS from /proc/self/status) stays bounded, and that crafted small archives
//! cannot make import or inspect allocate much (VmHWM). The numbers are printed.
//!
//! The parts run one after another in one test, so that no other test of this binary
//! allocates while they measure.

use std::time::Instant;

use dynlib::{Backend, Model, RunOptions, Sim};

/// A field of /proc/self/status in KiB (Linux); None elsewhere.
fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:").unwrap_or(0)
}

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

/// A 1 MB zip whose members inflate to about 1 GB: meta.json first, then state members.
fn amplifying_zip() -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .large_file(false);
    let chunk = vec![b' '; 1 << 20];
    for name in ["meta.json.npy", "y.npy", "params.npy", "stepper_config.npy"] {
        zip.start_file(name, opts).unwrap();
        for _ in 0..250 {
            zip.write_all(&chunk).unwrap();
        }
    }
    zip.finish().unwrap().into_inner()
}

fn crafted_archives_stay_small() {
    let zip = amplifying_zip();
    let model = Model::load(ODE).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    sim.run(&RunOptions::new().t(0.5)).unwrap();
    let hwm0 = status_kib("VmHWM:");
    let err = sim.deserialize_snapshot(&zip).unwrap_err();
    let hwm1 = status_kib("VmHWM:");
    let err2 = dynlib::session::inspect_snapshot_bytes(&zip).unwrap_err();
    let hwm2 = status_kib("VmHWM:");
    println!(
        "crafted zip of {} bytes (members inflating to {} MiB): import refused ({}), peak RSS \
         +{} KiB; inspect refused ({}), peak RSS +{} KiB",
        zip.len(),
        4 * 250,
        err.message(),
        hwm1.zip(hwm0).map_or(0, |(a, b)| a - b),
        err2.message(),
        hwm2.zip(hwm1).map_or(0, |(a, b)| a - b),
    );
    assert!(zip.len() < 1_200_000, "{}", zip.len());
    assert!(err.message().contains("meta.json"), "{err}");
    if let (Some(h0), Some(h1), Some(h2)) = (hwm0, hwm1, hwm2) {
        // Import bounds meta.json by the model (about 6 MiB here); inspect by 64 MiB.
        assert!(
            h1 - h0 < 24 << 10,
            "import raised the peak by {} KiB",
            h1 - h0
        );
        assert!(
            h2 - h1 < 96 << 10,
            "inspect raised the peak by {} KiB",
            h2 - h1
        );
    }
}

fn snapshot_cycles(memory: usize, files: usize) {
    let model = Model::load(ODE).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    sim.run(&RunOptions::new().t(0.5)).unwrap();
    let mut other = Sim::with_stepper(&model, Some("rk45")).unwrap();
    // In memory when the machine has a tmpfs: this measures our memory, not the disk's fsync.
    let dir = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm).unwrap(),
        _ => tempfile::tempdir().unwrap(),
    };
    let path = dir.path().join("cycle.npz");
    // Warm up allocator pools and lazily initialised state before measuring.
    for _ in 0..200 {
        let bytes = sim.serialize_snapshot(None).unwrap();
        other.deserialize_snapshot(&bytes).unwrap();
    }
    let before = rss_kib();
    let start = Instant::now();
    for i in 0..memory {
        sim.create_snapshot("s", "soak").unwrap_or(());
        let bytes = sim
            .serialize_snapshot(if i % 2 == 0 { None } else { Some("s") })
            .unwrap();
        other.deserialize_snapshot(&bytes).unwrap();
    }
    let mid = rss_kib();
    let t_memory = start.elapsed();
    let start = Instant::now();
    for _ in 0..files {
        sim.export_snapshot(&path, None).unwrap();
        other.import_snapshot(&path).unwrap();
    }
    let t_files = start.elapsed();
    let after = rss_kib();
    assert!(other.session_state().bits_eq(sim.session_state()));
    println!(
        "snapshot soak: {memory} create/serialize/deserialize cycles in {:.2} s, {files} \
         export/import file cycles in {:.2} s; VmRSS {before} KiB -> {mid} KiB -> {after} KiB",
        t_memory.as_secs_f64(),
        t_files.as_secs_f64()
    );
    assert!(
        mid.saturating_sub(before) < 16 << 10,
        "{before} -> {mid} KiB"
    );
    assert!(
        after.saturating_sub(before) < 16 << 10,
        "{before} -> {after} KiB"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "temporary files left behind");
}

fn model_text(i: usize) -> String {
    format!(
        "[model]\ntype = \"ode\"\nname = \"soak {i}\"\n[constants]\nk = {i}\n[states]\nx = 1.0\n\
         y = 0.0\n[params]\na = 0.5\n[aux]\nz = \"x*k\"\n[equations.rhs]\nx = \"y\"\n\
         y = \"-a*x - 1e-6*k*y\"\n"
    )
}

fn distinct_model_loads(interpreted: usize, native: usize) {
    // Warm up.
    for i in 0..100 {
        let m = Model::from_toml_with(&model_text(i), Backend::Native).unwrap();
        let mut sim = Sim::new(&m).unwrap();
        sim.run(&RunOptions::new().t(0.01)).unwrap();
    }
    let before = rss_kib();
    let start = Instant::now();
    let mut peak_entries = 0;
    for i in 0..native {
        let m = Model::from_toml_with(&model_text(1_000_000 + i), Backend::Native).unwrap();
        assert_eq!(m.backend(), Backend::Native);
        let mut sim = Sim::new(&m).unwrap();
        sim.run(&RunOptions::new().t(0.01)).unwrap();
        peak_entries = peak_entries.max(dynlib::model::jit::cache_stats().0);
    }
    let t_native = start.elapsed();
    let mid = rss_kib();
    let start = Instant::now();
    for i in 0..interpreted {
        let m = Model::from_toml_with(&model_text(2_000_000 + i), Backend::Interpreter).unwrap();
        if i % 100 == 0 {
            let mut sim = Sim::new(&m).unwrap();
            sim.run(&RunOptions::new().t(0.01)).unwrap();
        }
    }
    let t_interp = start.elapsed();
    let after = rss_kib();
    let (entries, live) = dynlib::model::jit::cache_stats();
    println!(
        "model soak: {native} distinct native models in {:.2} s (code cache peaked at \
         {peak_entries} entries, now {entries}, {live} live), {interpreted} distinct \
         interpreted models in {:.2} s; VmRSS {before} KiB -> {mid} KiB -> {after} KiB",
        t_native.as_secs_f64(),
        t_interp.as_secs_f64()
    );
    assert!(
        peak_entries <= 130,
        "the code cache grew to {peak_entries} entries"
    );
    assert_eq!(live, 0);
    assert!(
        mid.saturating_sub(before) < 24 << 10,
        "{before} -> {mid} KiB"
    );
    assert!(
        after.saturating_sub(before) < 24 << 10,
        "{before} -> {after} KiB"
    );
}

/// 10^5 in-memory snapshot cycles and 2·10^4 export/import file cycles (on tmpfs; 2000 when
/// the machine has none, as fsync makes each cycle take milliseconds on disk; 10^5 file cycles
/// take 25 s even on tmpfs here); 10^5 distinct model loads, of which 5000 compile native code
/// and the rest use the interpreter (native compilation of all 10^5 would take about 50 s). `DYNLIB_SOAK_SCALE` scales every
/// count.
#[test]
fn soak_memory_stays_bounded() {
    let scale = |n: usize| {
        std::env::var("DYNLIB_SOAK_SCALE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(n, |s| ((n as f64) * s) as usize)
    };
    let files = if std::path::Path::new("/dev/shm").is_dir() {
        20_000
    } else {
        2_000
    };
    crafted_archives_stay_small();
    snapshot_cycles(scale(100_000), scale(files));
    distinct_model_loads(scale(95_000), scale(5_000));
}
