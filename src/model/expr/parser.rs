//! Lexer and recursive-descent parser for model-language expressions (a subset of Python's
//! expression grammar; `^` means power).

use super::ast::*;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    span: Span,
}

const OPS: [&str; 17] = [
    "**", "//", "<=", ">=", "==", "!=", "+", "-", "*", "/", "%", "^", "<", ">", "=", ".", ":",
];

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    // Sized once (an expression of n characters has at most n + 1 tokens, usually n / 2).
    let mut chars: Vec<char> = Vec::with_capacity(text.len());
    chars.extend(text.chars());
    let mut out = Vec::with_capacity(chars.len() / 2 + 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let (tok, len) = if c.is_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            lex_number(&chars, i)?
        } else if c.is_alphabetic() || c == '_' {
            let len = chars[i..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
            (Tok::Ident(chars[i..i + len].iter().collect()), len)
        } else {
            lex_symbol(&chars, i)?
        };
        out.push(Token {
            tok,
            span: Span { col: i + 1, len },
        });
        i += len;
    }
    out.push(Token {
        tok: Tok::End,
        span: Span {
            col: chars.len() + 1,
            len: 1,
        },
    });
    Ok(out)
}

fn lex_error(col: usize, len: usize, message: String) -> ParseError {
    ParseError {
        message,
        span: Span { col, len },
    }
}

/// The number starting at `start` (digits, `.`, `_` separators, an exponent) and its length.
fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let digit_at = |j: usize| chars.get(j).is_some_and(char::is_ascii_digit);
    let mut i = start;
    while chars
        .get(i)
        .is_some_and(|c| c.is_ascii_digit() || *c == '.' || *c == '_')
    {
        i += 1;
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if digit_at(j) {
            i = j;
            while digit_at(i) {
                i += 1;
            }
        }
    }
    let col = start + 1;
    let s: String = chars[start..i].iter().filter(|c| **c != '_').collect();
    let v: f64 = s.parse().map_err(|_| {
        lex_error(
            col,
            i - start,
            format!("invalid number '{s}' at column {col}"),
        )
    })?;
    Ok((Tok::Num(v), i - start))
}

/// A parenthesis, comma or operator at `i`, or the error for a character the language
/// does not have (with what to use instead where there is something).
fn lex_symbol(chars: &[char], i: usize) -> Result<(Tok, usize), ParseError> {
    let c = chars[i];
    let col = i + 1;
    let refuse = |len, message| Err(lex_error(col, len, message));
    match c {
        '(' => return Ok((Tok::LParen, 1)),
        ')' => return Ok((Tok::RParen, 1)),
        ',' => return Ok((Tok::Comma, 1)),
        ';' => {
            return refuse(
                1,
                format!(
                    "';' at column {col} separates statements; an expression cannot contain it"
                ),
            )
        }
        '"' | '\'' => return refuse(1, format!("string literals are not allowed (column {col})")),
        '[' | ']' | '{' | '}' => {
            return refuse(
                1,
                format!("'{c}' at column {col}: lists, subscripts and sets are not supported"),
            )
        }
        '&' | '|' | '~' => {
            return refuse(
                1,
                format!("bitwise operator '{c}' at column {col} is not supported; use and/or/not"),
            )
        }
        _ => {}
    }
    // The next two characters, in a buffer on the stack (this runs for every operator).
    let mut buf = [0u8; 8];
    let mut n = 0;
    for ch in &chars[i..chars.len().min(i + 2)] {
        n += ch.encode_utf8(&mut buf[n..]).len();
    }
    let rest = std::str::from_utf8(&buf[..n]).unwrap_or_default();
    let Some(op) = OPS.iter().find(|o| rest.starts_with(**o)) else {
        return refuse(1, format!("unexpected character '{c}' at column {col}"));
    };
    if rest.starts_with("<<") || rest.starts_with(">>") {
        return refuse(
            2,
            format!("shift operator at column {col} is not supported"),
        );
    }
    Ok((Tok::Op(op), op.len()))
}

fn describe(t: &Token) -> String {
    match &t.tok {
        Tok::Num(_) => "number".to_string(),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Op(o) => format!("'{o}'"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::End => "end of expression".into(),
    }
}

const KEYWORDS: [&str; 10] = [
    "if", "else", "and", "or", "not", "True", "False", "lambda", "is", "in",
];

/// Deepest nesting of parentheses, calls, unary operators, powers and conditionals in one
/// expression. Parsing and compiling recurse once per level, so this bounds the stack they
/// use (a model at the limit loads on a 256 KiB thread).
pub const MAX_NESTING: usize = 100;

/// Longest expression, in characters.
pub const MAX_EXPR_CHARS: usize = 1_000_000;

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

/// Builds `lhs op rhs`, extending a chain of the same precedence level.
fn chain(lhs: Expr, op: BinaryOp, rhs: Expr, first_op: bool) -> Expr {
    if first_op {
        return Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        };
    }
    match lhs {
        Expr::Binary {
            op: op0,
            lhs: l0,
            rhs: r0,
        } => Expr::Chain {
            first: l0,
            rest: vec![(op0, *r0), (op, rhs)],
        },
        Expr::Chain { first, mut rest } => {
            rest.push((op, rhs));
            Expr::Chain { first, rest }
        }
        other => Expr::Binary {
            op,
            lhs: Box::new(other),
            rhs: Box::new(rhs),
        },
    }
}

type PResult = Result<Expr, ParseError>;

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos]
    }
    /// The current token, moved out (its name is not copied) unless it is the end, which
    /// stays for every later look; a step back to report an error puts the token back.
    fn bump(&mut self) -> Token {
        if self.pos + 1 >= self.toks.len() {
            return self.toks[self.pos].clone();
        }
        let slot = &mut self.toks[self.pos];
        let t = Token {
            tok: std::mem::replace(&mut slot.tok, Tok::Comma),
            span: slot.span,
        };
        self.pos += 1;
        t
    }

    /// Steps back over `tok`, the token just bumped, to report it.
    fn unbump(&mut self, tok: Tok) {
        self.pos -= 1;
        self.toks[self.pos].tok = tok;
    }
    /// Enters one nesting level; an error when the expression nests deeper than the limit.
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            let t = self.peek();
            return Err(ParseError {
                message: format!(
                    "the expression nests more than {MAX_NESTING} levels deep (parentheses, \
                     calls, unary operators, powers, conditionals) at column {}; the nesting \
                     limit is {MAX_NESTING}",
                    t.span.col
                ),
                span: t.span,
            });
        }
        Ok(())
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s == kw)
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(&self.peek().tok, Tok::Op(o) if *o == op)
    }
    fn unexpected(&self) -> ParseError {
        let t = self.peek();
        let message = match &t.tok {
            Tok::Op("=") => format!(
                "'=' at column {} is not a comparison; use '==' to compare",
                t.span.col
            ),
            Tok::Ident(k) if k == "lambda" || k == "is" || k == "in" => {
                format!(
                    "'{k}' at column {} is not supported in model expressions",
                    t.span.col
                )
            }
            Tok::Op(":") => format!(
                "':' at column {} is not supported (no ':=' or slices)",
                t.span.col
            ),
            Tok::End => "unexpected end of expression".to_string(),
            _ => format!("unexpected {} at column {}", describe(t), t.span.col),
        };
        ParseError {
            message,
            span: t.span,
        }
    }

    fn expr(&mut self) -> PResult {
        let then = self.or()?;
        if self.is_kw("if") {
            self.bump();
            let cond = self.or()?;
            if !self.is_kw("else") {
                let t = self.peek();
                return Err(ParseError {
                    message: format!(
                        "expected 'else' at column {} to complete 'x if cond else y'",
                        t.span.col
                    ),
                    span: t.span,
                });
            }
            self.bump();
            self.enter()?;
            let otherwise = self.expr()?;
            self.depth -= 1;
            return Ok(Expr::IfElse {
                cond: Box::new(cond),
                then: Box::new(then),
                otherwise: Box::new(otherwise),
            });
        }
        Ok(then)
    }

    fn or(&mut self) -> PResult {
        let mut lhs = self.and()?;
        let mut first = true;
        while self.is_kw("or") {
            self.bump();
            let rhs = self.and()?;
            lhs = chain(lhs, BinaryOp::Or, rhs, first);
            first = false;
        }
        Ok(lhs)
    }

    fn and(&mut self) -> PResult {
        let mut lhs = self.not()?;
        let mut first = true;
        while self.is_kw("and") {
            self.bump();
            let rhs = self.not()?;
            lhs = chain(lhs, BinaryOp::And, rhs, first);
            first = false;
        }
        Ok(lhs)
    }

    fn not(&mut self) -> PResult {
        if self.is_kw("not") {
            self.bump();
            self.enter()?;
            let operand = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Unary {
                op: UnaryOp::Not,
                operand: Box::new(operand),
            });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> PResult {
        let first = self.additive()?;
        let mut ops = Vec::new();
        let mut operands = vec![first];
        loop {
            let op = match &self.peek().tok {
                Tok::Op("<") => CompareOp::Lt,
                Tok::Op("<=") => CompareOp::Le,
                Tok::Op(">") => CompareOp::Gt,
                Tok::Op(">=") => CompareOp::Ge,
                Tok::Op("==") => CompareOp::Eq,
                Tok::Op("!=") => CompareOp::Ne,
                _ => break,
            };
            self.bump();
            ops.push(op);
            operands.push(self.additive()?);
        }
        if ops.is_empty() {
            return Ok(operands.pop().unwrap_or(Expr::Number(0.0)));
        }
        Ok(Expr::Compare { ops, operands })
    }

    fn additive(&mut self) -> PResult {
        let mut lhs = self.multiplicative()?;
        let mut first = true;
        loop {
            let op = if self.is_op("+") {
                BinaryOp::Add
            } else if self.is_op("-") {
                BinaryOp::Sub
            } else {
                break;
            };
            self.bump();
            let rhs = self.multiplicative()?;
            lhs = chain(lhs, op, rhs, first);
            first = false;
        }
        Ok(lhs)
    }

    fn multiplicative(&mut self) -> PResult {
        let mut lhs = self.unary()?;
        let mut first = true;
        loop {
            let op = match &self.peek().tok {
                Tok::Op("*") => BinaryOp::Mul,
                Tok::Op("/") => BinaryOp::Div,
                Tok::Op("//") => BinaryOp::FloorDiv,
                Tok::Op("%") => BinaryOp::Mod,
                _ => break,
            };
            self.bump();
            let rhs = self.unary()?;
            lhs = chain(lhs, op, rhs, first);
            first = false;
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> PResult {
        self.enter()?;
        let r = self.unary_inner();
        self.depth -= 1;
        r
    }

    fn unary_inner(&mut self) -> PResult {
        if self.is_op("-") || self.is_op("+") {
            let neg = self.is_op("-");
            self.bump();
            let operand = self.unary()?;
            return Ok(Expr::Unary {
                op: if neg { UnaryOp::Neg } else { UnaryOp::Plus },
                operand: Box::new(operand),
            });
        }
        self.power()
    }

    fn power(&mut self) -> PResult {
        let base = self.call()?;
        if self.is_op("**") || self.is_op("^") {
            self.bump();
            // The exponent binds right and may carry its own unary sign: 2^-1, a^b^c.
            let exp = self.unary()?;
            return Ok(Expr::Binary {
                op: BinaryOp::Pow,
                lhs: Box::new(base),
                rhs: Box::new(exp),
            });
        }
        Ok(base)
    }

    fn call(&mut self) -> PResult {
        let t = self.bump();
        match t.tok {
            Tok::Num(v) => Ok(Expr::Number(v)),
            Tok::LParen => {
                let e = self.expr()?;
                if !matches!(self.peek().tok, Tok::RParen) {
                    if matches!(self.peek().tok, Tok::End) {
                        return Err(ParseError {
                            message: format!("'(' at column {} is never closed", t.span.col),
                            span: t.span,
                        });
                    }
                    return Err(self.unexpected());
                }
                self.bump();
                Ok(e)
            }
            Tok::Ident(name) => {
                match name.as_str() {
                    "True" | "true" => return Ok(Expr::Bool(true)),
                    "False" | "false" => return Ok(Expr::Bool(false)),
                    _ => {}
                }
                if KEYWORDS.contains(&name.as_str()) {
                    self.unbump(Tok::Ident(name));
                    return Err(self.unexpected());
                }
                let mut name = name;
                let mut span = t.span;
                if self.is_op(".") {
                    let dot = self.bump();
                    let next = self.bump();
                    match (&name[..], next.tok) {
                        ("math", Tok::Ident(f)) => {
                            span.len = next.span.col + next.span.len - span.col;
                            name = f;
                        }
                        _ => {
                            return Err(ParseError {
                                message: format!(
                                    "'.' at column {}: only 'math.NAME' is accepted",
                                    dot.span.col
                                ),
                                span: dot.span,
                            })
                        }
                    }
                }
                if !matches!(self.peek().tok, Tok::LParen) {
                    return Ok(Expr::Name { name, span });
                }
                let open = self.bump();
                let mut args = Vec::new();
                loop {
                    if matches!(self.peek().tok, Tok::RParen) {
                        self.bump();
                        break;
                    }
                    if matches!(self.peek().tok, Tok::End) {
                        return Err(ParseError {
                            message: format!("'(' at column {} is never closed", open.span.col),
                            span: open.span,
                        });
                    }
                    let arg = self.expr()?;
                    if self.is_op("=") {
                        let t = self.peek().clone();
                        return Err(ParseError {
                            message: format!(
                                "keyword arguments are not supported (column {})",
                                t.span.col
                            ),
                            span: t.span,
                        });
                    }
                    args.push(arg);
                    match self.peek().tok {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RParen => {}
                        Tok::End => {
                            return Err(ParseError {
                                message: format!("'(' at column {} is never closed", open.span.col),
                                span: open.span,
                            })
                        }
                        _ => return Err(self.unexpected()),
                    }
                }
                Ok(Expr::Call { name, args, span })
            }
            Tok::End => Err(self.unexpected()),
            other => {
                self.unbump(other);
                Err(self.unexpected())
            }
        }
    }
}

/// Parses one expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError {
            message: "empty expression".into(),
            span: Span { col: 1, len: 1 },
        });
    }
    let n_chars = text.chars().count();
    if n_chars > MAX_EXPR_CHARS {
        return Err(ParseError {
            message: format!(
                "the expression has {n_chars} characters; the length limit is {MAX_EXPR_CHARS}"
            ),
            span: Span { col: 1, len: 1 },
        });
    }
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if !matches!(p.peek().tok, Tok::End) {
        let t = p.peek().clone();
        let message = match &t.tok {
            Tok::Op("=") => format!(
                "'=' at column {} is not a comparison; use '==' to compare",
                t.span.col
            ),
            Tok::RParen => format!("unmatched ')' at column {}", t.span.col),
            Tok::Ident(k) if k == "in" || k == "is" || k == "lambda" => return Err(p.unexpected()),
            _ => format!(
                "unexpected {} after the end of the expression (column {})",
                describe(&t),
                t.span.col
            ),
        };
        return Err(ParseError {
            message,
            span: t.span,
        });
    }
    Ok(e)
}

/// The error message, the expression and a caret line under the offending span. A long
/// expression is shown as a window of at most 100 characters around the span.
pub fn render_error(text: &str, err: &ParseError) -> String {
    let (shown, col) = excerpt(text, err.span.col);
    let pad = " ".repeat(col.saturating_sub(1));
    format!(
        "{}\n    {}\n    {}{}",
        err.message,
        shown,
        pad,
        "^".repeat(err.span.len.clamp(1, 40))
    )
}

/// At most ~100 characters of `text` around 1-based column `col`, on one line, and the
/// column within the excerpt.
pub fn excerpt(text: &str, col: usize) -> (String, usize) {
    let n = text.chars().count();
    if n <= 100 && !text.contains('\n') {
        return (text.to_string(), col);
    }
    let start = col.saturating_sub(50).max(1);
    let body: String = text
        .chars()
        .skip(start - 1)
        .take(100)
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let mut shown = String::new();
    let mut c = col - start + 1;
    if start > 1 {
        shown.push_str("...");
        c += 3;
    }
    shown.push_str(&body);
    if start - 1 + 100 < n {
        shown.push_str("...");
    }
    (shown, c)
}

/// Splits `target = expr` at the first `=` that is not part of `==`, `<=`, `>=` or `!=`.
pub fn split_assignment(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    for i in 0..b.len() {
        if b[i] != b'=' {
            continue;
        }
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        let next = b.get(i + 1).copied().unwrap_or(b' ');
        if next == b'=' || matches!(prev, b'=' | b'<' | b'>' | b'!') {
            continue;
        }
        return Some((line[..i].trim(), &line[i + 1..]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Expr {
        parse(s).unwrap_or_else(|e| panic!("{s}: {}", e.message))
    }
    fn num(x: f64) -> Box<Expr> {
        Box::new(Expr::Number(x))
    }

    #[test]
    fn power_binds_tighter_than_unary_minus_and_is_right_associative() {
        let e = p("-2^2");
        assert_eq!(
            e,
            Expr::Unary {
                op: UnaryOp::Neg,
                operand: Box::new(Expr::Binary {
                    op: BinaryOp::Pow,
                    lhs: num(2.0),
                    rhs: num(2.0)
                })
            }
        );
        let e = p("2^3^2");
        assert_eq!(
            e,
            Expr::Binary {
                op: BinaryOp::Pow,
                lhs: num(2.0),
                rhs: Box::new(Expr::Binary {
                    op: BinaryOp::Pow,
                    lhs: num(3.0),
                    rhs: num(2.0)
                })
            }
        );
        assert!(matches!(
            p("2**-1"),
            Expr::Binary {
                op: BinaryOp::Pow,
                ..
            }
        ));
    }

    #[test]
    fn precedence_of_arithmetic_logic_and_conditionals() {
        assert!(matches!(
            p("a + b * c"),
            Expr::Binary {
                op: BinaryOp::Add,
                ..
            }
        ));
        assert!(matches!(
            p("not a < b"),
            Expr::Unary {
                op: UnaryOp::Not,
                ..
            }
        ));
        assert!(matches!(
            p("a or b and c"),
            Expr::Binary {
                op: BinaryOp::Or,
                ..
            }
        ));
        match p("x if c else y if d else z") {
            Expr::IfElse { otherwise, .. } => assert!(matches!(*otherwise, Expr::IfElse { .. })),
            other => panic!("{other:?}"),
        }
        match p("0 < x <= 1") {
            Expr::Compare { ops, operands } => {
                assert_eq!(ops, vec![CompareOp::Lt, CompareOp::Le]);
                assert_eq!(operands.len(), 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_names_calls_and_spans() {
        assert_eq!(p("1.5e-3"), Expr::Number(1.5e-3));
        assert_eq!(p(".5"), Expr::Number(0.5));
        assert_eq!(p("1_000.5e+2"), Expr::Number(100050.0));
        assert_eq!(p("2E3"), Expr::Number(2000.0));
        match p("x + math.sin(y)") {
            Expr::Binary { rhs, .. } => match *rhs {
                Expr::Call { name, span, args } => {
                    assert_eq!(name, "sin");
                    assert_eq!(span.col, 5);
                    assert_eq!(args.len(), 1);
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match p("  sigam") {
            Expr::Name { span, .. } => assert_eq!(span, Span { col: 3, len: 5 }),
            other => panic!("{other:?}"),
        }
        assert_eq!(p("True"), Expr::Bool(true));
    }

    #[test]
    fn rejections_name_the_problem_and_column() {
        let cases = [
            ("", "empty expression", 1),
            ("x + (y))", "unmatched ')' at column 8", 8),
            ("x = 1", "use '=='", 3),
            ("(x + 1", "'(' at column 1 is never closed", 1),
            ("x; y", "';'", 2),
            ("'a'", "string literals", 1),
            ("a[0]", "lists, subscripts", 2),
            ("a & b", "bitwise", 3),
            ("lambda x: x", "not supported", 1),
            ("x in y", "'in' at column 3", 3),
            ("f(x=1)", "keyword arguments", 4),
            ("x $ y", "unexpected character '$'", 3),
            ("x +", "unexpected end", 4),
            ("x y", "unexpected 'y' after the end", 3),
            ("os.path", "only 'math.NAME'", 3),
            ("x + 1..2", "invalid number '1..2' at column 5", 5),
            ("x << 1", "shift operator at column 3", 3),
            ("a ~ b", "use and/or/not", 3),
        ];
        for (text, msg, col) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.message.contains(msg), "{text}: {}", e.message);
            assert_eq!(e.span.col, col, "{text}: {}", e.message);
        }
    }

    #[test]
    fn render_error_points_at_the_span() {
        let e = parse("x + (y))").unwrap_err();
        let r = render_error("x + (y))", &e);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[1], "    x + (y))");
        assert_eq!(lines[2], "           ^");
    }

    #[test]
    fn split_assignment_skips_comparisons() {
        assert_eq!(split_assignment("v = c"), Some(("v", " c")));
        assert_eq!(split_assignment("x == 1"), None);
        assert_eq!(split_assignment("d(x) = a <= b"), Some(("d(x)", " a <= b")));
    }

    #[test]
    fn a_token_stepped_back_over_is_the_one_reported() {
        // The parser moves tokens out as it reads them; these errors step back to name one.
        let msg = |s: &str| parse(s).unwrap_err();
        let e = msg("x + lambda");
        assert_eq!(
            e.message,
            "'lambda' at column 5 is not supported in model expressions"
        );
        assert_eq!((e.span.col, e.span.len), (5, 6));
        assert_eq!(msg("if").message, "unexpected 'if' at column 1");
        assert_eq!(msg("x + )").message, "unexpected ')' at column 5");
        assert_eq!(
            msg("2 ** ** 3").message,
            msg("2 ** * 3").message.replace("'*'", "'**'")
        );
    }
}
