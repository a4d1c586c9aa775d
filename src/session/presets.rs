//! The preset bank of a session and preset files (`dynlib-presets-v1`).
//!
//! A preset is a named set of parameter and state values. A session's bank starts with the
//! model's `[presets.*]` tables; presets can be added from the current session or from given
//! values, loaded from and saved to preset files, listed by glob and applied like `assign`.
//!
//! A preset file is TOML:
//!
//! ```toml
//! [__presets__]
//! schema = "dynlib-presets-v1"
//!
//! [presets.bursting.params]
//! a = 0.02
//! [presets.bursting.states]
//! v = -65.0
//! ```
//!
//! A file without the `[__presets__]` table is read for its `[presets.*]` tables only, so a
//! model file (also a parameters-only model) serves as a preset file.

use std::path::Path;

use crate::error::{suggestion_suffix, Error, Result};

/// The schema string of preset files.
pub const PRESETS_SCHEMA: &str = "dynlib-presets-v1";

/// A named set of parameter and state values, in the model's declaration order.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: String,
    pub params: Vec<(String, f64)>,
    pub states: Vec<(String, f64)>,
}

/// What `load_presets` does with a name that is already in the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse the whole load (nothing changes).
    Error,
    /// Keep the bank's preset, skip the file's.
    Keep,
    /// Replace the bank's preset with the file's.
    Replace,
}

impl OnConflict {
    pub fn parse(s: &str) -> Result<OnConflict> {
        match s {
            "error" => Ok(OnConflict::Error),
            "keep" => Ok(OnConflict::Keep),
            "replace" => Ok(OnConflict::Replace),
            other => Err(Error::invalid(format!(
                "on_conflict '{other}' is not one of error, keep, replace{}",
                suggestion_suffix(other, ["error", "keep", "replace"])
            ))),
        }
    }
}

/// How `save_presets` treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveMode {
    /// Keep the file's presets and add the saved ones; a name already in the file is an error.
    Append,
    /// Write a new file holding only the saved presets.
    Overwrite,
    /// Keep the file's other presets; a name in both is replaced in place.
    Replace,
}

impl SaveMode {
    pub fn parse(s: &str) -> Result<SaveMode> {
        match s {
            "append" => Ok(SaveMode::Append),
            "overwrite" => Ok(SaveMode::Overwrite),
            "replace" => Ok(SaveMode::Replace),
            other => Err(Error::invalid(format!(
                "save mode '{other}' is not one of append, overwrite, replace{}",
                suggestion_suffix(other, ["append", "overwrite", "replace"])
            ))),
        }
    }
}

/// Glob match: `*` any run of characters, `?` one character, `[abc]`/`[a-z]`/`[!a]` a class;
/// everything else literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p[0] == '['; returns (matched, length of the class in p)
        let mut i = 1;
        let negate = i < p.len() && (p[i] == '!' || p[i] == '^');
        if negate {
            i += 1;
        }
        let start = i;
        let mut hit = false;
        while i < p.len() && (p[i] != ']' || i == start) {
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                hit |= p[i] <= c && c <= p[i + 2];
                i += 3;
            } else {
                hit |= p[i] == c;
                i += 1;
            }
        }
        (i < p.len()).then_some((hit != negate, i + 1))
    }
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|k| go(&p[1..], &s[k..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('[') => match (s.first(), class(p, s.first().copied().unwrap_or('\0'))) {
                (Some(_), Some((true, n))) => go(&p[n..], &s[1..]),
                (Some(_), Some((false, _))) | (None, Some(_)) => false,
                (c, None) => c == Some(&'[') && go(&p[1..], &s[1..]),
            },
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(&p, &s)
}

/// Whether a pattern has glob characters (otherwise it names one preset exactly).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Checks a preset name: non-empty, no glob characters, no control characters.
pub fn check_preset_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid("preset name cannot be empty"));
    }
    if is_glob(name) || name.contains(']') || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "preset name '{}' may not contain glob characters (* ? [ ]) or control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// The presets of a preset file, in file order, with values as written (names unchecked).
pub fn read_preset_file(path: &Path) -> Result<Vec<Preset>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read preset file '{}': {e}", path.display())))?;
    parse_presets(&text).map_err(|e| e.context(format!("preset file '{}'", path.display())))
}

/// Parses preset-file text (see the module documentation).
pub fn parse_presets(text: &str) -> Result<Vec<Preset>> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::invalid(format!("not valid TOML: {}", e.message())))?;
    if let Some(header) = doc.get("__presets__") {
        let t = header
            .as_table()
            .ok_or_else(|| Error::invalid("[__presets__] must be a table"))?;
        match t.get("schema").and_then(|v| v.as_str()) {
            Some(PRESETS_SCHEMA) => {}
            Some(other) => {
                return Err(Error::invalid(format!(
                    "unsupported preset schema '{other}'; this library reads '{PRESETS_SCHEMA}'"
                )))
            }
            None => {
                return Err(Error::invalid(format!(
                    "[__presets__] needs schema = \"{PRESETS_SCHEMA}\""
                )))
            }
        }
        if let Some(k) = doc.keys().find(|k| *k != "__presets__" && *k != "presets") {
            return Err(Error::invalid(format!(
                "unexpected top-level key '{k}' in a preset file (only [__presets__] and \
                 [presets.*])"
            )));
        }
    }
    let mut out = Vec::new();
    let Some(presets) = doc.get("presets") else {
        if doc.contains_key("__presets__") {
            return Ok(out);
        }
        return Err(Error::invalid(
            "no [presets.*] tables (and no [__presets__] header): not a preset file",
        ));
    };
    let presets = presets
        .as_table()
        .ok_or_else(|| Error::invalid("[presets] must be a table of presets"))?;
    for (name, v) in presets {
        let loc = format!("[presets.{name}]");
        check_preset_name(name).map_err(|e| e.context(&loc))?;
        let t = v
            .as_table()
            .ok_or_else(|| Error::invalid(format!("{loc} must be a table")))?;
        if let Some(k) = t.keys().find(|k| *k != "params" && *k != "states") {
            return Err(Error::invalid(format!(
                "{loc}: unknown key '{k}'{}; a preset has 'params' and 'states'",
                suggestion_suffix(k, ["params", "states"])
            )));
        }
        let read = |key: &str| -> Result<Vec<(String, f64)>> {
            match t.get(key) {
                None => Ok(Vec::new()),
                Some(toml::Value::Table(vals)) => vals
                    .iter()
                    .map(|(k, v)| {
                        let x = match v {
                            toml::Value::Float(f) => *f,
                            toml::Value::Integer(i) => *i as f64,
                            other => {
                                return Err(Error::invalid(format!(
                                    "{loc}.{key}.{k} must be a number, found {}",
                                    other.type_str()
                                )))
                            }
                        };
                        Ok((k.clone(), x))
                    })
                    .collect(),
                Some(other) => Err(Error::invalid(format!(
                    "{loc}.{key} must be a table, found {}",
                    other.type_str()
                ))),
            }
        };
        let p = Preset {
            name: name.clone(),
            params: read("params")?,
            states: read("states")?,
        };
        if p.params.is_empty() && p.states.is_empty() {
            return Err(Error::invalid(format!("{loc} is empty")));
        }
        out.push(p);
    }
    Ok(out)
}

/// Preset-file text for `presets` (values written so that they read back bit-exactly).
pub fn format_presets(presets: &[Preset]) -> String {
    fn key(k: &str) -> String {
        let bare = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if bare {
            k.to_string()
        } else {
            toml::Value::String(k.to_string()).to_string()
        }
    }
    fn num(v: f64) -> String {
        // TOML floats: Rust's shortest round-trip form, with a decimal point or exponent.
        if v.is_nan() {
            "nan".into()
        } else if v.is_infinite() {
            if v > 0.0 { "inf" } else { "-inf" }.into()
        } else {
            let s = format!("{v:?}");
            if s.contains(['.', 'e', 'E']) {
                s
            } else {
                format!("{s}.0")
            }
        }
    }
    let mut s = format!("[__presets__]\nschema = \"{PRESETS_SCHEMA}\"\n");
    for p in presets {
        for (part, vals) in [("params", &p.params), ("states", &p.states)] {
            if vals.is_empty() {
                continue;
            }
            s.push_str(&format!("\n[presets.{}.{part}]\n", key(&p.name)));
            for (k, v) in vals {
                s.push_str(&format!("{} = {}\n", key(k), num(*v)));
            }
        }
        if p.params.is_empty() && p.states.is_empty() {
            s.push_str(&format!("\n[presets.{}]\n", key(&p.name)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "abc"));
        assert!(glob_match("a*", "abc"));
        assert!(!glob_match("b*", "abc"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[ab]*", "bx"));
        assert!(!glob_match("[!ab]*", "bx"));
        assert!(glob_match("x[0-9]", "x7"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
    }

    #[test]
    fn round_trip() {
        let p = vec![Preset {
            name: "b-1".into(),
            params: vec![("a".into(), 0.1 + 0.2), ("I".into(), 10.0)],
            states: vec![("v".into(), -65.0)],
        }];
        let text = format_presets(&p);
        assert_eq!(parse_presets(&text).unwrap(), p);
    }

    #[test]
    fn schema_checked() {
        let e = parse_presets("[__presets__]\nschema = \"dynlib-presets-v9\"\n").unwrap_err();
        assert!(e.message().contains("unsupported preset schema"), "{e}");
        assert!(parse_presets("[model]\ntype='ode'\n").is_err());
    }
}
