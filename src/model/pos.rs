//! Positions in a model's TOML text: the line and column of every key and value, and of every
//! character inside a string value (escapes and multi-line strings included), so errors can
//! point into the file rather than into an expression string.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

// Seeded fast hashing: a model of 10^6 states has 2*10^6 paths, each hashed once to build
// and once to look up.
use foldhash::{HashMap, HashMapExt, HashSet};
use toml::de::{DeTable, DeValue};

use crate::error::{Diagnostic, Error};

/// `[a.b].c` for the path `["a", "b", "c"]`; `[a]` for `["a"]`.
pub fn location_of(path: &[&str]) -> String {
    match path {
        [] => String::new(),
        [one] => format!("[{one}]"),
        [tables @ .., last] => format!("[{}].{last}", tables.join(".")),
    }
}

/// A model error at the key `path` of the document `ix` indexes.
pub fn error_at(ix: &DocIndex, path: &[&str], message: String) -> Error {
    let (line, column) = ix.key_pos(path);
    Error::model_at(Diagnostic {
        message,
        location: location_of(path),
        line,
        column,
    })
}

/// Path (keys joined by U+001F) → (key span, value span).
type Spans = HashMap<String, (Range<usize>, Range<usize>)>;

/// Span index of one TOML document, built when a position is first asked for: a load that
/// succeeds asks for none, and a model of 10^6 states has 2*10^6 paths (a few hundred MB of
/// index, and a fifth of the load time, when it was built at every load).
#[derive(Debug, Default)]
pub struct DocIndex {
    text: String,
    line_starts: OnceLock<Vec<usize>>,
    /// Path (keys joined by U+001F) → (key span, value span), byte ranges into `text`.
    spans: OnceLock<Spans>,
    /// Paths whose values were moved here by a mod: positions are looked up at the source.
    aliases: HashMap<String, String>,
    /// Paths whose values came from another text (a mod file): no position in this one.
    foreign: HashSet<String>,
}

/// A path as a lookup key.
pub fn key(path: &[&str]) -> String {
    path.join("\u{1f}")
}

impl DocIndex {
    /// Indexes `text`; an unparsable document gives an index without spans.
    pub fn new(text: &str) -> DocIndex {
        DocIndex {
            text: text.to_string(),
            ..DocIndex::default()
        }
    }

    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            let mut line_starts = vec![0];
            line_starts.extend(self.text.match_indices('\n').map(|(i, _)| i + 1));
            line_starts
        })
    }

    fn spans(&self) -> &Spans {
        self.spans.get_or_init(|| {
            let mut spans = HashMap::new();
            if let Ok(doc) = DeTable::parse(&self.text) {
                index_spans(doc.get_ref(), &mut spans);
            }
            spans
        })
    }

    /// Records that the value at `to` came from `from` (a mod).
    pub fn alias(&mut self, to: &[&str], from: &[&str]) {
        let (to, from) = (key(to), key(from));
        let from = self.aliases.get(&from).cloned().unwrap_or(from);
        self.foreign.remove(&to);
        self.aliases.insert(to, from);
    }

    /// Records that the value at `to` came from another text.
    pub fn foreign(&mut self, to: &[&str]) {
        let k = key(to);
        self.aliases.remove(&k);
        self.foreign.insert(k);
    }

    fn lookup(&self, path: &[&str]) -> Option<&(Range<usize>, Range<usize>)> {
        self.lookup_key(&key(path))
    }

    /// [`DocIndex::lookup`] of a path given as its key.
    fn lookup_key(&self, full_key: &str) -> Option<&(Range<usize>, Range<usize>)> {
        // The key of every prefix of the path is a prefix of the path's key.
        let mut ends: Vec<usize> = full_key.match_indices('\u{1f}').map(|(i, _)| i).collect();
        ends.push(full_key.len());
        let prefix = |n: usize| &full_key[..ends[n - 1]];
        let parts = ends.len();
        if !self.foreign.is_empty() && (1..=parts).any(|n| self.foreign.contains(prefix(n))) {
            return None;
        }
        let spans = self.spans();
        // The longest prefix of the path that is known (aliases first, at every length).
        for n in (1..=parts).rev() {
            let k = prefix(n);
            if let Some(from) = self.aliases.get(k) {
                // The alias's source, with the rest of the path (separator included).
                let full = format!("{from}{}", &full_key[k.len()..]);
                if let Some(s) = spans.get(&full).or_else(|| spans.get(from)) {
                    return Some(s);
                }
            }
            if let Some(s) = spans.get(k) {
                return Some(s);
            }
        }
        None
    }

    /// Byte span of the value at the path whose key is `path_key`.
    pub fn value_span_of_key(&self, path_key: &str) -> Option<Range<usize>> {
        self.lookup_key(path_key).map(|(_, v)| v.clone())
    }

    /// (line, column) of byte offset `at`, both 1-based, the column in characters.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let line_starts = self.line_starts();
        let line = line_starts.partition_point(|&s| s <= at).max(1);
        let start = line_starts[line - 1];
        let col = self
            .text
            .get(start..at)
            .map_or(1, |s| s.chars().count() + 1);
        (line, col)
    }

    /// Position of the key at `path` (or of its closest known ancestor); (0, 0) if unknown.
    pub fn key_pos(&self, path: &[&str]) -> (usize, usize) {
        self.lookup(path)
            .map_or((0, 0), |(k, _)| self.line_col(k.start))
    }

    /// Position of the value at `path`.
    pub fn value_pos(&self, path: &[&str]) -> (usize, usize) {
        self.lookup(path)
            .map_or((0, 0), |(_, v)| self.line_col(v.start))
    }

    /// Byte span of the value at `path`.
    pub fn value_span(&self, path: &[&str]) -> Option<Range<usize>> {
        self.lookup(path).map(|(_, v)| v.clone())
    }

    /// Position of character `char_index` (0-based) of the decoded string value at byte span
    /// `span`, or the value's start when the string cannot be mapped.
    pub fn char_pos(&self, span: &Range<usize>, char_index: usize) -> (usize, usize) {
        let raw = self.text.get(span.clone()).unwrap_or("");
        match string_offsets(raw).and_then(|o| o.get(char_index).copied()) {
            Some(off) => self.line_col(span.start + off),
            None => self.line_col(span.start),
        }
    }
}

/// Every key and array item of `doc` by path.
fn index_spans(doc: &DeTable<'_>, spans: &mut Spans) {
    let mut stack: Vec<(String, &DeTable<'_>)> = vec![(String::new(), doc)];
    let mut arrays: Vec<(String, &[toml::Spanned<DeValue<'_>>])> = Vec::new();
    // Iterative walk: nesting depth of the document cannot exhaust the stack.
    while !stack.is_empty() || !arrays.is_empty() {
        if let Some((prefix, table)) = stack.pop() {
            spans.reserve(table.len());
            for (k, v) in table.iter() {
                let path = join(&prefix, k.get_ref());
                push_value(&path, v.get_ref(), &mut stack, &mut arrays);
                spans.insert(path, (k.span(), v.span()));
            }
        } else if let Some((prefix, items)) = arrays.pop() {
            spans.reserve(items.len());
            for (i, v) in items.iter().enumerate() {
                let path = join(&prefix, &i.to_string());
                push_value(&path, v.get_ref(), &mut stack, &mut arrays);
                spans.insert(path, (v.span(), v.span()));
            }
        }
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}\u{1f}{k}")
    }
}

fn push_value<'a, 'i>(
    path: &str,
    v: &'a DeValue<'i>,
    stack: &mut Vec<(String, &'a DeTable<'i>)>,
    arrays: &mut Vec<(String, &'a [toml::Spanned<DeValue<'i>>])>,
) {
    match v {
        DeValue::Table(t) => stack.push((path.to_string(), t)),
        DeValue::Array(a) => arrays.push((path.to_string(), a.as_ref())),
        _ => {}
    }
}

/// Byte offset (within `raw`, a TOML string literal with its quotes) of every character of
/// the decoded string, plus one past the end; `None` if `raw` is not a string literal.
pub fn string_offsets(raw: &str) -> Option<Vec<usize>> {
    let (delim, literal) = if raw.starts_with("\"\"\"") {
        ("\"\"\"", false)
    } else if raw.starts_with("'''") {
        ("'''", true)
    } else if raw.starts_with('"') {
        ("\"", false)
    } else if raw.starts_with('\'') {
        ("'", true)
    } else {
        return None;
    };
    let multi = delim.len() == 3;
    let end = raw.len().checked_sub(delim.len())?;
    let mut i = delim.len();
    if multi {
        if raw[i..].starts_with("\r\n") {
            i += 2;
        } else if raw[i..].starts_with('\n') {
            i += 1;
        }
    }
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    while i < end {
        let c = raw[i..].chars().next()?;
        if literal || c != '\\' {
            if !(multi && c == '\r' && raw[i + 1..].starts_with('\n')) {
                out.push(i);
            }
            i += c.len_utf8();
            continue;
        }
        // An escape.
        let next = *bytes.get(i + 1)?;
        match next {
            b'u' => {
                out.push(i);
                i += 6;
            }
            b'U' => {
                out.push(i);
                i += 10;
            }
            b'x' => {
                out.push(i);
                i += 4;
            }
            b' ' | b'\t' | b'\r' | b'\n' if multi => {
                // Line-ending backslash: the whitespace up to the next non-blank is dropped.
                i += 1;
                while i < end && matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
            }
            _ => {
                out.push(i);
                i += 2;
            }
        }
    }
    out.push(end);
    Some(out)
}

/// Where an expression string sits in its document: the value's byte span and the
/// character offset of the expression within the decoded string (a line of a block).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub(crate) doc: Option<Arc<DocIndex>>,
    /// Key of the value's path in `doc` (its span is looked up when a position is asked for).
    pub(crate) path_key: Option<String>,
    pub(crate) skip_chars: usize,
}

/// Positions are not part of a spec's identity: two specs that differ only in layout are
/// equal.
impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl Origin {
    /// (line, column) of 1-based column `col` of the expression; (0, 0) when not known.
    pub fn position(&self, col: usize) -> (usize, usize) {
        let span = match (&self.doc, &self.path_key) {
            (Some(doc), Some(k)) => doc.value_span_of_key(k).map(|span| (doc, span)),
            _ => None,
        };
        match span {
            Some((doc, span)) => doc.char_pos(&span, self.skip_chars + col.max(1) - 1),
            None => (0, 0),
        }
    }

    /// The same string value, `chars` characters further in.
    pub fn offset(&self, chars: usize) -> Origin {
        Origin {
            skip_chars: self.skip_chars + chars,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_escapes_and_multiline_strings() {
        assert_eq!(string_offsets("\"ab\"").unwrap(), vec![1, 2, 3]);
        assert_eq!(string_offsets("\"a\\nb\"").unwrap(), vec![1, 2, 4, 5]);
        assert_eq!(string_offsets("'a\\b'").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(string_offsets("\"\"\"\nxy\"\"\"").unwrap(), vec![4, 5, 6]);
        assert_eq!(string_offsets("\"\\u00e9x\"").unwrap(), vec![1, 7, 8]);
    }

    #[test]
    fn line_and_column_of_keys_and_string_characters() {
        let text = "[sim]\n  dtt = 1\n[aux]\na = \"\"\"\nx +\n  y\"\"\"\n";
        let ix = DocIndex::new(text);
        assert_eq!(ix.key_pos(&["sim", "dtt"]), (2, 3));
        let span = ix.value_span(&["aux", "a"]).unwrap();
        // "x +\n  y": character 6 is 'y' on line 6, column 3.
        assert_eq!(ix.char_pos(&span, 6), (6, 3));
        assert_eq!(ix.char_pos(&span, 0), (5, 1));
    }
}
