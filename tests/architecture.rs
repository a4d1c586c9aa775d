//! The crate's layering: its top-level modules, and the modules of `session` and `model`, use each other
//! without cycles (a cycle means neither side can be read, tested or changed alone).
//! References are found in the source text (`crate::m`, `super::m`, `use` lines), which is
//! what a reader follows too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The names `prefix` is followed by in `text` (`crate::session` -> `session`).
fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        // Whole path segments only (`crate::` but not `mycrate::`).
        .filter(|(at, _)| !text[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(at, _)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The modules directly under `dir` (files `m.rs` and directories `m/`), each with the
/// files that belong to it.
fn modules(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("directory entry").path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if stem == "mod" || stem == "lib" || stem == "main" {
            continue;
        }
        if path.is_dir() {
            out.entry(stem).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.entry(stem).or_default().push(path);
        }
    }
    out
}

/// A cycle in `graph`, if there is one, as the path of module names around it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Who uses whom among the modules of `dir`, through `crate::<path>::m` and, for files
/// directly in `dir`, `super::m`.
fn graph(
    dir: &Path,
    crate_path: &str,
    siblings_by_super: bool,
) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(dir);
    let mut g = BTreeMap::new();
    for (name, files) in &mods {
        let mut uses = BTreeSet::new();
        for file in files {
            let text = fs::read_to_string(file).expect("source file");
            uses.extend(referenced(&text, crate_path));
            let directly_in_dir = file.parent() == Some(dir);
            let in_own_dir = file.parent() == Some(&dir.join(name));
            if siblings_by_super && (directly_in_dir || in_own_dir && file.ends_with("mod.rs")) {
                uses.extend(referenced(&text, "super::"));
            }
        }
        uses.retain(|u| u != name && mods.contains_key(u));
        g.insert(name.clone(), uses);
    }
    g
}

#[test]
fn top_level_modules_use_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src, "crate::", false);
    assert!(
        g.contains_key("session") && g.contains_key("stepper"),
        "{g:?}"
    );
    assert!(
        g["ffi"].contains("session"),
        "the scan sees ffi use session: {g:?}"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!("top-level modules form a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn session_modules_use_each_other_without_cycles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/session");
    let g = graph(&dir, "crate::session::", true);
    assert!(
        g["sim"].contains("runner"),
        "the scan sees sim use runner: {g:?}"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!("session modules form a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn model_modules_use_each_other_without_cycles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model");
    let g = graph(&dir, "crate::model::", true);
    assert!(
        g["compile"].contains("spec") && g["spec"].contains("mods"),
        "the scan sees compile use spec and spec use mods: {g:?}"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!("model modules form a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .iter()
        .map(|(k, v)| (k.to_string(), BTreeSet::from([v.to_string()])))
        .collect();
    let cycle = find_cycle(&g).expect("a -> b -> c -> a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [("a".to_string(), BTreeSet::from(["b".to_string()]))].into();
    assert!(find_cycle(&acyclic).is_none());
}
