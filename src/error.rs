//! One error type for the whole library. Every error carries a kind (which the C ABI maps to a
//! status code) and a message written for the person who has to fix the input.

use std::fmt;

/// What went wrong, coarsely. The C ABI maps each kind to one `DynlibStatus` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An argument is out of range, inconsistent or refused in this situation.
    InvalidArgument,
    /// The model text or model definition is invalid.
    Model,
    /// A state, parameter, variable, snapshot, segment or stepper name is not known.
    UnknownName,
    /// A name that must be unique is already taken.
    DuplicateName,
    /// A snapshot's pins do not match this session.
    Incompatible,
    /// No recorded results exist (no run yet, or history was cleared).
    NoResults,
    /// Reading or writing a file failed.
    Io,
    /// A snapshot file or buffer is malformed.
    CorruptSnapshot,
    /// The stepper could not produce an acceptable step, a callback failed, or max_steps ran out.
    StepFailed,
    /// A state, time or step size became NaN or infinite.
    NonFinite,
    /// A bug: an invariant of the library did not hold.
    Internal,
}

/// The library's error: a kind and a human-readable message; model errors also carry every
/// problem found as structured [`Diagnostic`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    diagnostics: Vec<Diagnostic>,
}

/// One problem in a model file, with its place in the TOML document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// What is wrong, starting with the TOML location (`[sim].dtt: ...`).
    pub message: String,
    /// The TOML location, e.g. `[equations.rhs].x`, `[sim].dtt` (empty when not known).
    pub location: String,
    /// 1-based line and column (in characters) in the model text; 0 when not known.
    pub line: usize,
    pub column: usize,
}

impl Diagnostic {
    /// `line L, column C: message` (just the message when the position is not known).
    pub fn render(&self) -> String {
        if self.line > 0 {
            format!(
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        } else {
            self.message.clone()
        }
    }
}

/// Most problems one model error lists.
pub const MAX_DIAGNOSTICS: usize = 20;

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }
    /// A model error at one place.
    pub fn model_at(d: Diagnostic) -> Self {
        Error {
            kind: ErrorKind::Model,
            message: d.render(),
            diagnostics: vec![d],
        }
    }
    /// A model error listing several problems (at most [`MAX_DIAGNOSTICS`] are kept; the
    /// message says how many were left out).
    pub fn from_diagnostics(mut list: Vec<Diagnostic>) -> Self {
        let total = list.len();
        list.truncate(MAX_DIAGNOSTICS);
        let message = match list.as_slice() {
            [one] => one.render(),
            _ => {
                let mut m = format!("{total} errors in the model:");
                for d in &list {
                    m.push_str("\n- ");
                    m.push_str(&d.render().replace('\n', "\n  "));
                }
                if total > list.len() {
                    m.push_str(&format!(
                        "\n(and {} more not listed; the first {MAX_DIAGNOSTICS} are shown)",
                        total - list.len()
                    ));
                }
                m
            }
        };
        Error {
            kind: ErrorKind::Model,
            message,
            diagnostics: list,
        }
    }
    /// Every problem this error lists; a model error without positions gives one entry with
    /// line 0.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        if self.diagnostics.is_empty() {
            vec![Diagnostic {
                message: self.message.clone(),
                location: String::new(),
                line: 0,
                column: 0,
            }]
        } else {
            self.diagnostics.clone()
        }
    }
    /// The structured diagnostics only (empty when the error has none).
    pub fn positioned(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with context, keeping the kind.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Model, message)
    }
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnknownName, message)
    }
    pub fn duplicate(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DuplicateName, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CorruptSnapshot, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Longest name (in characters) a did-you-mean search looks at: longer names get no
/// suggestion, so a huge typo costs nothing to refuse.
pub const SUGGEST_MAX_LEN: usize = 64;

/// Largest edit distance a suggestion may have.
pub const SUGGEST_MAX_DISTANCE: usize = 2;

/// Levenshtein distance, case-insensitive; used for did-you-mean suggestions. Quadratic: call
/// it on short strings only (see [`bounded_edit_distance`]).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The edit distance when it is at most `max` and both strings have at most
/// [`SUGGEST_MAX_LEN`] characters; `None` otherwise. Costs at most O(SUGGEST_MAX_LEN²).
pub fn bounded_edit_distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let (la, lb) = (a.chars().count(), b.chars().count());
    if la > SUGGEST_MAX_LEN || lb > SUGGEST_MAX_LEN || la.abs_diff(lb) > max {
        return None;
    }
    Some(edit_distance(a, b)).filter(|d| *d <= max)
}

/// The closest candidate within edit distance 2 (first one wins ties), if any. Names longer
/// than [`SUGGEST_MAX_LEN`] characters get no suggestion, and at most 10,000 candidates are
/// looked at, so the search is bounded whatever the input.
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    if name.len() > 4 * SUGGEST_MAX_LEN || name.chars().count() > SUGGEST_MAX_LEN {
        return None;
    }
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates.into_iter().take(10_000) {
        if let Some(d) = bounded_edit_distance(name, c, SUGGEST_MAX_DISTANCE) {
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, c));
            }
        }
    }
    best.map(|(_, c)| c)
}

/// A name cut to at most 80 characters for an error message (`…` marks the cut).
pub fn shorten(name: &str) -> String {
    if name.chars().count() <= 80 {
        name.to_string()
    } else {
        let head: String = name.chars().take(77).collect();
        format!("{head}...")
    }
}

/// " (did you mean 'x'?)" or "".
pub fn suggestion_suffix<'a, I>(name: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match did_you_mean(name, candidates) {
        Some(s) => format!(" (did you mean '{s}'?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("Ix", "I"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("sigma", "SIGMA"), 0);
    }

    #[test]
    fn suggestion_picks_closest_within_two() {
        assert_eq!(
            did_you_mean("sigam", ["rho", "sigma", "beta"]),
            Some("sigma")
        );
        assert_eq!(did_you_mean("zzzzz", ["rho", "sigma"]), None);
        assert_eq!(suggestion_suffix("Ix", ["I", "a"]), " (did you mean 'I'?)");
    }

    #[test]
    fn suggestions_are_bounded() {
        let long = "a".repeat(150_000);
        let t = std::time::Instant::now();
        assert_eq!(did_you_mean(&long, [long.as_str(), "a"]), None);
        assert!(t.elapsed().as_secs_f64() < 0.5);
        assert_eq!(bounded_edit_distance("abc", "abcdef", 2), None);
        assert_eq!(bounded_edit_distance("abc", "abd", 2), Some(1));
        assert_eq!(shorten(&long).chars().count(), 80);
    }
}
