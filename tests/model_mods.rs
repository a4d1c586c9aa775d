//! Mods: model variants without editing the file (verbs, order, groups, fragments, errors),
//! presets and event tags kept, and a variant's snapshots are not the base model's.

use dynlib::{Backend, ErrorKind, Model, RunOptions, Sim};

const MODEL: &str = r#"
[model]
type = "ode"
name = "decay"
[states]
x = 1.0
v = 0.0
[params]
k = 2.0
c = 0.5
[aux]
energy = "x*x"
drive = "0"
[functions.f]
args = ["u"]
expr = "-k*u"
[equations.rhs]
x = "f(x) + drive"
v = "-c*v"
[events.kick]
cond = "x < 0.5"
action = "v = v + 1"
tags = ["control"]
[events.log]
cond = "x < 0.1"
[presets.slow.params]
k = 0.5

[mods.faster]
group = "speed"
set.params = { k = 4.0 }
[mods.slower]
group = "speed"
exclusive = true
set.params = { k = 1.0 }
[mods.forced]
add.params = { w = 3.0 }
replace.aux = { drive = "0.1*sin(w*t)" }
[mods.nokick]
remove.events = { names = ["kick"] }
[mods.rekick]
replace.events.kick = { cond = "x < 0.4", action = "v = v + 2" }
[mods.order]
remove.params = { names = ["c"] }
add.params = { c = 0.25 }
set.params = { c = 0.125 }
"#;

fn path() -> std::path::PathBuf {
    static P: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dynlib-mods-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("decay.toml");
        std::fs::write(&p, MODEL).unwrap();
        p
    })
    .clone()
}

fn load(mods: &[&str]) -> dynlib::Result<Model> {
    Model::load_with_mods(path().to_str().unwrap(), mods, Backend::Auto)
}

#[test]
fn verbs_apply_in_order_and_mods_in_the_callers_order() {
    let base = load(&[]).unwrap();
    assert_eq!(base.param_init, vec![2.0, 0.5]);
    let m = load(&["faster"]).unwrap();
    assert_eq!(m.param_init, vec![4.0, 0.5]);
    let m = load(&["forced"]).unwrap();
    assert_eq!(m.param_names, vec!["k", "c", "w"]);
    // remove -> add -> set within one mod.
    let m = load(&["order"]).unwrap();
    assert_eq!(m.param_names, vec!["k", "c"]);
    assert_eq!(m.param_init, vec![2.0, 0.125]);
    // Mods in order: the later set wins.
    let a = load(&["faster", "order"]).unwrap();
    assert_eq!(a.param_init, vec![4.0, 0.125]);
    let m = load(&["nokick"]).unwrap();
    assert_eq!(m.events.len(), 1);
    // The #mod= fragment is applied first.
    let src = format!("{}#mod=faster", path().display());
    let m = Model::load_with_mods(&src, &["order"], Backend::Auto).unwrap();
    assert_eq!(m.param_init, vec![4.0, 0.125]);
    let m = Model::load(&src).unwrap();
    assert_eq!(m.param_init, vec![4.0, 0.5]);
}

#[test]
fn presets_and_event_tags_are_kept() {
    let m = load(&["rekick", "faster"]).unwrap();
    assert_eq!(m.presets.len(), 1);
    let kick = m.events.iter().find(|e| e.name == "kick").unwrap();
    assert_eq!(kick.tags, vec!["control"]);
}

#[test]
fn inline_and_file_mods() {
    let m = load(&["inline:[mod]\nname = \"k3\"\nset.params = { k = 3.0 }\n"]).unwrap();
    assert_eq!(m.param_init[0], 3.0);
    let dir = path().parent().unwrap().to_path_buf();
    let f = dir.join("mods.toml");
    std::fs::write(
        &f,
        "[mods.a]\nset.params = { k = 5.0 }\n[mods.b]\nset.params = { c = 6.0 }\n",
    )
    .unwrap();
    let m = load(&[&format!("{}#mod=b", f.display())]).unwrap();
    assert_eq!(m.param_init, vec![2.0, 6.0]);
    let e = load(&[f.to_str().unwrap()]).unwrap_err();
    assert!(e.message().contains("several mods"), "{e}");
}

#[test]
fn mod_errors_follow_the_reference() {
    let msg = |mods: &[&str]| load(mods).unwrap_err().message().to_string();
    let m = msg(&["faster", "slower"]);
    assert!(m.contains("exclusive group 'speed'"), "{m}");
    let m = msg(&["fastre"]);
    assert!(
        m.contains("no mod 'fastre'") && m.contains("did you mean 'faster'"),
        "{m}"
    );
    let bad = |body: &str| {
        let e = load(&[&format!("inline:[mod]\nname = \"bad\"\n{body}\n")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Model, "{e}");
        e.message().to_string()
    };
    let m = bad("remove.params = { names = [\"zz\"] }");
    assert!(m.contains("no params entry 'zz'"), "{m}");
    let m = bad("replace.aux = { nope = \"1\" }");
    assert!(m.contains("no aux entry 'nope'"), "{m}");
    let m = bad("add.params = { k = 1.0 }");
    assert!(m.contains("'k' already exists"), "{m}");
    let m = bad("set.states = { y = 1.0 }");
    assert!(m.contains("no states entry 'y'"), "{m}");
    let m = bad("set.params = { kk = 1.0 }");
    assert!(m.contains("did you mean 'k'"), "{m}");
    // Structure of the mods of a file is checked even when they are not applied.
    let text = format!("{MODEL}[mods.typo]\nsett.params = {{ k = 1.0 }}\nreplace.params = {{ k = 1.0 }}\nadd.aux = {{ q = 1 }}\n");
    let e = Model::from_toml(&text).unwrap_err();
    let m = e.message();
    assert!(
        m.contains("unknown key 'sett'") && m.contains("did you mean 'set'"),
        "{m}"
    );
    assert!(m.contains("'replace' cannot target 'params'"), "{m}");
    assert!(m.contains("add.aux.q must be a string"), "{m}");
    assert!(e.diagnostics().iter().all(|d| d.line > 0), "{m}");
}

#[test]
fn a_mod_in_the_same_file_reports_errors_at_the_mod() {
    let text = format!("{MODEL}[mods.broken]\nreplace.aux = {{ drive = \"0.1*sinn(t)\" }}\n");
    let dir = path().parent().unwrap().to_path_buf();
    let f = dir.join("broken.toml");
    std::fs::write(&f, &text).unwrap();
    let e = Model::load_with_mods(f.to_str().unwrap(), &["broken"], Backend::Auto).unwrap_err();
    let d = &e.diagnostics()[0];
    let line = text.lines().position(|l| l.contains("sinn")).unwrap() + 1;
    assert_eq!(d.line, line, "{e}");
    assert!(e.message().contains("unknown function 'sinn'"), "{e}");
}

#[test]
fn errors_in_values_from_another_text_do_not_point_into_the_model_file() {
    let e = load(&["inline:[mod]\nadd.aux = { q = \"sinn(x)\" }\n"]).unwrap_err();
    let d = &e.diagnostics()[0];
    assert!(
        d.message.contains("[aux].q") && d.message.contains("sinn"),
        "{e}"
    );
    assert_eq!(d.line, 0, "{e}");
}

#[test]
fn a_variant_refuses_snapshots_of_the_base_model() {
    let base = load(&[]).unwrap();
    let same = load(&["inline:[mod]\nname = \"noop\"\n"]).unwrap();
    assert_ne!(
        base.spec_hash, same.spec_hash,
        "even a mod that changes nothing"
    );
    let variant = load(&["faster"]).unwrap();
    assert_ne!(base.spec_hash, variant.spec_hash);
    let mut sim = Sim::new(&base).unwrap();
    sim.run(&RunOptions::new().t(0.5)).unwrap();
    let bytes = sim.serialize_snapshot(None).unwrap();
    let mut other = Sim::new(&variant).unwrap();
    let e = other.deserialize_snapshot(&bytes).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Incompatible, "{e}");
    assert!(e.message().contains("spec_hash"), "{e}");
    // The base model itself accepts it.
    let mut again = Sim::new(&load(&[]).unwrap()).unwrap();
    again.deserialize_snapshot(&bytes).unwrap();
}

#[test]
fn validate_lists_problems_with_positions() {
    assert!(Model::validate(path().to_str().unwrap()).is_empty());
    let d = Model::validate("inline:[model]\ntype = \"ode\"\n[states]\nx = 1\n[equations.rhs]\nx = \"y\"\n[sim]\ndtt = 1\n");
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().all(|d| d.line > 0), "{d:?}");
}

#[test]
fn model_files_are_read_with_type_and_size_checks() {
    let e = Model::load("/dev/zero").unwrap_err();
    assert!(e.message().contains("not a regular file"), "{e}");
    let dir = path().parent().unwrap().to_path_buf();
    let e = Model::load(dir.to_str().unwrap()).unwrap_err();
    assert!(e.message().contains("directory"), "{e}");
    let fifo = dir.join("fifo.toml");
    let _ = std::fs::remove_file(&fifo);
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let t = std::time::Instant::now();
        let e = Model::load(fifo.to_str().unwrap()).unwrap_err();
        assert!(e.message().contains("not a regular file"), "{e}");
        assert!(t.elapsed().as_secs() < 5);
    }
    let big = dir.join("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(dynlib::model::MAX_MODEL_FILE_BYTES + 1).unwrap();
    let e = Model::load(big.to_str().unwrap()).unwrap_err();
    assert!(e.message().contains("limit"), "{e}");
}
