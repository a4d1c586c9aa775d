//! No model text can crash the host: deep or long expressions load or are refused with an
//! error naming the limit, on a 256 KiB thread exactly as on the main thread.

use dynlib::{Backend, Model};

fn model_with(rhs: &str) -> String {
    format!("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[equations.rhs]\nx = \"{rhs}\"\n")
}

/// Loads `text` with `backend` on a thread with a 256 KiB stack; Ok(()) or the error message.
fn load_small_stack(text: String, backend: Backend) -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            Model::from_toml_with(&text, backend)
                .map(|_| ())
                .map_err(|e| e.message().to_string())
        })
        .unwrap()
        .join()
        .expect("the loader thread must not crash")
}

fn both(text: String) -> Result<(), String> {
    let a = load_small_stack(text.clone(), Backend::Interpreter);
    let b = load_small_stack(text.clone(), Backend::Auto);
    let main = Model::from_toml(&text)
        .map(|_| ())
        .map_err(|e| e.message().to_string());
    assert_eq!(a.is_ok(), main.is_ok(), "{a:?} vs {main:?}");
    assert_eq!(b.is_ok(), main.is_ok(), "{b:?} vs {main:?}");
    main
}

#[test]
fn nesting_at_the_limit_loads_on_a_small_stack() {
    let n = dynlib::model::expr::parser::MAX_NESTING - 1;
    both(model_with(&format!("{}x{}", "(".repeat(n), ")".repeat(n)))).unwrap();
    both(model_with(&format!(
        "{}x{}",
        "sin(".repeat(n),
        ")".repeat(n)
    )))
    .unwrap();
    both(model_with(&format!("{}x", "-".repeat(n)))).unwrap();
    both(model_with(&format!("{}x", "not ".repeat(n)))).unwrap();
    both(model_with(&"x^".repeat(n / 2).to_string().add_x())).unwrap();
}

trait AddX {
    fn add_x(self) -> String;
}
impl AddX for String {
    fn add_x(mut self) -> String {
        self.push('x');
        self
    }
}

#[test]
fn the_cases_of_the_issue_are_refused_or_loaded_without_a_crash() {
    let e = both(model_with(&format!(
        "{}x{}",
        "(".repeat(3500),
        ")".repeat(3500)
    )))
    .unwrap_err();
    assert!(e.contains("nesting limit is 100"), "{e}");
    let e = both(model_with(&format!(
        "{}x{}",
        "sin(".repeat(10_000),
        ")".repeat(10_000)
    )))
    .unwrap_err();
    assert!(e.contains("nesting limit is 100"), "{e}");
    // A 30,000-term sum is flat, not deep: it loads.
    let sum = vec!["x"; 30_000].join(" + ");
    both(model_with(&sum)).unwrap();
    // 8,000 chained aux.
    let mut text = String::from("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[aux]\na0 = \"x\"\n");
    for i in 1..8000 {
        text.push_str(&format!("a{i} = \"a{} + 1\"\n", i - 1));
    }
    text.push_str("[equations.rhs]\nx = \"a7999\"\n");
    // Aux are lowered in dependency order without recursion: a long chain loads.
    both(text).unwrap();
    // Functions are inlined by recursion: a long chain of them is refused at the limit.
    let mut text = String::from("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[functions.f0]\nargs = [\"u\"]\nexpr = \"u\"\n");
    for i in 1..1000 {
        text.push_str(&format!(
            "[functions.f{i}]\nargs = [\"u\"]\nexpr = \"f{}(u) + 1\"\n",
            i - 1
        ));
    }
    text.push_str("[equations.rhs]\nx = \"f999(x)\"\n");
    let e = both(text).unwrap_err();
    assert!(e.contains("inlined nesting limit is 400"), "{e}");
    assert!(
        e.len() < 4000,
        "the message stays short: {} bytes: {e}",
        e.len()
    );
    // A chain of 150 aux loads, and so does one at the inlined limit, each level nesting
    // as deep as allowed.
    for (n, deep) in [(150, false), (3, true)] {
        let mut text =
            String::from("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[aux]\na0 = \"x\"\n");
        let k = dynlib::model::expr::parser::MAX_NESTING - 1;
        for i in 1..n {
            if deep {
                text.push_str(&format!(
                    "a{i} = \"{}a{}{}\"\n",
                    "sin(".repeat(k),
                    i - 1,
                    ")".repeat(k)
                ));
            } else {
                text.push_str(&format!("a{i} = \"a{} + 1\"\n", i - 1));
            }
        }
        text.push_str(&format!("[equations.rhs]\nx = \"a{}\"\n", n - 1));
        both(text).unwrap();
    }
}

#[test]
fn suggestions_for_huge_names_are_quick() {
    let t = std::time::Instant::now();
    let typo = "y".repeat(150_000);
    let e = Model::from_toml(&model_with(&typo)).unwrap_err();
    assert!(
        e.message().contains("unknown identifier"),
        "{}",
        &e.message()[..200]
    );
    let m = Model::load("builtin://ode/expdecay").unwrap();
    let mut sim = dynlib::Sim::new(&m).unwrap();
    let name = "s".repeat(100_000);
    sim.create_snapshot(&name, "").unwrap();
    let mut typo = name.clone();
    typo.replace_range(..1, "t");
    assert!(sim.reset(&typo).is_err());
    assert!(t.elapsed().as_secs_f64() < 5.0, "{:?}", t.elapsed());
}
