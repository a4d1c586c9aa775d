//! The compiled form of model expressions: a flat, typed program in SSA form.
//!
//! Instruction `i` writes register `i` and reads only registers `< i`, so a program is already
//! in dependency order and needs no register allocation. Evaluation is one pass over a slice
//! with a caller-provided register file: no allocation, no name lookup, no tree walking. The
//! same instruction list is what a native code generator lowers, and every math function is
//! called through [`call1`] / [`call2`] so both paths give identical bits.

/// Index of a register (= index of the instruction that writes it).
pub type Reg = u32;

/// One-argument functions and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fn1 {
    Neg,
    /// Logical not: 1.0 if the operand is 0.0, else 0.0.
    Not,
    Abs,
    Exp,
    Expm1,
    Ln,
    Log10,
    Log2,
    Log1p,
    Sqrt,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Floor,
    Ceil,
    Trunc,
    /// Round half to even, like Python's `round`.
    Round,
    Erf,
    Erfc,
    /// −1, 0 or 1 (0 for NaN).
    Sign,
}

/// Two-argument functions and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fn2 {
    Add,
    Sub,
    Mul,
    Div,
    /// Python `//`.
    FloorDiv,
    /// Python `%`: floored modulo.
    Mod,
    Pow,
    Atan2,
    Hypot,
    Copysign,
    Min,
    Max,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// Python `and`: the second operand when the first is true, else the first.
    And,
    /// Python `or`: the first operand when it is true, else the second.
    Or,
}

/// One instruction. Operands are registers written earlier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Const(f64),
    /// The time argument (the stage time inside a Runge–Kutta step).
    Time,
    State(u32),
    Param(u32),
    /// `lag_x(k)`: the committed value of state `state`, `k` committed steps back.
    Lag {
        state: u32,
        k: u32,
    },
    Unary(Fn1, Reg),
    Binary(Fn2, Reg, Reg),
    /// `cond != 0 ? a : b`.
    Select(Reg, Reg, Reg),
}

/// A straight-line program computing `outputs.len()` values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Program {
    pub ops: Vec<Op>,
    pub outputs: Vec<Reg>,
}

/// Layout of one state's lag ring inside the runtime ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LagSlot {
    /// Offset of the ring in the shared buffer.
    pub offset: usize,
    /// Ring length = maximum lag depth + 1 (0 when the state is not lagged).
    pub len: usize,
}

/// Read access to the committed history used by `lag_x(k)`.
#[derive(Debug, Clone, Copy)]
pub struct LagView<'a> {
    pub ring: &'a [f64],
    /// Head index per state (the slot holding the latest committed value).
    pub heads: &'a [i64],
    pub layout: &'a [LagSlot],
    /// 1 when evaluating on a proposed (not yet committed) state: `lag_x(1)` is then the
    /// latest committed value rather than the one before it.
    pub shift: usize,
}

impl<'a> LagView<'a> {
    pub fn empty() -> LagView<'static> {
        LagView {
            ring: &[],
            heads: &[],
            layout: &[],
            shift: 0,
        }
    }

    #[inline]
    pub fn get(&self, state: usize, k: usize) -> f64 {
        let slot = self.layout[state];
        let back = k - self.shift;
        let head = self.heads[state] as usize;
        let idx = (head + slot.len - back) % slot.len;
        self.ring[slot.offset + idx]
    }
}

/// Inputs of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub t: f64,
    pub y: &'a [f64],
    pub p: &'a [f64],
    pub lag: LagView<'a>,
}

#[inline]
fn truth(x: f64) -> bool {
    x != 0.0
}

#[inline]
fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Python's floored modulo (CPython's `float_rem`): the result has the sign of the divisor,
/// and a zero result is a zero of the divisor's sign (`-0.0 % 5 == 0.0`, `0.0 % -5 == -0.0`).
/// A zero divisor gives NaN (Python raises).
pub fn py_mod(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 {
        if (b < 0.0) != (r < 0.0) {
            r + b
        } else {
            r
        }
    } else {
        0.0f64.copysign(b)
    }
}

/// Python's floor division (CPython's `float_floor_div`, via `divmod`). A zero divisor gives
/// the IEEE quotient's infinities or NaN (Python raises).
pub fn py_floordiv(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        return (a / b).floor();
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && (b < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let f = div.floor();
        if div - f > 0.5 {
            f + 1.0
        } else {
            f
        }
    } else {
        0.0f64.copysign(a / b)
    }
}

/// Python's `a and b`: `b` when `a` is true, else `a` itself (an operand, not a flag).
#[inline]
pub fn py_and(a: f64, b: f64) -> f64 {
    if truth(a) {
        b
    } else {
        a
    }
}

/// Python's `a or b`: `a` when it is true, else `b`.
#[inline]
pub fn py_or(a: f64, b: f64) -> f64 {
    if truth(a) {
        a
    } else {
        b
    }
}

/// Evaluates a one-argument function. Shared by the interpreter and native code.
#[inline]
pub fn call1(f: Fn1, x: f64) -> f64 {
    match f {
        Fn1::Neg => -x,
        Fn1::Not => flag(!truth(x)),
        Fn1::Abs => x.abs(),
        Fn1::Exp => x.exp(),
        Fn1::Expm1 => x.exp_m1(),
        Fn1::Ln => x.ln(),
        Fn1::Log10 => x.log10(),
        Fn1::Log2 => x.log2(),
        Fn1::Log1p => x.ln_1p(),
        Fn1::Sqrt => x.sqrt(),
        Fn1::Sin => x.sin(),
        Fn1::Cos => x.cos(),
        Fn1::Tan => x.tan(),
        Fn1::Asin => x.asin(),
        Fn1::Acos => x.acos(),
        Fn1::Atan => x.atan(),
        Fn1::Sinh => x.sinh(),
        Fn1::Cosh => x.cosh(),
        Fn1::Tanh => x.tanh(),
        Fn1::Asinh => x.asinh(),
        Fn1::Acosh => x.acosh(),
        Fn1::Atanh => x.atanh(),
        Fn1::Floor => x.floor(),
        Fn1::Ceil => x.ceil(),
        Fn1::Trunc => x.trunc(),
        Fn1::Round => x.round_ties_even(),
        Fn1::Erf => libm::erf(x),
        Fn1::Erfc => libm::erfc(x),
        Fn1::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
    }
}

/// Evaluates a two-argument function. Shared by the interpreter and native code.
#[inline]
pub fn call2(f: Fn2, a: f64, b: f64) -> f64 {
    match f {
        Fn2::Add => a + b,
        Fn2::Sub => a - b,
        Fn2::Mul => a * b,
        Fn2::Div => a / b,
        Fn2::FloorDiv => py_floordiv(a, b),
        Fn2::Mod => py_mod(a, b),
        Fn2::Pow => a.powf(b),
        Fn2::Atan2 => a.atan2(b),
        Fn2::Hypot => a.hypot(b),
        Fn2::Copysign => a.copysign(b),
        // Python's min/max return the first argument on ties and propagate NaN positionally;
        // this explicit form keeps that order.
        Fn2::Min => {
            if b < a {
                b
            } else {
                a
            }
        }
        Fn2::Max => {
            if b > a {
                b
            } else {
                a
            }
        }
        Fn2::Lt => flag(a < b),
        Fn2::Le => flag(a <= b),
        Fn2::Gt => flag(a > b),
        Fn2::Ge => flag(a >= b),
        Fn2::Eq => flag(a == b),
        Fn2::Ne => flag(a != b),
        Fn2::And => py_and(a, b),
        Fn2::Or => py_or(a, b),
    }
}

impl Program {
    /// Registers needed to evaluate this program.
    pub fn n_regs(&self) -> usize {
        self.ops.len()
    }

    /// Evaluates the program; `regs.len() >= n_regs()`, `out.len() >= outputs.len()`.
    #[inline]
    pub fn eval(&self, env: &Env<'_>, regs: &mut [f64], out: &mut [f64]) {
        let regs = &mut regs[..self.ops.len()];
        for i in 0..self.ops.len() {
            let v = match self.ops[i] {
                Op::Const(c) => c,
                Op::Time => env.t,
                Op::State(s) => env.y[s as usize],
                Op::Param(p) => env.p[p as usize],
                Op::Lag { state, k } => env.lag.get(state as usize, k as usize),
                Op::Unary(f, a) => call1(f, regs[a as usize]),
                Op::Binary(f, a, b) => call2(f, regs[a as usize], regs[b as usize]),
                Op::Select(c, a, b) => {
                    if truth(regs[c as usize]) {
                        regs[a as usize]
                    } else {
                        regs[b as usize]
                    }
                }
            };
            regs[i] = v;
        }
        for (o, r) in out.iter_mut().zip(&self.outputs) {
            *o = regs[*r as usize];
        }
    }

    /// Evaluates a program with exactly one output.
    #[inline]
    pub fn eval_scalar(&self, env: &Env<'_>, regs: &mut [f64]) -> f64 {
        let mut out = [0.0];
        self.eval(env, regs, &mut out);
        out[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_modulo_and_floor_division() {
        assert_eq!(py_mod(-7.5, 2.0), 0.5);
        assert_eq!(py_mod(7.5, -2.0), -0.5);
        assert_eq!(py_mod(7.5, 2.0), 1.5);
        assert_eq!(py_floordiv(-7.5, 2.0), -4.0);
        assert_eq!(py_floordiv(7.0, 2.0), 3.0);
        assert_eq!(py_mod(-0.0, 5.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(py_mod(0.0, -5.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(py_mod(-1.0, f64::INFINITY), f64::INFINITY);
        assert_eq!(py_mod(6.0, 3.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(py_mod(-6.0, 3.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(py_floordiv(-0.0, 5.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(py_floordiv(1.0, -3.0), -1.0);
        assert_eq!(py_floordiv(-7.5, -2.0), 3.0);
    }

    #[test]
    fn round_is_half_even() {
        assert_eq!(call1(Fn1::Round, 2.5), 2.0);
        assert_eq!(call1(Fn1::Round, 3.5), 4.0);
        assert_eq!(call1(Fn1::Round, -2.5), -2.0);
        assert_eq!(call1(Fn1::Round, 2.6), 3.0);
    }

    #[test]
    fn sign_and_logic() {
        assert_eq!(call1(Fn1::Sign, -3.0), -1.0);
        assert_eq!(call1(Fn1::Sign, f64::NAN), 0.0);
        assert_eq!(call2(Fn2::And, 2.0, 0.0), 0.0);
        assert_eq!(call2(Fn2::Or, 0.0, -1.0), -1.0);
        assert_eq!(call2(Fn2::And, 2.0, 3.0), 3.0);
        assert_eq!(call2(Fn2::Or, 0.0, 5.0), 5.0);
        assert_eq!(call2(Fn2::And, -0.0, 5.0).to_bits(), (-0.0f64).to_bits());
        assert!(call2(Fn2::Or, f64::NAN, 5.0).is_nan());
        assert_eq!(call1(Fn1::Not, 0.0), 1.0);
    }

    #[test]
    fn evaluates_ssa_program() {
        // (x + p0) * t
        let prog = Program {
            ops: vec![
                Op::State(0),
                Op::Param(0),
                Op::Binary(Fn2::Add, 0, 1),
                Op::Time,
                Op::Binary(Fn2::Mul, 2, 3),
            ],
            outputs: vec![4, 2],
        };
        let env = Env {
            t: 2.0,
            y: &[3.0],
            p: &[0.5],
            lag: LagView::empty(),
        };
        let mut regs = vec![0.0; prog.n_regs()];
        let mut out = [0.0; 2];
        prog.eval(&env, &mut regs, &mut out);
        assert_eq!(out, [7.0, 3.5]);
    }

    #[test]
    fn lag_view_reads_ring_backwards() {
        // ring of len 3 holding values 10 (oldest), 11, 12 (head at index 2).
        let ring = [10.0, 11.0, 12.0];
        let heads = [2];
        let layout = [LagSlot { offset: 0, len: 3 }];
        let lag = LagView {
            ring: &ring,
            heads: &heads,
            layout: &layout,
            shift: 0,
        };
        assert_eq!(lag.get(0, 1), 11.0);
        assert_eq!(lag.get(0, 2), 10.0);
        let shifted = LagView { shift: 1, ..lag };
        assert_eq!(shifted.get(0, 1), 12.0);
        assert_eq!(shifted.get(0, 2), 11.0);
    }
}
