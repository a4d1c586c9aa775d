//! Grammar-aware fuzzing of the model loader: a seeded generator writes random models (valid
//! structure with random expressions, misspelt tables and keys, mods, deep and long
//! expressions, and byte-level mutations of valid models), and every one is loaded on a
//! 256 KiB thread. Loading may fail, but only with a model or I/O error that has a message;
//! it must never panic, crash or hang; a model that loads must run a few steps.
//!
//! `DYNLIB_FUZZ_CASES` sets the number of cases (default 1500); the count is printed. Any
//! crash found becomes a case in `regressions()`.

use dynlib::{Backend, ErrorKind, Model, RunOptions, Sim};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const FUNCS1: [&str; 12] = [
    "sin",
    "cos",
    "exp",
    "log",
    "sqrt",
    "abs",
    "tanh",
    "floor",
    "round",
    "sign",
    "erf",
    "math.atan",
];
const FUNCS2: [&str; 6] = ["atan2", "hypot", "min", "max", "pow", "copysign"];
const BINOPS: [&str; 13] = [
    "+", "-", "*", "/", "//", "%", "^", "**", " and ", " or ", " < ", " >= ", " == ",
];
const NOISE: [&str; 16] = [
    "(", ")", ",", "=", "$", "'", "[", "&", ";", "é", "1e999", ".", "lambda", "if", " ", "\\",
];

struct Gen<'a> {
    rng: &'a mut Rng,
    names: Vec<String>,
    n_states: usize,
}

impl Gen<'_> {
    fn atom(&mut self) -> String {
        match self.rng.below(8) {
            0 => format!("{}", self.rng.below(100)),
            1 => format!("{}.{}", self.rng.below(10), self.rng.below(1000)),
            2 => self
                .rng
                .pick(&["t", "pi", "e", "True", "False", "-0.0", "1e308"])
                .to_string(),
            3 => format!("lag_{}({})", self.state(), 1 + self.rng.below(3)),
            _ if !self.names.is_empty() => {
                let i = self.rng.below(self.names.len());
                let mut n = self.names[i].clone();
                if self.rng.chance(5) {
                    n.push('x'); // a typo
                }
                n
            }
            _ => "x".into(),
        }
    }

    fn state(&mut self) -> String {
        format!("s{}", self.rng.below(self.n_states))
    }

    fn expr(&mut self, depth: usize) -> String {
        if depth == 0 || self.rng.chance(25) {
            return self.atom();
        }
        let s = match self.rng.below(10) {
            0 => format!("({})", self.expr(depth - 1)),
            1 => format!("-{}", self.expr(depth - 1)),
            2 => format!("(not {})", self.expr(depth - 1)),
            3 => format!("{}({})", self.rng.pick(&FUNCS1), self.expr(depth - 1)),
            4 => format!(
                "{}({}, {})",
                self.rng.pick(&FUNCS2),
                self.expr(depth - 1),
                self.expr(depth - 1)
            ),
            5 => format!(
                "{} if {} else {}",
                self.expr(depth - 1),
                self.expr(depth - 1),
                self.expr(depth - 1)
            ),
            6 => match self.rng.below(3) {
                0 => format!("cross_up({}, {})", self.state(), self.expr(depth - 1)),
                1 => format!("clip({}, -1, 1)", self.expr(depth - 1)),
                _ => format!("relu({})", self.expr(depth - 1)),
            },
            _ => format!(
                "{}{}{}",
                self.expr(depth - 1),
                self.rng.pick(&BINOPS),
                self.expr(depth - 1)
            ),
        };
        if self.rng.chance(3) {
            let mut s = s;
            let at = self.rng.below(s.len() + 1);
            if s.is_char_boundary(at) {
                s.insert_str(at, self.rng.pick(&NOISE));
            }
            return s;
        }
        s
    }

    fn deep(&mut self) -> String {
        let n = [50, 99, 100, 101, 500, 3000][self.rng.below(6)];
        match self.rng.below(5) {
            0 => format!("{}x{}", "(".repeat(n), ")".repeat(n)),
            1 => format!("{}x{}", "sin(".repeat(n), ")".repeat(n)),
            2 => format!("{}x", "-".repeat(n)),
            3 => vec!["x"; n * 10].join(" + "),
            _ => format!("{}x", "x ** ".repeat(n)),
        }
    }
}

fn quote(s: &str) -> String {
    let esc = s.replace('\\', "\\\\").replace('"', "\\\"");
    if esc.contains('\n') {
        format!("\"\"\"\n{esc}\"\"\"")
    } else {
        format!("\"{esc}\"")
    }
}

fn model(rng: &mut Rng) -> String {
    let kind = if rng.chance(70) { "ode" } else { "map" };
    let n_states = 1 + rng.below(3);
    let states: Vec<String> = (0..n_states).map(|i| format!("s{i}")).collect();
    let params: Vec<String> = (0..rng.below(3)).map(|i| format!("p{i}")).collect();
    let aux: Vec<String> = (0..rng.below(3)).map(|i| format!("a{i}")).collect();
    let mut names = states.clone();
    names.extend(params.iter().cloned());
    names.extend(aux.iter().cloned());
    let mut g = Gen {
        rng,
        names,
        n_states,
    };
    let mut t = String::new();
    t.push_str(&format!(
        "[{}]\ntype = \"{kind}\"\n",
        if g.rng.chance(3) { "modle" } else { "model" }
    ));
    t.push_str("[states]\n");
    for s in &states {
        let v = if g.rng.chance(10) {
            quote(g.rng.pick(&["2*pi", "1/3", "-e", "1 +", "2**-1"]))
        } else {
            format!("{}.5", g.rng.below(3))
        };
        t.push_str(&format!("{s} = {v}\n"));
    }
    if !params.is_empty() {
        t.push_str(if g.rng.chance(5) {
            "[param]\n"
        } else {
            "[params]\n"
        });
        for p in &params {
            t.push_str(&format!("{p} = {}\n", g.rng.below(5)));
        }
    }
    if !aux.is_empty() {
        t.push_str("[aux]\n");
        for (i, a) in aux.iter().enumerate() {
            // Only earlier aux, mostly (a cycle now and then).
            let e = if g.rng.chance(5) {
                aux[aux.len() - 1].clone()
            } else {
                g.names.truncate(states.len() + params.len() + i);
                g.expr(3)
            };
            t.push_str(&format!("{a} = {}\n", quote(&e)));
        }
        g.names = states.iter().chain(&params).chain(&aux).cloned().collect();
    }
    if g.rng.chance(20) {
        t.push_str(&format!(
            "[functions.f]\nargs = [\"u\"]\nexpr = {}\n",
            quote(&format!("u * {}", g.expr(2)))
        ));
    }
    if g.rng.chance(50) {
        t.push_str("[equations.rhs]\n");
        for s in &states {
            let e = if g.rng.chance(4) { g.deep() } else { g.expr(4) };
            t.push_str(&format!("{s} = {}\n", quote(&e)));
        }
    } else {
        let mut block = String::new();
        for s in &states {
            let lhs = if kind == "ode" {
                format!("d{s}")
            } else {
                s.clone()
            };
            block.push_str(&format!("{lhs} = {}\n", g.expr(4)));
        }
        t.push_str(&format!("[equations]\nexpr = {}\n", quote(&block)));
    }
    if g.rng.chance(30) {
        t.push_str(&format!(
            "[events.ev]\ncond = {}\naction = {}\nlog = [\"t\", \"{}\"]\ntags = [\"a\"]\n",
            quote(&g.expr(2)),
            quote(&format!("{} = {}", states[0], g.expr(2))),
            states[0]
        ));
    }
    if g.rng.chance(40) {
        t.push_str("[sim]\n");
        let key = g.rng.pick(&[
            "dt",
            "t_end",
            "dtt",
            "stepper",
            "max_factor",
            "rtol",
            "t0",
            "stop",
        ]);
        let val = match key {
            "stepper" => quote(g.rng.pick(&["rk4", "rk45", "map", "bdf2", "rk-4"])),
            "stop" => quote(&g.expr(2)),
            _ => g
                .rng
                .pick(&["0.01", "nan", "-1", "inf", "2", "\"x\""])
                .to_string(),
        };
        t.push_str(&format!("{key} = {val}\nmax_steps = 50\n"));
    }
    if g.rng.chance(25) {
        let target = g.rng.pick(&["params", "aux", "states", "events", "sim"]);
        let verb = g.rng.pick(&["set", "add", "replace", "remove", "sett"]);
        let name = g.names[g.rng.below(g.names.len())].clone();
        let body = if verb == "remove" {
            format!("{{ names = [\"{name}\"] }}")
        } else {
            format!("{{ {name} = {} }}", quote(&g.expr(2)))
        };
        t.push_str(&format!("[mods.m]\n{verb}.{target} = {body}\n"));
    }
    t
}

/// Byte-level damage to a valid model: deletions, duplications and insertions.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut b: Vec<u8> = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(3) {
            0 => {
                b.remove(at);
            }
            1 => {
                let c = b[at];
                b.insert(at, c);
            }
            _ => {
                let ins = rng.pick(&NOISE).as_bytes().to_vec();
                b.splice(at..at, ins);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Loads on a 256 KiB thread; a loaded model runs a few steps. Panics propagate as failures.
fn check(text: String, backend: Backend) -> bool {
    let shown = text.chars().take(2000).collect::<String>();
    let r = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || match Model::from_toml_with(&text, backend) {
            Ok(m) => {
                let mut sim = Sim::new(&m).unwrap();
                let opts = if m.kind == dynlib::model::ModelKind::Map {
                    RunOptions::new().n(5)
                } else {
                    RunOptions::new().t(m.sim.t0 + 5.0 * m.sim.dt)
                };
                let _ = sim.run(&opts.max_steps(100));
                true
            }
            Err(e) => {
                if std::env::var("DYNLIB_FUZZ_SHOW").is_ok() {
                    let m = e.diagnostics()[0].message.clone();
                    eprintln!("REFUSED {}", m.lines().next().unwrap_or(""));
                }
                assert!(
                    matches!(e.kind(), ErrorKind::Model | ErrorKind::Io),
                    "unexpected error kind {:?}: {e}",
                    e.kind()
                );
                assert!(!e.message().is_empty());
                let lines = text.lines().count() + 1;
                for d in e.diagnostics() {
                    assert!(d.line <= lines, "line {} beyond the text: {e}", d.line);
                }
                false
            }
        })
        .unwrap()
        .join();
    match r {
        Ok(loaded) => loaded,
        Err(_) => panic!("the loader panicked on:\n{shown}"),
    }
}

/// Inputs that once crashed or misbehaved; each stays a test case.
fn regressions() -> Vec<String> {
    vec![
        // Deep nesting at and beyond the limit, long chains.
        format!(
            "[model]\ntype = \"ode\"\n[states]\nx = 1\n[equations.rhs]\nx = \"{}x{}\"\n",
            "(".repeat(3500),
            ")".repeat(3500)
        ),
        "[model]\ntype = \"ode\"\n[states]\nx = \"\"\"\n1\"\"\"\n[equations.rhs]\nx = \"0\"\n"
            .into(),
        // Deeply nested TOML arrays and inline tables.
        format!(
            "[model]\ntype = \"ode\"\n[meta]\na = {}1{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!(
            "[model]\ntype = \"ode\"\n[meta]\na = {}1{}\n",
            "{b = ".repeat(50_000),
            "}".repeat(50_000)
        ),
        // A huge identifier typo (bounded suggestions).
        format!(
            "[model]\ntype = \"ode\"\n[states]\nx = 1\n[equations.rhs]\nx = \"{}\"\n",
            "y".repeat(150_000)
        ),
    ]
}

#[test]
fn random_models_never_crash_the_loader() {
    let cases: usize = std::env::var("DYNLIB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut loaded, mut refused) = (0, 0);
    let t = std::time::Instant::now();
    for r in regressions() {
        check(r, Backend::Interpreter);
    }
    assert!(
        t.elapsed().as_secs() < 20,
        "regressions are quick: {:?}",
        t.elapsed()
    );
    for i in 0..cases {
        let text = model(&mut rng);
        let text = if rng.chance(30) {
            mutate(&mut rng, &text)
        } else {
            text
        };
        // Native code for one case in ten (it is slower to build).
        let backend = if i % 10 == 0 {
            Backend::Auto
        } else {
            Backend::Interpreter
        };
        if check(text, backend) {
            loaded += 1;
        } else {
            refused += 1;
        }
    }
    // Written to the stderr handle directly, so the count shows even when output is captured.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "model fuzz: {cases} cases ({loaded} loaded, {refused} refused), no crash"
    );
    assert!(
        loaded > cases / 20,
        "the generator makes loadable models too: {loaded}"
    );
    assert!(refused > cases / 20, "and invalid ones: {refused}");
}
