//! A large TOML document parsed in pieces, giving the table the `toml` crate gives it whole.
//!
//! Why: the `toml` crate lexes a whole document into a token vector and an event vector, then
//! builds a spanned tree, then the owned table — about 0.9 GB of short-lived memory for the
//! 47 MB text of a 10^6-state model, faulted in and cache-cold, so parsing grew faster than
//! the text. Here the long bodies of `[table]` sections (the states and equations of a large
//! model) are cut at statement boundaries into pieces of a few thousand lines, each parsed
//! by the same crate under its own header while its memory is still in cache, and the pieces'
//! entries are moved into the table of the rest of the document.
//!
//! Exactness: the statement boundaries come from `toml_parser`'s lexer (the crate's own), so
//! a cut never falls inside a string, an array or an inline table. The keys a piece defines
//! are relative to its section's table; when no two pieces (or a piece and the rest of the
//! document) define the same first key, and no other header names a table inside the
//! section, the pieces' union in document order is the table the whole-document parse
//! builds, in the same order. Anything else — a repeated key, a sub-table header, an array of
//! tables, an unbalanced bracket, a piece that does not parse — gives `None`, and the caller
//! parses the document whole (which also words the errors).

use toml::{Table, Value};
use toml_parser::lexer::TokenKind;

/// Below this size the document is parsed whole (the pieces would save nothing).
const MIN_DOCUMENT_BYTES: usize = 1 << 20;
/// Longer header paths leave the document to the whole parse (keeps the nesting check linear).
const MAX_HEADER_KEYS: usize = 32;
/// Statements per piece: a piece's tokens, events and trees stay within the caches.
const STATEMENTS_PER_PIECE: usize = 2048;

/// The document's table, parsed in pieces; `None` when the document is small, when its large
/// sections cannot be cut exactly, or when it has an error (the caller parses it whole).
pub(crate) fn parse(text: &str) -> Option<Table> {
    parse_from(text, MIN_DOCUMENT_BYTES, &|_| false).map(|d| d.table)
}

/// [`parse`], with the entries of the pieces of the sections `bulk` names left out of the
/// table and listed in [`Document::bulk`] instead: no table of a million entries to hash
/// them into, but also no check for a key repeated between the pieces — the reader of a
/// bulk section must refuse repeated keys itself (and then read the document whole, which
/// words the error).
pub(crate) fn parse_with_bulk(text: &str, bulk: &dyn Fn(&[String]) -> bool) -> Option<Document> {
    parse_from(text, MIN_DOCUMENT_BYTES, bulk)
}

/// A document parsed in pieces.
#[derive(Default)]
pub(crate) struct Document {
    pub table: Table,
    pub bulk: Bulk,
}

/// The entries of large sections kept out of the table, in document order after the
/// entries the table has for the same section.
#[derive(Default)]
pub(crate) struct Bulk(Vec<(Vec<String>, Entries)>);

/// A section's entries in document order.
pub(crate) type Entries = Vec<(String, Value)>;

impl Bulk {
    /// Takes the bulk entries of the section at `path` (none if it has none).
    pub fn take(&mut self, path: &[&str]) -> Entries {
        self.0
            .iter_mut()
            .find(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
            .map_or_else(Vec::new, |(_, entries)| std::mem::take(entries))
    }

    /// The bulk entries of the section at `path` (none if it has none).
    #[cfg(test)]
    pub fn get(&self, path: &[&str]) -> &[(String, Value)] {
        self.0
            .iter()
            .find(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
            .map_or(&[], |(_, entries)| entries.as_slice())
    }
}

fn parse_from(text: &str, min_bytes: usize, bulk: &dyn Fn(&[String]) -> bool) -> Option<Document> {
    if text.len() < min_bytes {
        return None;
    }
    let layout = Layout::scan(text)?;
    if layout.pieces.is_empty() {
        return None;
    }
    let mut doc = Document {
        table: layout.rest(text).parse().ok()?,
        bulk: Bulk::default(),
    };
    let mut next = 0;
    while next < layout.pieces.len() {
        let section = &layout.sections[layout.pieces[next].section];
        let count = layout.pieces[next..]
            .iter()
            .take_while(|p| p.section == layout.pieces[next].section)
            .count();
        let pieces = &layout.pieces[next..next + count];
        if bulk(&section.path) {
            let entries = section_entries(section, pieces, text)?;
            doc.bulk.0.push((section.path.clone(), entries));
        } else {
            merge_section(&mut doc.table, section, pieces, text)?;
        }
        next += count;
    }
    Some(doc)
}

/// A `[table]` header line of the document.
struct Section {
    /// The header line as written (without its newline), e.g. `[equations.rhs]`.
    header: std::ops::Range<usize>,
    /// The header's key path, e.g. `["equations", "rhs"]`.
    path: Vec<String>,
}

/// A run of whole statements of one section's body, cut out of the document.
struct Piece {
    section: usize,
    bytes: std::ops::Range<usize>,
    lines: usize,
}

struct Layout {
    sections: Vec<Section>,
    pieces: Vec<Piece>,
}

/// The pieces, cut as the lines go by.
#[derive(Default)]
struct Cutter {
    sections: Vec<Section>,
    pieces: Vec<Piece>,
    /// The current section's body may be cut: a `[table]` header (not `[[array]]`, not the
    /// root, which every header reaches into).
    cuttable: bool,
    /// Lines of the current section's body so far.
    lines: usize,
    /// Where the open piece starts, and its lines so far.
    open: Option<(usize, usize)>,
}

impl Cutter {
    fn header(&mut self, text: &str, line: std::ops::Range<usize>) -> Option<()> {
        self.end_section(line.start);
        let header = text[line.clone()].trim_end_matches(['\n', '\r']);
        let path = header_path(header).filter(|p| p.len() <= MAX_HEADER_KEYS)?;
        self.cuttable = !header.trim_start().starts_with("[[");
        self.sections.push(Section {
            header: line.start..line.start + header.len(),
            path,
        });
        Some(())
    }

    fn body_line(&mut self, line: std::ops::Range<usize>) {
        self.lines += 1;
        if !self.cuttable || self.lines <= STATEMENTS_PER_PIECE {
            return;
        }
        if (self.lines - 1) % STATEMENTS_PER_PIECE == 0 {
            self.close(line.start);
            self.open = Some((line.start, 0));
        }
        if let Some((_, lines)) = &mut self.open {
            *lines += 1;
        }
    }

    fn end_section(&mut self, at: usize) {
        self.close(at);
        self.lines = 0;
    }

    fn close(&mut self, at: usize) {
        if let Some((start, lines)) = self.open.take() {
            self.pieces.push(Piece {
                section: self.sections.len() - 1,
                bytes: start..at,
                lines,
            });
        }
    }

    /// A section whose table another header reaches into (`[a]` and `[a.b]`, or an array of
    /// tables under it) keeps its body: the sub-table's key sits between the body's keys in
    /// document order.
    fn finish(mut self) -> Layout {
        // Every proper prefix of every header's path (paths are at most MAX_HEADER_KEYS
        // long, so this is linear in the number of headers).
        let prefixes: std::collections::HashSet<&[String]> = self
            .sections
            .iter()
            .flat_map(|s| (0..s.path.len()).map(|k| &s.path[..k]))
            .collect();
        let nested: Vec<bool> = self
            .sections
            .iter()
            .map(|s| prefixes.contains(s.path.as_slice()))
            .collect();
        self.pieces.retain(|p| !nested[p.section]);
        Layout {
            sections: self.sections,
            pieces: self.pieces,
        }
    }
}

impl Layout {
    /// Finds the statement boundaries and cuts the long section bodies into pieces (the first
    /// piece's worth of each body stays with the rest of the document).
    fn scan(text: &str) -> Option<Layout> {
        let mut cut = Cutter::default();
        let mut depth: i64 = 0;
        let mut line_start = 0usize;
        let mut first: Option<TokenKind> = None;
        for token in toml_parser::Source::new(text).lex() {
            let kind = token.kind();
            match kind {
                TokenKind::Whitespace => continue,
                TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                    depth -= 1;
                    if depth < 0 {
                        return None;
                    }
                }
                TokenKind::Newline | TokenKind::Eof if depth == 0 => {
                    let end = token.span().end().max(line_start);
                    let line = line_start..end;
                    if first == Some(TokenKind::LeftSquareBracket) {
                        cut.header(text, line)?;
                    } else {
                        cut.body_line(line);
                    }
                    if kind == TokenKind::Eof {
                        cut.end_section(text.len());
                        break;
                    }
                    line_start = end;
                    first = None;
                    continue;
                }
                TokenKind::Eof => return None,
                _ => {}
            }
            if first.is_none() && depth == 0 {
                first = Some(kind);
            }
            if matches!(
                kind,
                TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket
            ) {
                depth += 1;
            }
        }
        if depth != 0 {
            return None;
        }
        Some(cut.finish())
    }

    /// The document without its pieces.
    fn rest(&self, text: &str) -> String {
        let cut: usize = self.pieces.iter().map(|p| p.bytes.len()).sum();
        let mut rest = String::with_capacity(text.len() - cut);
        let mut at = 0;
        for p in &self.pieces {
            rest.push_str(&text[at..p.bytes.start]);
            at = p.bytes.end;
        }
        rest.push_str(&text[at..]);
        rest
    }
}

/// The key path of a `[table]` (or `[[array]]`) header line, read by the `toml` crate.
fn header_path(header: &str) -> Option<Vec<String>> {
    let line = header.trim_start();
    let mut t: Table = match line.strip_prefix("[[") {
        Some(_) => line
            .replacen("[[", "[", 1)
            .replacen("]]", "]", 1)
            .parse()
            .ok()?,
        None => line.parse().ok()?,
    };
    let mut path = Vec::new();
    loop {
        let mut entries = std::mem::take(&mut t).into_iter();
        let (k, v) = match (entries.next(), entries.next()) {
            (None, _) => return Some(path),
            (Some(kv), None) => kv,
            _ => return None,
        };
        path.push(k);
        t = match v {
            Value::Table(inner) => inner,
            _ => return None,
        };
    }
}

/// Parses each piece of one section under the section's header and gives its entries to
/// `each` in document order; `None` if a piece does not parse or `each` refuses an entry.
fn for_each_entry(
    section: &Section,
    pieces: &[Piece],
    text: &str,
    mut each: impl FnMut(String, Value) -> Option<()>,
) -> Option<()> {
    let header = &text[section.header.clone()];
    let mut piece_text = String::new();
    for p in pieces {
        piece_text.clear();
        piece_text.push_str(header);
        piece_text.push('\n');
        piece_text.push_str(&text[p.bytes.clone()]);
        let mut t: Table = piece_text.parse().ok()?;
        for (k, v) in take_table_at(&mut t, &section.path)? {
            each(k, v)?;
        }
    }
    Some(())
}

/// Sized once for every line of the pieces (an entry per line at most), so the collection
/// is not regrown; each piece is moved in while its memory is still in cache.
fn piece_lines(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.lines).sum()
}

/// Moves the entries of one section's pieces into its table in `doc`, in document order;
/// `None` if a piece does not parse or defines a key the table already has.
fn merge_section(doc: &mut Table, section: &Section, pieces: &[Piece], text: &str) -> Option<()> {
    let target = table_at(doc, &section.path)?;
    let mut merged = Table::with_capacity(target.len() + piece_lines(pieces));
    for (k, v) in std::mem::take(target) {
        merged.insert(k, v);
    }
    for_each_entry(section, pieces, text, |k, v| {
        merged.insert(k, v).is_none().then_some(())
    })?;
    *table_at(doc, &section.path)? = merged;
    Some(())
}

/// The entries of one section's pieces, in document order (repeated keys not checked).
fn section_entries(
    section: &Section,
    pieces: &[Piece],
    text: &str,
) -> Option<Vec<(String, Value)>> {
    let mut entries = Vec::with_capacity(piece_lines(pieces));
    for_each_entry(section, pieces, text, |k, v| {
        entries.push((k, v));
        Some(())
    })?;
    Some(entries)
}

fn table_at<'t>(doc: &'t mut Table, path: &[String]) -> Option<&'t mut Table> {
    let mut t = doc;
    for k in path {
        t = t.get_mut(k)?.as_table_mut()?;
    }
    Some(t)
}

fn take_table_at(doc: &mut Table, path: &[String]) -> Option<Table> {
    table_at(doc, path).map(std::mem::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Table {
        text.parse().unwrap()
    }

    fn body(n: usize, f: impl Fn(usize) -> String) -> String {
        (0..n).map(f).collect()
    }

    #[test]
    fn a_large_model_parses_in_pieces_to_the_whole_document_table() {
        let n = 30_000;
        let mut text = String::from("# chain\n[model]\ntype = \"ode\"\n\n[states]\n");
        text += &body(n, |i| format!("x{i} = {}.5 # state {i}\n", i % 7));
        text += "\n[params]\nk = 0.5\n\n[equations.rhs]\n";
        text += &body(n, |i| {
            if i % 1000 == 3 {
                format!("x{i} = \"\"\"k*(\n[x{i}]\n- x{i})\"\"\"\n\n")
            } else if i % 1000 == 5 {
                format!("x{i} = [\n  1,\n  2, # c\n]\n")
            } else {
                format!("x{i} = \"k*(x{} - x{i})\"\n", i.max(1) - 1)
            }
        });
        assert!(text.len() > MIN_DOCUMENT_BYTES);
        let layout = Layout::scan(&text).unwrap();
        assert!(layout.pieces.len() > 20, "{} pieces", layout.pieces.len());
        let pieces = parse(&text).expect("parsed in pieces");
        // Debug output lists every table's entries in their order (`==` ignores order).
        assert_eq!(format!("{pieces:?}"), format!("{:?}", whole(&text)));
    }

    #[test]
    fn documents_the_pieces_cannot_reproduce_are_left_to_the_whole_parse() {
        let n = 20_000;
        let states = body(n, |i| format!("x{i} = 1.0\n"));
        let cases = [
            // A key repeated across pieces: the whole parse reports it.
            format!("[states]\n{states}x5 = 2.0\n"),
            // Dotted keys meeting across pieces.
            format!("[states]\na.b = 1\n{states}a.c = 2\n"),
            // A sub-table header after the body.
            format!("[states]\n{states}[states.more]\ny = 1\n"),
            // An array of tables.
            format!("[[states]]\n{states}"),
            // A syntax error far into the body.
            format!("[states]\n{states}x = = 1\n{states}"),
            // An unbalanced bracket.
            format!("[states]\n{states}]\n"),
        ];
        for text in &cases {
            assert!(
                parse_from(text, 0, &|_| false).is_none(),
                "{}",
                &text[text.len() - 40..]
            );
        }
        // Without the cases' problem, the same body is cut into pieces.
        assert!(parse_from(&format!("[states]\n{states}"), 0, &|_| false).is_some());
        // The ones that are valid TOML still parse whole.
        assert!(cases[1].parse::<Table>().is_ok());
        assert!(cases[2].parse::<Table>().is_ok());
        assert!(cases[3].parse::<Table>().is_ok());
        assert!(cases[0].parse::<Table>().is_err());
    }

    #[test]
    fn many_headers_and_deep_headers_are_handled_in_linear_time() {
        // 10^5 sections (a quadratic nesting check would take minutes), one long body.
        let mut text: String = (0..100_000).map(|i| format!("[s{i}]\nv = {i}\n")).collect();
        text += "[long]\n";
        text += &body(5_000, |i| format!("x{i} = {i}\n"));
        let started = std::time::Instant::now();
        let pieces = parse_from(&text, 0, &|_| false)
            .expect("parsed in pieces")
            .table;
        assert_eq!(format!("{pieces:?}"), format!("{:?}", whole(&text)));
        assert!(started.elapsed().as_secs() < 20);
        // A header path past the limit: read whole.
        let deep = vec!["a"; MAX_HEADER_KEYS + 1].join(".");
        let text = format!("[{deep}]\n{}", body(5_000, |i| format!("x{i} = {i}\n")));
        assert!(parse_from(&text, 0, &|_| false).is_none());
    }

    #[test]
    fn small_documents_are_parsed_whole() {
        assert!(parse("[states]\nx = 1.0\n").is_none());
    }
}
