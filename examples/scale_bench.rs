//! Scaling benchmark (issue 13). Quick load timing for now.
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
        s.push_str(&format!("g{i} = {{ args = [\"a\", \"b\"], expr = \"k*(a - b) + {i}\" }}\n"));
    }
    s.push_str("\n[equations.rhs]\nx0 = \"-k*x0\"\n");
    for i in 1..n {
        s.push_str(&format!("x{i} = \"g{i}(x{}, x{i})\"\n", i - 1));
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|a| a.parse().unwrap()).unwrap_or(1000);
    let backend = match args.get(2).map(String::as_str) {
        Some("interp") => Backend::Interpreter,
        _ => Backend::Auto,
    };
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

#[allow(dead_code)]
pub fn phases(text: &str) {
    use dynlib::model::{compile, pos, spec};
    let t = Instant::now();
    let doc = spec::parse_toml(text).unwrap();
    let a = t.elapsed().as_secs_f64();
    let ix = pos::DocIndex::new(text);
    let b = t.elapsed().as_secs_f64();
    let parsed = spec::parse_lenient(text, Some((doc, ix))).unwrap();
    let c = t.elapsed().as_secs_f64();
    let s = spec::checked(parsed).unwrap();
    let d = t.elapsed().as_secs_f64();
    let comp = compile::compile(&s).unwrap();
    let e = t.elapsed().as_secs_f64();
    let j = serde_json::to_vec(&s).unwrap();
    let f = t.elapsed().as_secs_f64();
    println!("toml {a:.3} docindex {:.3} build {:.3} checked {:.3} compile {:.3} json {:.3} ({} ops, {} bytes)", b-a, c-b, d-c, e-d, f-e, comp.rhs.ops.len(), j.len());
}
