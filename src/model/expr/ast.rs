//! Syntax tree of one expression of the model language, as produced by the parser.
//!
//! Positions are 1-based character columns into the expression text, so errors can point at the
//! offending token ("column 7").

/// A span of the source text: 1-based column of the first character and the length in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub col: usize,
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Plus,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// Python `//`: floor division.
    FloorDiv,
    /// Python `%`: floored modulo (result has the sign of the divisor).
    Mod,
    /// `^` and `**`: power, right-associative, binds tighter than unary minus on its left.
    Pow,
    /// `and`: true (1.0) when both operands are non-zero.
    And,
    /// `or`: true (1.0) when either operand is non-zero.
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// One expression node.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A numeric literal (integers are read as f64 as well).
    Number(f64),
    /// `True` / `False` (also `true` / `false`), read as 1.0 / 0.0.
    Bool(bool),
    /// A bare identifier: state, param, aux, constant, `t`, `pi`, `e`, a function argument.
    Name {
        name: String,
        span: Span,
    },
    /// A call `name(args...)`: math function, user function, macro, or lag `lag_x(k)`.
    /// `math.sin(x)` is normalised to the name `sin`.
    Call {
        name: String,
        args: Vec<Expr>,
        span: Span,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// A left-associative chain of two or more operators of one precedence level,
    /// `first op1 e1 op2 e2 ...`, evaluated left to right: `((first op1 e1) op2 e2) ...`.
    /// Kept flat so a long sum is not a deep tree (no recursion proportional to its length).
    Chain {
        first: Box<Expr>,
        rest: Vec<(BinaryOp, Expr)>,
    },
    /// A comparison chain `a < b <= c` meaning `a < b and b <= c`; `operands.len() == ops.len()+1`.
    Compare {
        ops: Vec<CompareOp>,
        operands: Vec<Expr>,
    },
    /// Python conditional expression `then if cond else otherwise`.
    IfElse {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

/// A syntax error: a message and the column where it was detected.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub message: String,
    pub span: Span,
}
