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

use super::pos::{error_at, location_of, DocIndex};
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
pub(crate) fn check_structure(ix: &DocIndex, t: &Table, path: &[&str]) -> Vec<Error> {
    let mut errs = Vec::new();
    let loc = format!("[{}]", path.join("."));
    for (k, v) in t {
        let mut p = path.to_vec();
        p.push(k);
        let here = |m: String| error_at(ix, &p, m);
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
                            errs.push(error_at(
                                ix,
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
                            errs.push(error_at(
                                ix,
                                &tp,
                                format!("{loc}.{verb}.{target} must be a table"),
                            ));
                            continue;
                        };
                        if verb == "remove" {
                            for key in entries.keys().filter(|k| *k != "names") {
                                let mut kp = tp.clone();
                                kp.push(key);
                                errs.push(error_at(
                                    ix,
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
                                errs.push(error_at(
                                    ix,
                                    &tp,
                                    format!("{loc}.remove.{target}.names must be a list of names"),
                                ));
                            }
                        } else if target == "aux" {
                            for (name, val) in entries {
                                if !val.is_str() {
                                    let mut kp = tp.clone();
                                    kp.push(name);
                                    errs.push(error_at(
                                        ix,
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
    let mut errs = exclusive_group_clashes(mods);
    for m in mods {
        let mut app = ModApplication {
            m,
            doc: &mut *doc,
            ix: &mut *ix,
            errs: &mut errs,
            before: None,
        };
        for (verb, targets) in VERBS {
            let Some(vt) = m.table.get(verb).and_then(Value::as_table) else {
                continue;
            };
            for target in targets.iter().copied() {
                let Some(entries) = vt.get(target).and_then(Value::as_table) else {
                    continue;
                };
                app.before = app.doc.get(target).and_then(Value::as_table).cloned();
                if verb == "remove" {
                    app.remove(target, entries);
                } else {
                    app.put(verb, target, entries);
                }
            }
        }
    }
    errs
}

/// Two mods of one group where either is exclusive.
fn exclusive_group_clashes(mods: &[ModDef]) -> Vec<Error> {
    let excl = |m: &ModDef| m.table.get("exclusive").and_then(Value::as_bool) == Some(true);
    let mut errs = Vec::new();
    for (i, a) in mods.iter().enumerate() {
        for b in &mods[..i] {
            let (Some(ga), Some(gb)) = (str_key(&a.table, "group"), str_key(&b.table, "group"))
            else {
                continue;
            };
            if ga == gb && (excl(a) || excl(b)) {
                errs.push(Error::model(format!(
                    "mods '{}' and '{}' are both in the exclusive group '{ga}': apply only one",
                    b.name, a.name
                )));
            }
        }
    }
    errs
}

/// One mod being applied to the document; errors are collected, not returned, so a model
/// with several bad mod entries reports all of them.
struct ModApplication<'a> {
    m: &'a ModDef,
    doc: &'a mut Table,
    ix: &'a mut DocIndex,
    errs: &'a mut Vec<Error>,
    /// The target table as it was before this verb's entries (names are checked against
    /// it, so one verb's entries do not see each other).
    before: Option<Table>,
}

impl ModApplication<'_> {
    /// The mod's table path followed by `extra` (where its entries sit in the file).
    fn path(&self, extra: &[&str]) -> Vec<String> {
        let prefix = self.m.path.iter().flatten().cloned();
        prefix.chain(extra.iter().map(|s| s.to_string())).collect()
    }

    /// An error at `path`, with a line and column when the mod came from the model file.
    fn fail(&mut self, path: &[String], message: String) {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let (line, column) = if self.m.path.is_some() {
            self.ix.key_pos(&refs)
        } else {
            (0, 0)
        };
        self.errs.push(Error::model_at(crate::error::Diagnostic {
            message,
            location: location_of(&refs),
            line,
            column,
        }));
    }

    fn what(&self) -> String {
        format!("mod '{}'", self.m.name)
    }

    fn exists(&self, name: &str) -> bool {
        self.before.as_ref().is_some_and(|t| t.contains_key(name))
    }

    /// " (did you mean ...)" against the target's entries.
    fn suggestion(&self, name: &str) -> String {
        let known: Vec<&str> = self
            .before
            .as_ref()
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        suggestion_suffix(name, known)
    }

    /// `remove.<target>.names = [...]`: every name must exist.
    fn remove(&mut self, target: &str, entries: &Table) {
        let names = entries.get("names").and_then(Value::as_array);
        for n in names.into_iter().flatten().filter_map(Value::as_str) {
            if !self.exists(n) {
                let msg = format!(
                    "{}: remove.{target}: there is no {target} entry '{}' to remove{}",
                    self.what(),
                    shorten(n),
                    self.suggestion(n)
                );
                let at = self.path(&["remove", target, "names"]);
                self.fail(&at, msg);
                continue;
            }
            if let Some(Value::Table(t)) = self.doc.get_mut(target) {
                t.remove(n);
            }
        }
    }

    /// `add`, `replace` or `set` entries of one target table.
    fn put(&mut self, verb: &str, target: &str, entries: &Table) {
        for (name, value) in entries {
            let here = self.path(&[verb, target, name]);
            if let Some(msg) = self.existence_error(verb, target, name) {
                self.fail(&here, msg);
                continue;
            }
            let value = self.with_kept_tags(verb, target, name, value.clone());
            let slot = self
                .doc
                .entry(target.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(t) = slot {
                t.insert(name.clone(), value);
            }
            if self.m.path.is_some() {
                let refs: Vec<&str> = here.iter().map(String::as_str).collect();
                self.ix.alias(&[target, name], &refs);
            } else {
                self.ix.foreign(&[target, name]);
            }
        }
    }

    /// `replace` needs an existing entry, `add` a new one; `set` of a state or parameter an
    /// existing one (other `set`s may do either).
    fn existence_error(&self, verb: &str, target: &str, name: &str) -> Option<String> {
        let must_exist = match verb {
            "replace" => true,
            "add" => false,
            _ if target == "states" || target == "params" => true,
            _ => return None,
        };
        if self.exists(name) == must_exist {
            return None;
        }
        let what = self.what();
        let short = shorten(name);
        Some(if must_exist {
            format!(
                "{what}: {verb}.{target}.{short}: there is no {target} entry '{short}'{}",
                self.suggestion(name)
            )
        } else {
            format!("{what}: add.{target}.{short}: '{short}' already exists (use replace or set)")
        })
    }

    /// A replaced event keeps its tags unless the replacement gives its own.
    fn with_kept_tags(&self, verb: &str, target: &str, name: &str, mut value: Value) -> Value {
        if verb != "replace" || target != "events" {
            return value;
        }
        let old_tags = self
            .before
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(Value::as_table)
            .and_then(|old| old.get("tags"));
        if let (Some(new), Some(tags)) = (value.as_table_mut(), old_tags) {
            if !new.contains_key("tags") {
                new.insert("tags".into(), tags.clone());
            }
        }
        value
    }
}
