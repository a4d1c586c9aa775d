//! Scaling benchmark (issue 13): for chain models of N = 10^3 .. 10^6 states in the model
//! language, the load time (parse, compile, native code; best of 3), the first run (a few rk4 steps) and
//! snapshot export / import against a raw write+fsync / read of the state's bytes (measured
//! side by side, best of 3); 10^4 tagged resumed segments against one unsplit run;
//! create_snapshot against a malloc + memcpy of the state; nested and chained functions.
//!
//! cargo run --release --example scale_bench            # the whole table
//! cargo run --release --example scale_bench -- 100000  # one size (load, run, snapshots)
use std::time::Instant;

use dynlib::{Backend, Model};

fn chain_toml(n: usize) -> String {
    let mut s = String::with_capacity(n * 40);
    s.push_str("[model]\ntype = \"ode\"\nname = \"chain\"\n\n[states]\n");
    for i in 0..n {
        s.push_str(&format!("x{i} = {}\n", if i == 0 { 1.0 } else { 0.0 }));
    }
    s.push_str("\n[params]\nk = 0.5\n\n[equations.rhs]\n");
    s.push_str("x0 = \"-k*x0\"\n");
    for i in 1..n {
        s.push_str(&format!("x{i} = \"k*(x{} - x{i})\"\n", i - 1));
    }
    s
}

fn nested_toml(depth: usize) -> String {
    let mut s = String::from("[model]\ntype = \"ode\"\n\n[states]\nx = 1.0\n\n[functions]\n");
    s.push_str("f0 = { args = [\"z\"], expr = \"0.5*z\" }\n");
    for i in 1..=depth {
        s.push_str(&format!(
            "f{i} = {{ args = [\"z\"], expr = \"f{p}(z) + f{p}(z)\" }}\n",
            p = i - 1
        ));
    }
    s.push_str(&format!("\n[equations.rhs]\nx = \"-f{depth}(x)\"\n"));
    s
}

fn chained_toml(n: usize) -> String {
    let mut s = String::from("[model]\ntype = \"ode\"\n\n[states]\n");
    for i in 0..n {
        s.push_str(&format!("x{i} = 1.0\n"));
    }
    s.push_str("\n[params]\nk = 0.5\n\n[functions]\n");
    for i in 0..n {
        s.push_str(&format!(
            "g{i} = {{ args = [\"a\", \"b\"], expr = \"k*(a - b) + {i}\" }}\n"
        ));
    }
    s.push_str("\n[equations.rhs]\nx0 = \"-k*x0\"\n");
    for i in 1..n {
        s.push_str(&format!("x{i} = \"g{i}(x{}, x{i})\"\n", i - 1));
    }
    s
}

fn main() {
    // Time what a user's program gets: no IR verifier (.cargo/config.toml turns it on for
    // everything cargo runs).
    std::env::remove_var("DYNLIB_JIT_VERIFY");
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 1 {
        table(&[1_000, 10_000, 100_000, 1_000_000]);
        return;
    }
    if args.len() == 2 {
        table(&[args[1].parse().unwrap()]);
        return;
    }
    let n: usize = args.get(1).map(|a| a.parse().unwrap()).unwrap_or(1000);
    let backend = match args.get(2).map(String::as_str) {
        Some("interp") => Backend::Interpreter,
        _ => Backend::Auto,
    };
    if args.get(3).map(String::as_str) == Some("seg") {
        let every = args.get(4).map_or(1, |a| a.parse().unwrap());
        match args.get(5).map(String::as_str) {
            Some("raised") => raise_mmap_threshold(),
            // `seg k row N`: first the table's whole row for N states (load, run, export,
            // import; `norun`, `nofile` leave parts out).
            Some("row") => {
                let big: usize = args[6].parse().unwrap();
                let m = Model::load(&format!("inline:{}", chain_toml(big))).unwrap();
                let mut sim = dynlib::Sim::with_stepper(&m, Some("rk4")).unwrap();
                if args.get(7).map(String::as_str) != Some("norun") {
                    sim.run(&dynlib::RunOptions::new().t(0.05).dt(0.01).record(false))
                        .unwrap();
                }
                if args.get(7).map(String::as_str) != Some("nofile") {
                    snapshot_row(&mut sim);
                }
            }
            // `seg k N`: first load and drop an N-state chain model, as the table does.
            Some(big) => {
                drop(Model::load(&format!("inline:{}", chain_toml(big.parse().unwrap()))).unwrap())
            }
            None => {}
        }
        for tag in [None, Some("seg")] {
            let r = segment_times(10_000, n as u64, tag, every);
            println!(
                "segments {tag:?} {:.3} s, unsplit {:.3} s, ratio {:.3}; cpu {:.3} s vs {:.3} s, ratio {:.3}",
                r.split,
                r.whole,
                r.ratio(),
                r.split_cpu,
                r.whole_cpu,
                r.cpu_ratio()
            );
        }
        let (c, m) = create_snapshot_times(10_000);
        println!(
            "create_snapshot {:.3} us, malloc+memcpy {:.3} us, ratio {:.1}",
            c * 1e6,
            m * 1e6,
            c / m
        );
        return;
    }
    if args.get(3).map(String::as_str) == Some("loads") {
        // Every load of the table's sequence (10^3 .. n), in one process, one after another.
        let mut size = 1000;
        while size <= n {
            let text = format!("inline:{}", chain_toml(size));
            for _ in 0..if size >= 1_000_000 { 2 } else { 3 } {
                let (cpu0, faults0) = cpu_and_faults();
                let t = Instant::now();
                let m = Model::load(&text).unwrap();
                let s = t.elapsed().as_secs_f64();
                let (cpu1, faults1) = cpu_and_faults();
                drop(m);
                println!(
                    "n={size} load {s:.3} s, cpu {:.2} s, {} minor faults",
                    cpu1 - cpu0,
                    faults1 - faults0
                );
            }
            size *= 10;
        }
        return;
    }
    if args.get(3).map(String::as_str) == Some("loadonce") {
        // One load in this (fresh) process: seconds and minor faults, for `fresh_load`.
        let text = format!("inline:{}", chain_toml(n));
        let faults = cpu_and_faults().1;
        let t = Instant::now();
        let m = Model::load(&text).unwrap();
        println!(
            "{} {}",
            t.elapsed().as_secs_f64(),
            cpu_and_faults().1 - faults
        );
        drop(m);
        return;
    }
    if args.get(3).map(String::as_str) == Some("snap") {
        snap_times(n);
        return;
    }
    if args.get(3).map(String::as_str) == Some("snapprof") {
        // For callgrind: `n` snapshots of a 3-state session.
        let m = Model::load("builtin://ode/lorenz").unwrap();
        let mut sim = dynlib::Sim::new(&m).unwrap();
        sim.run(&dynlib::RunOptions::new().t(0.1)).unwrap();
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        for name in &names {
            sim.create_snapshot(name, "").unwrap();
        }
        return;
    }
    if args.get(3).map(String::as_str) == Some("segprof") {
        // For callgrind / perf stat: one pass of 2000 tagged resumed segments of `n` steps
        // (recording every `k`-th step, `segprof k`; `segprof k seg 10000` for 10^4
        // segments, `segprof k plain 10000` untagged); `segprof k whole` the same steps in one
        // run.
        let every: u64 = args.get(4).map_or(1, |a| a.parse().unwrap());
        let segments: u64 = args.get(6).map_or(2000, |a| a.parse().unwrap());
        // `segprof k seg S N`: first load and drop an N-state chain model (the table's
        // condition: the heap after a large model's load).
        if let Some(big) = args.get(7).map(|a| a.parse::<usize>().unwrap()) {
            drop(Model::load(&format!("inline:{}", chain_toml(big))).unwrap());
        }
        let m = Model::load("builtin://ode/lorenz").unwrap();
        let mut sim = dynlib::Sim::with_stepper(&m, Some("rk4")).unwrap();
        let dt = 1.0 / 1024.0;
        if args.get(5).map(String::as_str) == Some("whole") {
            let opts = dynlib::RunOptions::new()
                .t((segments * n as u64) as f64 * dt)
                .dt(dt)
                .record_interval(every)
                .max_steps(u64::MAX);
            sim.run(&opts).unwrap();
            return;
        }
        let tagged = args.get(5).map(String::as_str) != Some("plain");
        for i in 0..segments {
            let opts = dynlib::RunOptions::new()
                .t(((i + 1) * n as u64) as f64 * dt)
                .record_interval(every);
            let opts = if tagged { opts.tag("seg") } else { opts };
            let opts = if i == 0 {
                opts.dt(dt)
            } else {
                opts.resume(true)
            };
            sim.run(&opts).unwrap();
        }
        return;
    }
    if args.get(3).map(String::as_str) == Some("firstrun") {
        first_run_parts(n, args.get(2).map(String::as_str) == Some("host"));
        return;
    }
    if args.get(3).map(String::as_str) == Some("import") {
        // `import C`: C imports (20 by default), `import C lang`: of the model-language
        // chain (as in the table) instead of the host chain.
        let count = args.get(4).map_or(20, |a| a.parse().unwrap());
        import_loop(n, count, args.get(5).map(String::as_str) == Some("lang"));
        return;
    }
    let text = match args.get(3).map(String::as_str) {
        Some("nested") => nested_toml(n),
        Some("chained") => chained_toml(n),
        _ => chain_toml(n),
    };
    if args.get(3).map(String::as_str) == Some("toml") {
        for _ in 0..3 {
            let t = Instant::now();
            let d = dynlib::model::spec::parse_toml(&text).unwrap();
            let a = t.elapsed().as_secs_f64();
            drop(d);
            let t = Instant::now();
            let ix = dynlib::model::pos::DocIndex::new(&text);
            let b = t.elapsed().as_secs_f64();
            drop(ix);
            println!("toml {a:.3} index {b:.3}");
        }
        return;
    }
    if args.get(3).map(String::as_str) == Some("phases") {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn({
                let t = text.clone();
                move || phases(&t)
            })
            .unwrap()
            .join()
            .unwrap();
    }
    let t = Instant::now();
    let m = Model::from_toml_with(&text, backend).unwrap();
    println!(
        "n={n} load {:.3} s backend {:?}",
        t.elapsed().as_secs_f64(),
        m.backend()
    );
}

/// CPU seconds (user + system) and minor page faults of this process so far.
fn cpu_and_faults() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // minflt is field 10, utime 14, stime 15 (1-based, counting pid and comm).
    (((num(11) + num(12)) as f64) / 100.0, num(7))
}

/// One model-language load split into its phases: wall seconds, CPU seconds and minor page
/// faults of each (the CPU time is what other processes on a busy machine do not inflate).
#[allow(dead_code)]
pub fn phases(text: &str) {
    use dynlib::model::{compile, spec};
    let mut rows: Vec<(&str, f64, f64, u64)> = Vec::new();
    let mut last = (Instant::now(), cpu_and_faults());
    let mut mark = |name: &'static str| {
        let now = (Instant::now(), cpu_and_faults());
        rows.push((
            name,
            (now.0 - last.0).as_secs_f64(),
            now.1 .0 - last.1 .0,
            now.1 .1 - last.1 .1,
        ));
        last = now;
    };
    // The text parsed once (in pieces when it is large: model/toml_pieces.rs) and the spec
    // built from it, as `Model::load` does.
    let parsed = spec::parse_lenient(text, None).unwrap();
    mark("toml + spec");
    let s = compile::checked(parsed).unwrap();
    mark("spec check");
    let comp = compile::compile(&s).unwrap();
    mark("compile");
    let ops = comp.rhs.ops.len();
    drop(comp);
    mark("drop compiled");
    let j = serde_json::to_vec(&s).unwrap();
    mark("spec json");
    let bytes = j.len();
    drop(j);
    let m = Model::from_spec_with(s, Backend::Interpreter).unwrap();
    mark("model (interp)");
    let native = dynlib::model::jit::compile(&m).unwrap();
    mark("native code");
    drop(native);
    mark("drop native");
    drop(m);
    mark("drop model");
    println!("{ops} ops, {bytes} spec json bytes");
    println!(
        "{:<16} {:>8} {:>8} {:>10}",
        "phase", "wall s", "cpu s", "minflt"
    );
    for (name, w, c, f) in rows {
        println!("{name:<16} {w:>8.3} {c:>8.2} {f:>10}");
    }
}

/// dx_0 = -k x_0, dx_i = k (x_{i-1} - x_i) as a host model: loads at once at any size, so
/// snapshot figures are not waiting for a model-language load.
struct HostChain;
impl dynlib::model::host::HostModel for HostChain {
    fn rhs(&self, _t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        out[0] = -p[0] * y[0];
        for i in 1..y.len() {
            out[i] = p[0] * (y[i - 1] - y[i]);
        }
        Ok(())
    }
}

pub fn host_chain(n: usize) -> Model {
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let t = Instant::now();
    let def = dynlib::model::host::HostModelDef {
        id: format!("scale/chain{n}"),
        version: "1".into(),
        kind: dynlib::model::ModelKind::Ode,
        state_names: names,
        state_init: (0..n).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect(),
        param_names: vec!["k".into()],
        param_init: vec![0.5],
        aux_names: Vec::new(),
        event_names: Vec::new(),
        dt: 0.01,
        stepper: "rk4".into(),
    };
    let m = Model::from_host(def, Box::new(HostChain)).unwrap();
    println!(
        "host model of {n} states built in {:.3} s",
        t.elapsed().as_secs_f64()
    );
    m
}

pub fn snap_times(n: usize) {
    use std::io::Write;
    let dir = tempdir();
    let m = host_chain(n);
    let mut sim = dynlib::Sim::new(&m).unwrap();
    sim.run(&dynlib::RunOptions::new().t(0.03).record(false))
        .unwrap();
    let path = dir.join("s.npz");
    let raw = dir.join("raw.bin");
    let bytes: Vec<u8> = sim.state().iter().flat_map(|v| v.to_le_bytes()).collect();
    for _ in 0..3 {
        let t = Instant::now();
        let mut f = std::fs::File::create(&raw).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        let w = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = std::fs::read(&raw).unwrap();
        let r = t.elapsed().as_secs_f64();
        assert_eq!(back.len(), bytes.len());
        let t = Instant::now();
        let ser = sim.serialize_snapshot(None).unwrap();
        let s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        sim.export_snapshot(&path, None).unwrap();
        let e = t.elapsed().as_secs_f64();
        let t = Instant::now();
        sim.import_snapshot(&path).unwrap();
        let i = t.elapsed().as_secs_f64();
        println!(
            "raw write+fsync {w:.4} read {r:.4} | serialize {s:.4} export {e:.4} ({:.1}x) import {i:.4} ({:.1}x) file {} bytes",
            e / w,
            i / r,
            ser.len()
        );
    }
}

/// The parts of a first run of the chain model (model language, or a host model): session
/// creation, then the same 5 rk4 steps three times.
pub fn first_run_parts(n: usize, host: bool) {
    let t = Instant::now();
    let m = if host {
        host_chain(n)
    } else {
        Model::load(&format!("inline:{}", chain_toml(n))).unwrap()
    };
    println!(
        "load {:.3} s ({:?})",
        t.elapsed().as_secs_f64(),
        m.backend()
    );
    let t = Instant::now();
    let mut sim = dynlib::Sim::with_stepper(&m, Some("rk4")).unwrap();
    println!("Sim::with_stepper {:.4} s", t.elapsed().as_secs_f64());
    for k in 1..=3 {
        let t = Instant::now();
        let opts = dynlib::RunOptions::new().t(0.05 * k as f64).record(false);
        let opts = if k == 1 {
            opts.dt(0.01)
        } else {
            opts.resume(true)
        };
        sim.run(&opts).unwrap();
        println!("run {k}: {:.4} s", t.elapsed().as_secs_f64());
    }
}

/// `count` imports of one exported snapshot of the host chain, for profiling the import.
pub fn import_loop(n: usize, count: usize, lang: bool) {
    let dir = tempdir();
    let m = if lang {
        Model::load(&format!("inline:{}", chain_toml(n))).unwrap()
    } else {
        host_chain(n)
    };
    let mut sim = dynlib::Sim::new(&m).unwrap();
    sim.run(&dynlib::RunOptions::new().t(0.03).record(false))
        .unwrap();
    let path = dir.join("s.npz");
    sim.export_snapshot(&path, None).unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();
    let (mut import, mut read) = (f64::MAX, f64::MAX);
    for _ in 0..count {
        let t = Instant::now();
        sim.import_snapshot(&path).unwrap();
        import = import.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        assert_eq!(std::fs::read(&path).unwrap().len() as u64, bytes);
        read = read.min(t.elapsed().as_secs_f64());
    }
    println!(
        "import of {n} states: best {import:.4} s; raw read of the file's {bytes} bytes \
         {read:.4} s; {:.1}x",
        import / read
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dynlib-scale-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Frees a mapped block just under 32 MiB, as the table's 10^6-state loads do: glibc then
/// raises its mmap threshold to that size (and its trim threshold to twice it), so blocks
/// up to 32 MiB come from the heap from then on. (`seg` measured after this is the table's
/// segments row; the variable `MALLOC_MMAP_THRESHOLD_` also fixes the threshold but keeps
/// trimming the heap at 128 KiB, a harsher condition than the table's.)
fn raise_mmap_threshold() {
    let block: Vec<u8> = Vec::with_capacity((32 << 20) - 4096);
    drop(std::hint::black_box(block));
}

/// CPU seconds of the calling thread (user + system, page faults included): unlike wall
/// time, not inflated while other processes hold the core.
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> f64 {
    0.0
}

/// Best-of times of a split and an unsplit run (wall and thread CPU seconds).
#[derive(Clone, Copy)]
pub struct SegmentTimes {
    pub split: f64,
    pub whole: f64,
    pub split_cpu: f64,
    pub whole_cpu: f64,
}

impl SegmentTimes {
    fn ratio(&self) -> f64 {
        self.split / self.whole
    }
    fn cpu_ratio(&self) -> f64 {
        self.split_cpu / self.whole_cpu
    }
}

/// Repetitions of each side in [`segment_times`] (interleaved, best of).
const SEGMENT_REPEATS: usize = 9;

/// 10^4 tagged resumed segments against one unsplit run of the same steps, recording every
/// `every`-th step (best of `SEGMENT_REPEATS` each, interleaved); wall and thread CPU
/// seconds. Recording every step, both sides spend about half their time faulting in the
/// recording's memory.
pub fn segment_times(
    segments: u64,
    steps_each: u64,
    tag: Option<&str>,
    every: u64,
) -> SegmentTimes {
    let m = Model::load("builtin://ode/lorenz").unwrap();
    let mut best = SegmentTimes {
        split: f64::MAX,
        whole: f64::MAX,
        split_cpu: f64::MAX,
        whole_cpu: f64::MAX,
    };
    for _ in 0..SEGMENT_REPEATS {
        let mut sim = dynlib::Sim::with_stepper(&m, Some("rk4")).unwrap();
        let (t, c) = (Instant::now(), thread_cpu_seconds());
        let dt = 1.0 / 1024.0;
        let horizon = |k: u64| (k * steps_each) as f64 * dt;
        sim.run(
            &dynlib::RunOptions::new()
                .t(horizon(segments))
                .dt(dt)
                .record_interval(every)
                .max_steps(u64::MAX),
        )
        .unwrap();
        best.whole = best.whole.min(t.elapsed().as_secs_f64());
        best.whole_cpu = best.whole_cpu.min(thread_cpu_seconds() - c);
        let unsplit = sim.state().to_vec();
        drop(sim);
        let mut sim = dynlib::Sim::with_stepper(&m, Some("rk4")).unwrap();
        let (t, c) = (Instant::now(), thread_cpu_seconds());
        for i in 0..segments {
            let mut opts = dynlib::RunOptions::new()
                .t(horizon(i + 1))
                .record_interval(every);
            if let Some(tag) = tag {
                opts = opts.tag(tag);
            }
            let opts = if i == 0 {
                opts.dt(dt)
            } else {
                opts.resume(true)
            };
            sim.run(&opts).unwrap();
        }
        best.split = best.split.min(t.elapsed().as_secs_f64());
        best.split_cpu = best.split_cpu.min(thread_cpu_seconds() - c);
        assert_eq!(sim.segments().len() as u64, segments);
        assert!(unsplit
            .iter()
            .zip(sim.state())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    best
}

/// Mean time of create_snapshot on a 3-state model and of a malloc + memcpy of its state
/// (a `Vec` clone), best of 5 batches of `count`.
pub fn create_snapshot_times(count: usize) -> (f64, f64) {
    let m = Model::load("builtin://ode/lorenz").unwrap();
    let names: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
    let (mut snap, mut copy) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let mut sim = dynlib::Sim::new(&m).unwrap();
        sim.run(&dynlib::RunOptions::new().t(0.1)).unwrap();
        let t = Instant::now();
        for n in &names {
            sim.create_snapshot(n, "").unwrap();
        }
        snap = snap.min(t.elapsed().as_secs_f64() / count as f64);
        let y = sim.state().to_vec();
        let mut keep = Vec::with_capacity(count);
        let t = Instant::now();
        for _ in 0..count {
            keep.push(std::hint::black_box(&y).clone());
        }
        copy = copy.min(t.elapsed().as_secs_f64() / count as f64);
        drop(keep);
    }
    (snap, copy)
}

/// One load of the `n`-state chain model as the only load of a fresh process (seconds, and
/// the minor page faults of that load): every size starts from the same empty heap, where
/// loads inside one process find the pages earlier rows faulted in and freed — at 10^5
/// states most of them, at 10^6 almost none (glibc unmaps blocks past 32 MiB).
fn fresh_load(n: usize) -> (f64, u64) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args([&n.to_string(), "x", "loadonce"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().unwrap().parse().unwrap();
    (secs, it.next().unwrap().parse().unwrap())
}

/// Best of 5 fresh-process loads of each size (of 3 at 10^6), interleaved — each round
/// loads every size once, smallest first — so a slow minute on this VM falls on all sizes
/// alike instead of on one size's row and its growth ratio.
fn fresh_loads_interleaved(sizes: &[usize]) -> Vec<(f64, u64)> {
    let mut best = vec![(f64::MAX, 0u64); sizes.len()];
    for round in 0..5 {
        for (b, &n) in best.iter_mut().zip(sizes) {
            if n >= 1_000_000 && round >= 3 {
                continue;
            }
            let r = fresh_load(n);
            if r.0 < b.0 {
                *b = r;
            }
        }
    }
    best
}

/// Best of `k` timings of `f` (seconds).
fn best(k: usize, mut f: impl FnMut()) -> f64 {
    (0..k)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// Export, import, raw write+fsync and raw read of the state bytes, interleaved, best of 3.
fn snapshot_row(sim: &mut dynlib::Sim) -> (f64, f64, f64, f64, usize) {
    use std::io::Write;
    let dir = tempdir();
    let (path, raw) = (dir.join("s.npz"), dir.join("raw.bin"));
    let bytes: Vec<u8> = sim.state().iter().flat_map(|v| v.to_le_bytes()).collect();
    let (mut e, mut i, mut w, mut r) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        w = w.min(best(1, || {
            let mut f = std::fs::File::create(&raw).unwrap();
            f.write_all(&bytes).unwrap();
            f.sync_all().unwrap();
        }));
        e = e.min(best(1, || sim.export_snapshot(&path, None).unwrap()));
        r = r.min(best(1, || {
            assert_eq!(std::fs::read(&raw).unwrap().len(), bytes.len())
        }));
        i = i.min(best(1, || sim.import_snapshot(&path).unwrap()));
    }
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    let _ = std::fs::remove_dir_all(&dir);
    (e, i, w, r, size)
}

/// Best of 5 loads of each size in this process (of 3 at 10^6 states), interleaved — each
/// round loads every size once, smallest first — so a slow minute on this VM (a load's time
/// swings by 10-30% from minute to minute) falls on all sizes alike. Each model is dropped
/// before the next load, so every load compiles afresh.
fn loads_interleaved(sizes: &[usize], texts: &[String]) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; sizes.len()];
    for round in 0..5 {
        for ((b, &n), text) in best.iter_mut().zip(sizes).zip(texts) {
            if n >= 1_000_000 && round >= 3 {
                continue;
            }
            let t = Instant::now();
            let m = Model::load(text).unwrap();
            *b = b.min(t.elapsed().as_secs_f64());
            drop(m);
        }
    }
    best
}

fn table(sizes: &[usize]) {
    println!(
        "{:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>7} {:>9} {:>8} {:>7} {:>11}",
        "N",
        "load s",
        "per 10x",
        "1st run s",
        "export s",
        "write s",
        "ratio",
        "import s",
        "read s",
        "ratio",
        "file bytes"
    );
    let texts: Vec<String> = sizes
        .iter()
        .map(|&n| format!("inline:{}", chain_toml(n)))
        .collect();
    let loads = loads_interleaved(sizes, &texts);
    let mut prev: Option<f64> = None;
    for ((&n, text), load) in sizes.iter().zip(&texts).zip(loads) {
        // The model the row's other columns use (its load is not timed again).
        let m = Model::load(text).unwrap();
        let growth = prev.map_or("-".to_string(), |p| format!("{:.1}x", load / p));
        prev = Some(load);
        let mut sim = dynlib::Sim::with_stepper(&m, Some("rk4")).unwrap();
        let t = Instant::now();
        sim.run(&dynlib::RunOptions::new().t(0.05).dt(0.01).record(false))
            .unwrap();
        let first = t.elapsed().as_secs_f64();
        let (e, i, w, r, size) = snapshot_row(&mut sim);
        println!(
            "{n:>9} {load:>8.3} {growth:>9} {first:>9.3} {e:>8.4} {w:>9.4} {:>6.1}x {i:>9.4} {r:>8.4} {:>6.1}x {size:>11} ({:?})",
            e / w,
            i / r,
            m.backend()
        );
    }
    println!("Loads each in a fresh process (best of 5, of 3 at 10^6; sizes interleaved):");
    println!(
        "{:>9} {:>8} {:>9} {:>12}",
        "N", "load s", "per 10x", "minor faults"
    );
    let mut prev_fresh = None::<f64>;
    for (&n, (fresh, faults)) in sizes.iter().zip(fresh_loads_interleaved(sizes)) {
        let growth = prev_fresh.map_or("-".to_string(), |p| format!("{:.1}x", fresh / p));
        prev_fresh = Some(fresh);
        println!("{n:>9} {fresh:>8.3} {growth:>9} {faults:>12}");
    }
    for every in [1, 1000] {
        let t = segment_times(10_000, 1000, Some("seg"), every);
        let u = segment_times(10_000, 1000, None, every);
        println!(
            "10^4 resumed segments of 1000 rk4 steps, recording every {every}: tagged {:.3} s vs unsplit {:.3} s = {:.3}x (cpu {:.3}x); untagged {:.3} s vs {:.3} s = {:.3}x (cpu {:.3}x)",
            t.split,
            t.whole,
            t.ratio(),
            t.cpu_ratio(),
            u.split,
            u.whole,
            u.ratio(),
            u.cpu_ratio()
        );
    }
    let (c, mc) = create_snapshot_times(10_000);
    println!(
        "create_snapshot (3 states): {:.3} us; malloc+memcpy of the state {:.3} us; {:.1}x",
        c * 1e6,
        mc * 1e6,
        c / mc
    );
    for depth in [20, 25] {
        let text = nested_toml(depth);
        let t = best(3, || drop(Model::from_toml(&text).unwrap()));
        println!(
            "functions nested {depth} deep (f_i(z) = f_i-1(z) + f_i-1(z)): load {:.1} ms",
            t * 1e3
        );
    }
    for n in [2000, 4000] {
        let text = chained_toml(n);
        let t = best(3, || drop(Model::from_toml(&text).unwrap()));
        println!("{n} states each calling its own function: load {:.3} s", t);
    }
    drop(host_chain(1_000_000));
}
