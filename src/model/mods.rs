//! Mods: variants of a model without editing its file.
//!
//! A mod is a `[mod]` table or a `[mods.NAME]` table (in the model file or in a mod file)
//! with the keys `name`, `group`, `exclusive` and the verbs `remove`, `replace`, `add`, `set`.
//! Within a mod the verbs run in the order remove → replace → add → set; mods run in the
//! caller's order. Two mods of one `group` where either is `exclusive` are an error.
//!
//! | verb | targets | rule |
//! |---|---|---|
//! | `remove.<t>.names = [...]` | events, params, aux, functions | each name must exist |
//! | `replace.<t>.<name>` | events, aux, functions | the name must exist |
//! | `add.<t>.<name>` | events, params, aux, functions | the name must not exist |
//! | `set.<t>.<name>` | states, params (must exist), aux, functions, sim (upsert) | |
//!
//! Unlike the original system, presets and event tags are kept: a replaced event keeps its
//! tags unless the replacement gives its own. The applied mods' names are part of the spec
//! (and so of its hash): a snapshot of the base model is refused by a variant.

use toml::{Table, Value};

use super::pos::DocIndex;
use super::spec::Cx;
use crate::error::{shorten, suggestion_suffix, Error, Result};

const MOD_KEYS: [&str; 7] = [
    "name",
    "group",
    "exclusive",
    "remove",
    "replace",
    "add",
    "set",
];
const VERBS: [(&str, &[&str]); 4] = [
    ("remove", &["events", "params", "aux", "functions"]),
    ("replace", &["events", "aux", "functions"]),
    ("add", &["events", "params", "aux", "functions"]),
    ("set", &["states", "params", "aux", "functions", "sim"]),
];

/// One mod to apply: its name, its table, and where the table sits in the model's document
/// (`None` for a mod from another text; then positions are those of that text's keys).
#[derive(Debug, Clone)]
pub struct ModDef {
    pub name: String,
    pub table: Table,
    pub path: Option<Vec<String>>,
}

/// The structural problems of one mod table (unknown keys, verbs, targets, value types).
pub(crate) fn check_structure(cx: &Cx, t: &Table, path: &[&str]) -> Vec<Error> {
    let mut errs = Vec::new();
    let loc = format!("[{}]", path.join("."));
    for (k, v) in t {
        let mut p = path.to_vec();
        p.push(k);
        let here = |m: String| cx.err(&p, m);
        match k.as_str() {
            "name" | "group" if !v.is_str() => {
                errs.push(here(format!("{loc}.{k} must be a string")))
            }
            "exclusive" if !v.is_bool() => {
                errs.push(here(format!("{loc}.exclusive must be true or false")))
            }
            "name" | "group" | "exclusive" => {}
            verb => match VERBS.iter().find(|(n, _)| *n == verb) {
                None => errs.push(here(format!(
                    "unknown key '{}' in {loc}{}; a mod has {}",
                    shorten(verb),
                    suggestion_suffix(verb, MOD_KEYS),
                    MOD_KEYS.join(", ")
                ))),
                Some((_, targets)) => {
                    let Some(vt) = v.as_table() else {
                        errs.push(here(format!("{loc}.{verb} must be a table of targets")));
                        continue;
                    };
                    for (target, tv) in vt {
                        let mut tp = p.clone();
                        tp.push(target);
                        if !targets.contains(&target.as_str()) {
                            errs.push(cx.err(
                                &tp,
                                format!(
                                    "{loc}: '{verb}' cannot target '{}'{}; it targets {}",
                                    shorten(target),
                                    suggestion_suffix(target, targets.iter().copied()),
                                    targets.join(", ")
                                ),
                            ));
                            continue;
                        }
                        let Some(entries) = tv.as_table() else {
                            errs.push(
                                cx.err(&tp, format!("{loc}.{verb}.{target} must be a table")),
                            );
                            continue;
                        };
                        if verb == "remove" {
                            for key in entries.keys().filter(|k| *k != "names") {
                                let mut kp = tp.clone();
                                kp.push(key);
                                errs.push(cx.err(
                                    &kp,
                                    format!(
                                        "unknown key '{}' in {loc}.remove.{target}: it takes \
                                         names = [...]",
                                        shorten(key)
                                    ),
                                ));
                            }
                            let ok = entries
                                .get("names")
                                .and_then(Value::as_array)
                                .is_some_and(|a| a.iter().all(Value::is_str));
                            if !ok {
                                errs.push(cx.err(
                                    &tp,
                                    format!("{loc}.remove.{target}.names must be a list of names"),
                                ));
                            }
                        } else if target == "aux" {
                            for (name, val) in entries {
                                if !val.is_str() {
                                    let mut kp = tp.clone();
                                    kp.push(name);
                                    errs.push(cx.err(
                                        &kp,
                                        format!(
                                            "{loc}.{verb}.aux.{name} must be a string \
                                             expression, found {}",
                                            val.type_str()
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
            },
        }
    }
    errs
}

/// The mods defined in a document: `[mod]` (named by its `name` key, or "mod") and every
/// `[mods.NAME]`.
pub fn defined(doc: &Table) -> Vec<ModDef> {
    let mut out = Vec::new();
    if let Some(t) = doc.get("mod").and_then(Value::as_table) {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("mod")
            .to_string();
        out.push(ModDef {
            name,
            table: t.clone(),
            path: Some(vec!["mod".into()]),
        });
    }
    if let Some(ms) = doc.get("mods").and_then(Value::as_table) {
        for (k, v) in ms {
            if let Some(t) = v.as_table() {
                out.push(ModDef {
                    name: k.clone(),
                    table: t.clone(),
                    path: Some(vec!["mods".into(), k.clone()]),
                });
            }
        }
    }
    out
}

/// Selects mod `name` from a document's mods.
pub fn select(doc: &Table, name: &str, what: &str) -> Result<ModDef> {
    let all = defined(doc);
    all.iter().find(|m| m.name == name).cloned().ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
        Error::model(format!(
            "{what} has no mod '{}'{}; its mods: {}",
            shorten(name),
            suggestion_suffix(name, names.iter().copied()),
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}

/// The single mod of a mod file's document (a `[mod]` table or exactly one `[mods.NAME]`).
pub fn single(doc: &Table, what: &str) -> Result<ModDef> {
    let all = defined(doc);
    match all.len() {
        1 => Ok(all.into_iter().next().expect("one mod")),
        0 => Err(Error::model(format!(
            "{what} defines no mod: write a [mod] table or [mods.NAME] tables"
        ))),
        _ => Err(Error::model(format!(
            "{what} defines several mods ({}); choose one with '#mod=NAME'",
            all.iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn str_key(t: &Table, k: &str) -> Option<String> {
    t.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Applies `mods` in order to `doc`, recording in `ix` where each moved value came from.
/// Returns every problem found (the document is then partly modified).
pub fn apply(doc: &mut Table, mods: &[ModDef], ix: &mut DocIndex) -> Vec<Error> {
    let mut errs = Vec::new();
    // Groups first: two mods of one group where one is exclusive.
    for (i, a) in mods.iter().enumerate() {
        for b in &mods[..i] {
            let (ga, gb) = (str_key(&a.table, "group"), str_key(&b.table, "group"));
            let excl = |m: &ModDef| m.table.get("exclusive").and_then(Value::as_bool) == Some(true);
            if let (Some(ga), Some(gb)) = (ga, gb) {
                if ga == gb && (excl(a) || excl(b)) {
                    errs.push(Error::model(format!(
                        "mods '{}' and '{}' are both in the exclusive group '{ga}': apply only one",
                        b.name, a.name
                    )));
                }
            }
        }
    }
    for m in mods {
        let prefix: Vec<String> = m.path.clone().unwrap_or_default();
        let p = |extra: &[&str]| -> Vec<String> {
            prefix
                .iter()
                .cloned()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect()
        };
        let cx_err = |ix: &DocIndex, path: &[String], msg: String| {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let (line, column) = if m.path.is_some() {
                ix.key_pos(&refs)
            } else {
                (0, 0)
            };
            Error::model_at(crate::error::Diagnostic {
                message: msg,
                location: super::spec::location_of(&refs),
                line,
                column,
            })
        };
        let what = format!("mod '{}'", m.name);
        for (verb, targets) in VERBS {
            let Some(vt) = m.table.get(verb).and_then(Value::as_table) else {
                continue;
            };
            for target in targets.iter().copied() {
                let Some(entries) = vt.get(target).and_then(Value::as_table) else {
                    continue;
                };
                let existing = doc.get(target).and_then(Value::as_table).cloned();
                let exists = |name: &str| existing.as_ref().is_some_and(|t| t.contains_key(name));
                let names_of = || -> Vec<String> {
                    existing
                        .as_ref()
                        .map(|t| t.keys().cloned().collect())
                        .unwrap_or_default()
                };
                if verb == "remove" {
                    let names: Vec<String> = entries
                        .get("names")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    for n in names {
                        if !exists(&n) {
                            let known = names_of();
                            errs.push(cx_err(
                                ix,
                                &p(&[verb, target, "names"]),
                                format!(
                                    "{what}: remove.{target}: there is no {target} entry '{}' \
                                     to remove{}",
                                    shorten(&n),
                                    suggestion_suffix(&n, known.iter().map(String::as_str))
                                ),
                            ));
                            continue;
                        }
                        if let Some(Value::Table(t)) = doc.get_mut(target) {
                            t.remove(&n);
                        }
                    }
                    continue;
                }
                for (name, value) in entries {
                    let here = p(&[verb, target, name]);
                    let must_exist = match verb {
                        "replace" => Some(true),
                        "add" => Some(false),
                        _ if target == "states" || target == "params" => Some(true),
                        _ => None,
                    };
                    if let Some(want) = must_exist {
                        if exists(name) != want {
                            let known = names_of();
                            let msg = if want {
                                format!(
                                    "{what}: {verb}.{target}.{}: there is no {target} entry \
                                     '{}'{}",
                                    shorten(name),
                                    shorten(name),
                                    suggestion_suffix(name, known.iter().map(String::as_str))
                                )
                            } else {
                                format!(
                                    "{what}: add.{target}.{}: '{}' already exists (use \
                                     replace or set)",
                                    shorten(name),
                                    shorten(name)
                                )
                            };
                            errs.push(cx_err(ix, &here, msg));
                            continue;
                        }
                    }
                    let mut value = value.clone();
                    // A replaced event keeps its tags unless the replacement gives its own.
                    if verb == "replace" && target == "events" {
                        if let (Some(new), Some(old)) = (
                            value.as_table_mut(),
                            existing
                                .as_ref()
                                .and_then(|t| t.get(name))
                                .and_then(Value::as_table),
                        ) {
                            if !new.contains_key("tags") {
                                if let Some(tags) = old.get("tags") {
                                    new.insert("tags".into(), tags.clone());
                                }
                            }
                        }
                    }
                    let slot = doc
                        .entry(target.to_string())
                        .or_insert_with(|| Value::Table(Table::new()));
                    if let Value::Table(t) = slot {
                        t.insert(name.clone(), value);
                    }
                    if m.path.is_some() {
                        let refs: Vec<&str> = here.iter().map(String::as_str).collect();
                        ix.alias(&[target, name], &refs);
                    } else {
                        ix.foreign(&[target, name]);
                    }
                }
            }
        }
    }
    errs
}
