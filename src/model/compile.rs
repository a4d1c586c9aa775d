//! Expression compiler: `ModelSpec` → flat programs (see `program.rs`).
//!
//! Names are resolved once here. Aux variables and user functions are inlined; identical
//! sub-expressions are shared (hash-consing), so an aux used three times is computed once, and
//! constant sub-expressions are folded with the same functions the evaluator uses.

use std::rc::Rc;

// Seeded fast hashing: names and instructions are hashed once or twice each per load.
use foldhash::{HashMap, HashMapExt, HashSet};

use super::expr::ast::{BinaryOp, CompareOp, Expr, Span, UnaryOp};
use super::expr::parser;
use super::names::NameIndex;
use super::pos::Origin;
use super::program::{call1, call2, Fn1, Fn2, Op, Program, Reg};
use super::reserved::{BUILTIN_FUNCTIONS, LAG_MACROS, MACROS};
use super::spec::{EventSpec, ModelKind, ModelSpec, Parsed, Source};
use crate::error::{suggestion_suffix, Diagnostic, Error, Result};

/// What an event action assigns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    State(usize),
    Param(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompiledEvent {
    pub cond: Program,
    /// Applied in order; each line sees the assignments before it.
    pub actions: Vec<(Target, Program)>,
    /// One output per logged field, evaluated after the actions.
    pub log: Program,
}

/// Every program of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledModel {
    /// Derivatives (ODE) or next values (map), one output per state.
    pub rhs: Program,
    /// One output per aux variable.
    pub aux: Program,
    pub events: Vec<CompiledEvent>,
    pub stop: Option<Program>,
    /// Row-major n×n, `jac[i*n + j] = ∂f_i/∂x_j`.
    pub jacobian: Option<Program>,
    /// Maximum lag depth per state (0 = not lagged).
    pub lag_depth: Vec<usize>,
}

impl CompiledModel {
    /// The largest register file any program needs.
    pub fn max_regs(&self) -> usize {
        let mut m = self.rhs.n_regs().max(self.aux.n_regs());
        for e in &self.events {
            m = m.max(e.cond.n_regs()).max(e.log.n_regs());
            for (_, a) in &e.actions {
                m = m.max(a.n_regs());
            }
        }
        if let Some(s) = &self.stop {
            m = m.max(s.n_regs());
        }
        if let Some(j) = &self.jacobian {
            m = m.max(j.n_regs());
        }
        m.max(1)
    }
}

const MAX_LAG: u32 = 1000;

/// Deepest recursion of the expression compiler, counting the levels of inlined aux
/// variables and function bodies; bounds the stack a compile uses.
pub const MAX_INLINE_NESTING: usize = 400;

/// Compiles every expression of the model; the error lists every problem found.
pub fn compile(spec: &ModelSpec) -> Result<CompiledModel> {
    compile_with(spec, &[])
}

/// Collects the errors of independent expressions, placing each at its source.
#[derive(Default)]
struct Errors(Vec<Diagnostic>);

impl Errors {
    fn keep(&mut self, src: &Source, r: Result<Reg>, b: &mut ProgramBuilder) -> Reg {
        match r {
            Ok(r) => r,
            Err(e) => {
                for mut d in e.diagnostics() {
                    if d.line == 0 {
                        let (line, column) = src.origin.position(1);
                        d.line = line;
                        d.column = column;
                        if d.location.is_empty() {
                            d.location = src.location.clone();
                        }
                    }
                    // The inlined-nesting limit is reported once, not for every body above
                    // the deep one.
                    let limit = |d: &Diagnostic| d.message.contains("inlined nesting limit");
                    let repeated_limit = limit(&d) && self.0.iter().any(limit);
                    if !self.0.contains(&d) && !repeated_limit {
                        self.0.push(d);
                    }
                }
                b.push(Op::Const(0.0))
            }
        }
    }
}

/// [`compile`], where uses of the names in `poisoned` (whose declarations already failed)
/// are not reported again.
pub fn compile_with(spec: &ModelSpec, poisoned: &[String]) -> Result<CompiledModel> {
    let mut errors = Errors::default();
    let compiled = compile_collect(spec, poisoned, &mut errors);
    if errors.0.is_empty() {
        Ok(compiled)
    } else {
        Err(Error::from_diagnostics(errors.0))
    }
}

fn compile_collect(spec: &ModelSpec, poisoned: &[String], errors: &mut Errors) -> CompiledModel {
    let mut cx = Compiler::new(spec);
    cx.poisoned = poisoned;
    // Check every function body once, even if it is never called, so a typo in an unused
    // function is still reported. One scratch builder serves every check, so a function
    // another one calls with the same arguments is lowered once.
    let mut b = ProgramBuilder::default();
    for f in &spec.functions {
        let scope: Vec<(String, Reg)> = f
            .args
            .iter()
            .map(|a| (a.clone(), b.push(Op::Const(0.0))))
            .collect();
        let r = cx.lower_source(&f.expr, &mut b, &scope);
        errors.keep(&f.expr, r, &mut b);
    }
    // About two shared instructions per equation (a large model's usual size, up to the
    // window), reserved at once rather than grown by rehashing.
    let mut rhs = ProgramBuilder::default();
    rhs.index
        .reserve((2 * spec.equations.len()).min(CSE_WINDOW));
    let mut outputs = Vec::with_capacity(spec.equations.len());
    for eq in &spec.equations {
        let r = cx.lower_equation(&eq.expr, &mut rhs);
        outputs.push(errors.keep(&eq.expr, r, &mut rhs));
    }
    let rhs = rhs.finish(outputs);

    let mut aux = ProgramBuilder::default();
    let mut outs = Vec::new();
    for i in 0..spec.aux.len() {
        let r = cx.lower_aux(i, &mut aux);
        outs.push(errors.keep(&spec.aux[i].1, r, &mut aux));
    }
    let aux = aux.finish(outs);

    let events = spec
        .events
        .iter()
        .map(|ev| compile_event(&mut cx, ev, errors))
        .collect();
    let stop = spec.sim.stop.as_ref().map(|src| {
        let mut b = ProgramBuilder::default();
        let r = lower_one(&mut cx, src, &mut b, errors);
        b.finish(vec![r])
    });
    let jacobian = spec.jacobian.as_ref().map(|rows| {
        let mut b = ProgramBuilder::default();
        let outs = rows
            .iter()
            .flatten()
            .map(|src| lower_one(&mut cx, src, &mut b, errors))
            .collect();
        b.finish(outs)
    });

    CompiledModel {
        rhs,
        aux,
        events,
        stop,
        jacobian,
        lag_depth: cx.lag_depth,
    }
}

/// The expression `src` into `b` (a placeholder with the error kept when it fails).
fn lower_one(
    cx: &mut Compiler<'_>,
    src: &Source,
    b: &mut ProgramBuilder,
    errors: &mut Errors,
) -> Reg {
    let r = cx.lower_source(src, b, &[]);
    errors.keep(src, r, b)
}

/// An event's condition, actions (each its own program) and log fields.
fn compile_event(cx: &mut Compiler<'_>, ev: &EventSpec, errors: &mut Errors) -> CompiledEvent {
    let mut b = ProgramBuilder::default();
    let r = lower_one(cx, &ev.cond, &mut b, errors);
    let cond = b.finish(vec![r]);
    let mut actions = Vec::with_capacity(ev.actions.len());
    for (target, src) in &ev.actions {
        let mut b = ProgramBuilder::default();
        let t = match cx.action_target(target, &src.location) {
            Ok(t) => t,
            Err(e) => {
                errors.keep(src, Err(e), &mut b);
                Target::State(0)
            }
        };
        let r = lower_one(cx, src, &mut b, errors);
        actions.push((t, b.finish(vec![r])));
    }
    let mut b = ProgramBuilder::default();
    let mut outs = Vec::with_capacity(ev.log.len());
    for field in &ev.log {
        let loc = format!("[events.{}].log", ev.name);
        let r = cx.lower_log_field(field, &loc, &mut b);
        outs.push(errors.keep(&ev.cond, r, &mut b));
    }
    CompiledEvent {
        cond,
        actions,
        log: b.finish(outs),
    }
}

/// Hash key of an instruction (f64 constants compared by bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OpKey {
    Const(u64),
    Time,
    State(u32),
    Param(u32),
    Lag(u32, u32),
    Unary(Fn1, Reg),
    Binary(Fn2, Reg, Reg),
    Select(Reg, Reg, Reg),
}

impl From<Op> for OpKey {
    fn from(op: Op) -> Self {
        match op {
            Op::Const(c) => OpKey::Const(c.to_bits()),
            Op::Time => OpKey::Time,
            Op::State(s) => OpKey::State(s),
            Op::Param(p) => OpKey::Param(p),
            Op::Lag { state, k } => OpKey::Lag(state, k),
            Op::Unary(f, a) => OpKey::Unary(f, a),
            Op::Binary(f, a, b) => OpKey::Binary(f, a, b),
            Op::Select(c, a, b) => OpKey::Select(c, a, b),
        }
    }
}

/// Builds one program, sharing identical instructions and folding constants.
#[derive(Default)]
struct ProgramBuilder {
    ops: Vec<Op>,
    index: HashMap<OpKey, Reg>,
    /// Aux already computed in this program (aux are pure, so one evaluation serves all uses).
    aux_regs: HashMap<usize, Reg>,
    /// Function calls already lowered, by (function, argument registers): a body depends on
    /// nothing but its arguments and the model's globals, so the same call is the same value.
    /// Each distinct call is lowered once (nested calls cost linear, not exponential, time).
    calls: HashMap<(usize, Vec<Reg>), Reg>,
    /// Register of each state's load so far (`NO_REG`: none yet), by state index: every
    /// state is loaded in a large model, and a vector lookup keeps those out of `index`.
    state_regs: Vec<Reg>,
}

const NO_REG: Reg = Reg::MAX;

/// Instructions the common-subexpression index remembers before it starts afresh. A model
/// below it shares every repeated instruction; a larger one shares those within a window,
/// so the index stays cache-sized (at 10^6 states a whole-program index is a 64 MB table
/// and every instruction a cache miss). A repeat it misses is computed twice, with the
/// same bits.
const CSE_WINDOW: usize = 1 << 16;

impl ProgramBuilder {
    fn push(&mut self, op: Op) -> Reg {
        let op = self.fold(op);
        if let Op::State(s) = op {
            let s = s as usize;
            if s >= self.state_regs.len() {
                self.state_regs.resize(s + 1, NO_REG);
            }
            if self.state_regs[s] == NO_REG {
                self.state_regs[s] = self.ops.len() as Reg;
                self.ops.push(op);
            }
            return self.state_regs[s];
        }
        let key = OpKey::from(op);
        if let Some(r) = self.index.get(&key) {
            return *r;
        }
        let r = self.ops.len() as Reg;
        self.ops.push(op);
        if self.index.len() == CSE_WINDOW {
            self.index.clear();
        }
        self.index.insert(key, r);
        r
    }

    fn constant(&self, r: Reg) -> Option<f64> {
        match self.ops[r as usize] {
            Op::Const(c) => Some(c),
            _ => None,
        }
    }

    fn fold(&self, op: Op) -> Op {
        match op {
            Op::Unary(f, a) => match self.constant(a) {
                Some(x) => Op::Const(call1(f, x)),
                None => op,
            },
            Op::Binary(f, a, b) => match (self.constant(a), self.constant(b)) {
                (Some(x), Some(y)) => Op::Const(call2(f, x, y)),
                _ => op,
            },
            Op::Select(c, a, b) => match self.constant(c) {
                Some(x) => {
                    if x != 0.0 {
                        self.ops[a as usize]
                    } else {
                        self.ops[b as usize]
                    }
                }
                None => op,
            },
            _ => op,
        }
    }

    fn unary(&mut self, f: Fn1, a: Reg) -> Reg {
        self.push(Op::Unary(f, a))
    }
    fn binary(&mut self, f: Fn2, a: Reg, b: Reg) -> Reg {
        self.push(Op::Binary(f, a, b))
    }

    /// Removes instructions no output depends on (left behind by folding) and renumbers.
    fn finish(self, outputs: Vec<Reg>) -> Program {
        let mut live = vec![false; self.ops.len()];
        for &o in &outputs {
            live[o as usize] = true;
        }
        for i in (0..self.ops.len()).rev() {
            if !live[i] {
                continue;
            }
            match self.ops[i] {
                Op::Unary(_, a) => live[a as usize] = true,
                Op::Binary(_, a, b) => {
                    live[a as usize] = true;
                    live[b as usize] = true;
                }
                Op::Select(c, a, b) => {
                    live[c as usize] = true;
                    live[a as usize] = true;
                    live[b as usize] = true;
                }
                _ => {}
            }
        }
        let mut remap = vec![0 as Reg; self.ops.len()];
        let mut ops = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            if !live[i] {
                continue;
            }
            let m = |r: Reg| remap[r as usize];
            let new = match *op {
                Op::Unary(f, a) => Op::Unary(f, m(a)),
                Op::Binary(f, a, b) => Op::Binary(f, m(a), m(b)),
                Op::Select(c, a, b) => Op::Select(m(c), m(a), m(b)),
                other => other,
            };
            remap[i] = ops.len() as Reg;
            ops.push(new);
        }
        Program {
            ops,
            outputs: outputs.iter().map(|&o| remap[o as usize]).collect(),
        }
    }
}

struct Compiler<'s> {
    spec: &'s ModelSpec,
    /// Parsed expressions by text: aux and function bodies are lowered once per use.
    parsed: HashMap<String, Rc<Expr>>,
    lag_depth: Vec<usize>,
    /// Aux and functions being expanded, for cycle detection.
    stack: Vec<String>,
    /// Current recursion depth of `lower`.
    depth: usize,
    /// Names whose declarations failed: uses are not reported again.
    poisoned: &'s [String],
    /// Declared names → (0 state, 1 param, 2 aux, 3 constant; index), first declaration wins.
    names: NameIndex<'s, (u8, usize)>,
    /// Function name → index.
    functions: HashMap<&'s str, usize>,
}

/// Where an expression came from, for error messages.
struct Ctx<'a> {
    location: &'a str,
    text: &'a str,
    origin: &'a Origin,
}

impl Ctx<'_> {
    fn error(&self, span: Span, msg: impl std::fmt::Display) -> Error {
        let pointer = if span.col > 0 {
            let (shown, col) = parser::excerpt(self.text, span.col);
            let pad: String = " ".repeat(col - 1);
            format!(
                "\n    {shown}\n    {pad}{}",
                "^".repeat(span.len.clamp(1, 40))
            )
        } else {
            format!("\n    {}", parser::excerpt(self.text, 1).0)
        };
        let (line, column) = self.origin.position(span.col.max(1));
        Error::model_at(Diagnostic {
            message: format!("{}: {msg}{pointer}", self.location),
            location: self.location.to_string(),
            line,
            column,
        })
    }
}

enum Resolved {
    Local(Reg),
    State(usize),
    Param(usize),
    Aux(usize),
    Constant(f64),
    Time,
}

fn math1(name: &str) -> Option<Fn1> {
    Some(match name {
        "abs" | "fabs" => Fn1::Abs,
        "exp" => Fn1::Exp,
        "expm1" => Fn1::Expm1,
        "log" => Fn1::Ln,
        "log10" => Fn1::Log10,
        "log2" => Fn1::Log2,
        "log1p" => Fn1::Log1p,
        "sqrt" => Fn1::Sqrt,
        "sin" => Fn1::Sin,
        "cos" => Fn1::Cos,
        "tan" => Fn1::Tan,
        "asin" => Fn1::Asin,
        "acos" => Fn1::Acos,
        "atan" => Fn1::Atan,
        "sinh" => Fn1::Sinh,
        "cosh" => Fn1::Cosh,
        "tanh" => Fn1::Tanh,
        "asinh" => Fn1::Asinh,
        "acosh" => Fn1::Acosh,
        "atanh" => Fn1::Atanh,
        "floor" => Fn1::Floor,
        "ceil" => Fn1::Ceil,
        "trunc" => Fn1::Trunc,
        "round" => Fn1::Round,
        "erf" => Fn1::Erf,
        "erfc" => Fn1::Erfc,
        "sign" => Fn1::Sign,
        _ => return None,
    })
}

fn math2(name: &str) -> Option<Fn2> {
    Some(match name {
        "atan2" => Fn2::Atan2,
        "hypot" => Fn2::Hypot,
        "copysign" => Fn2::Copysign,
        "pow" => Fn2::Pow,
        "fmod" => Fn2::Mod,
        _ => return None,
    })
}

impl<'s> Compiler<'s> {
    fn new(spec: &'s ModelSpec) -> Self {
        Compiler {
            spec,
            parsed: HashMap::new(),
            lag_depth: vec![0; spec.states.len()],
            stack: Vec::new(),
            depth: 0,
            poisoned: &[],
            names: {
                let mut m = NameIndex::with_capacity(
                    spec.states.len() + spec.params.len() + spec.aux.len() + spec.constants.len(),
                );
                let groups = [&spec.states, &spec.params];
                for (g, list) in groups.iter().enumerate() {
                    for (i, (n, _)) in list.iter().enumerate() {
                        m.insert_first(n.as_str(), (g as u8, i));
                    }
                }
                for (i, (n, _)) in spec.aux.iter().enumerate() {
                    m.insert_first(n.as_str(), (2, i));
                }
                for (i, (n, _)) in spec.constants.iter().enumerate() {
                    m.insert_first(n.as_str(), (3, i));
                }
                m
            },
            functions: {
                let mut m = HashMap::new();
                for (i, f) in spec.functions.iter().enumerate() {
                    m.entry(f.name.as_str()).or_insert(i);
                }
                m
            },
        }
    }

    fn parse(&mut self, src: &Source) -> Result<Rc<Expr>> {
        if let Some(e) = self.parsed.get(&src.text) {
            return Ok(Rc::clone(e));
        }
        let e = Rc::new(parse_uncached(src)?);
        self.parsed.insert(src.text.clone(), Rc::clone(&e));
        Ok(e)
    }

    /// Lowers a state's equation, parsed without keeping the tree: each equation is lowered
    /// once, so a cache would only hold every tree of the model until the end of the load
    /// (at 10^6 states, hundreds of MB written once and freed at the end, cache-cold).
    fn lower_equation(&mut self, src: &Source, b: &mut ProgramBuilder) -> Result<Reg> {
        let e = parse_uncached(src)?;
        let ctx = Ctx {
            location: &src.location,
            text: &src.text,
            origin: &src.origin,
        };
        self.lower(&e, b, &[], &ctx)
    }

    fn lower_source(
        &mut self,
        src: &Source,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
    ) -> Result<Reg> {
        let e = self.parse(src)?;
        let ctx = Ctx {
            location: &src.location,
            text: &src.text,
            origin: &src.origin,
        };
        self.lower(&e, b, scope, &ctx)
    }

    /// Lowers aux `i` into `b` (once per program). The aux it refers to, directly or
    /// through other aux, are lowered first, deepest first, found by an iterative search: a
    /// long chain of aux costs no recursion.
    fn lower_aux(&mut self, i: usize, b: &mut ProgramBuilder) -> Result<Reg> {
        if let Some(r) = b.aux_regs.get(&i) {
            return Ok(*r);
        }
        for j in self.aux_order(i, b)? {
            if !b.aux_regs.contains_key(&j) {
                self.lower_aux_one(j, b)?;
            }
        }
        b.aux_regs
            .get(&i)
            .copied()
            .ok_or_else(|| Error::internal("aux lowered in dependency order"))
    }

    /// The aux referred to by name in aux `j`'s expression, in order of appearance.
    fn aux_refs(&mut self, j: usize) -> Result<Vec<usize>> {
        let e = self.parse(&self.spec.aux[j].1)?;
        let mut out = Vec::new();
        let mut todo: Vec<&Expr> = vec![&*e];
        while let Some(x) = todo.pop() {
            match x {
                Expr::Name { name, .. } => {
                    if let Some(Resolved::Aux(k)) = self.resolve(name, &[]) {
                        out.push(k);
                    }
                }
                Expr::Number(_) | Expr::Bool(_) => {}
                Expr::Unary { operand, .. } => todo.push(operand),
                Expr::Binary { lhs, rhs, .. } => {
                    todo.push(rhs);
                    todo.push(lhs);
                }
                Expr::Chain { first, rest } => {
                    todo.extend(rest.iter().rev().map(|(_, r)| r));
                    todo.push(first);
                }
                Expr::Compare { operands, .. } => todo.extend(operands.iter().rev()),
                Expr::IfElse {
                    cond,
                    then,
                    otherwise,
                } => {
                    // Lowered as cond, then, otherwise.
                    todo.push(otherwise);
                    todo.push(then);
                    todo.push(cond);
                }
                Expr::Call { args, .. } => todo.extend(args.iter().rev()),
            }
        }
        Ok(out)
    }

    /// Aux `i` and the uncached aux it depends on, dependencies first (post-order of an
    /// iterative depth-first search); a cycle is an error naming it.
    fn aux_order(&mut self, i: usize, b: &ProgramBuilder) -> Result<Vec<usize>> {
        let mut order = Vec::new();
        let mut done: HashSet<usize> = Default::default();
        // (aux, its references, next reference to visit)
        let mut path: Vec<(usize, Vec<usize>, usize)> = vec![(i, self.aux_refs(i)?, 0)];
        while let Some((node, refs, next)) = path.last_mut() {
            if *next < refs.len() {
                let k = refs[*next];
                *next += 1;
                if done.contains(&k) || b.aux_regs.contains_key(&k) {
                    continue;
                }
                if let Some(pos) = path.iter().position(|(n, _, _)| *n == k) {
                    let mut cycle: Vec<&str> = self.stack.iter().map(String::as_str).collect();
                    cycle.extend(
                        path[pos..]
                            .iter()
                            .map(|(n, _, _)| self.spec.aux[*n].0.as_str()),
                    );
                    cycle.push(&self.spec.aux[k].0);
                    return Err(Error::model(format!(
                        "cyclic definition: {} (aux variables and functions may not refer to \
                         themselves, directly or through others)",
                        cycle.join(" -> ")
                    )));
                }
                let r = self.aux_refs(k)?;
                path.push((k, r, 0));
            } else {
                let n = *node;
                done.insert(n);
                order.push(n);
                path.pop();
            }
        }
        Ok(order)
    }

    fn lower_aux_one(&mut self, i: usize, b: &mut ProgramBuilder) -> Result<Reg> {
        let (name, src) = &self.spec.aux[i];
        self.enter(name)?;
        let r = self.lower_source(src, b, &[]);
        self.stack.pop();
        let r = r?;
        b.aux_regs.insert(i, r);
        Ok(r)
    }

    fn enter(&mut self, name: &str) -> Result<()> {
        if let Some(pos) = self.stack.iter().position(|n| n == name) {
            let mut cycle: Vec<&str> = self.stack[pos..].iter().map(String::as_str).collect();
            cycle.push(name);
            return Err(Error::model(format!(
                "cyclic definition: {} (aux variables and functions may not refer to themselves, \
                 directly or through others)",
                cycle.join(" -> ")
            )));
        }
        self.stack.push(name.to_string());
        Ok(())
    }

    fn state_index(&self, name: &str) -> Option<usize> {
        match self.names.get(name) {
            Some((0, i)) => Some(*i),
            _ => None,
        }
    }

    fn resolve(&self, name: &str, scope: &[(String, Reg)]) -> Option<Resolved> {
        if let Some((_, r)) = scope.iter().rev().find(|(n, _)| n == name) {
            return Some(Resolved::Local(*r));
        }
        if name == "t" {
            return Some(Resolved::Time);
        }
        match self.names.get(name) {
            Some((0, i)) => return Some(Resolved::State(*i)),
            Some((1, i)) => return Some(Resolved::Param(*i)),
            Some((2, i)) => return Some(Resolved::Aux(*i)),
            Some((_, i)) => return Some(Resolved::Constant(self.spec.constants[*i].1)),
            None => {}
        }
        match name {
            "pi" => Some(Resolved::Constant(std::f64::consts::PI)),
            "e" => Some(Resolved::Constant(std::f64::consts::E)),
            _ => None,
        }
    }

    fn known_names<'a>(&'a self, scope: &'a [(String, Reg)]) -> Vec<&'a str> {
        let spec = self.spec;
        let mut v: Vec<&str> = scope.iter().map(|(n, _)| n.as_str()).collect();
        v.extend(spec.states.iter().map(|(n, _)| n.as_str()));
        v.extend(spec.params.iter().map(|(n, _)| n.as_str()));
        v.extend(spec.aux.iter().map(|(n, _)| n.as_str()));
        v.extend(spec.constants.iter().map(|(n, _)| n.as_str()));
        v.extend(["t", "pi", "e"]);
        v
    }

    /// Lowers `e`, one recursion level deeper; inlined aux variables and functions add
    /// their own levels, and the total is limited so compiling never exhausts the stack.
    fn lower(
        &mut self,
        e: &Expr,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        if self.depth >= MAX_INLINE_NESTING {
            return Err(ctx.error(
                Span::default(),
                format!(
                    "expressions nest more than {MAX_INLINE_NESTING} levels deep once aux \
                     variables and functions are inlined (through {}); the inlined nesting \
                     limit is {MAX_INLINE_NESTING}",
                    self.chain_description()
                ),
            ));
        }
        self.depth += 1;
        let r = self.lower_node(e, b, scope, ctx);
        self.depth -= 1;
        r
    }

    fn chain_description(&self) -> String {
        let n = self.stack.len();
        if n <= 6 {
            return self.stack.join(" -> ");
        }
        format!(
            "{} -> ... ({} more) -> {}",
            self.stack[..3].join(" -> "),
            n - 6,
            self.stack[n - 3..].join(" -> ")
        )
    }

    fn binop(b: &mut ProgramBuilder, op: BinaryOp, a: Reg, c: Reg) -> Reg {
        let f = match op {
            BinaryOp::Add => Fn2::Add,
            BinaryOp::Sub => Fn2::Sub,
            BinaryOp::Mul => Fn2::Mul,
            BinaryOp::Div => Fn2::Div,
            BinaryOp::FloorDiv => Fn2::FloorDiv,
            BinaryOp::Mod => Fn2::Mod,
            BinaryOp::Pow => Fn2::Pow,
            BinaryOp::And => Fn2::And,
            BinaryOp::Or => Fn2::Or,
        };
        b.binary(f, a, c)
    }

    fn lower_node(
        &mut self,
        e: &Expr,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        Ok(match e {
            Expr::Chain { first, rest } => {
                let mut acc = self.lower(first, b, scope, ctx)?;
                for (op, rhs) in rest {
                    let c = self.lower(rhs, b, scope, ctx)?;
                    acc = Self::binop(b, *op, acc, c);
                }
                acc
            }
            Expr::Number(x) => b.push(Op::Const(*x)),
            Expr::Bool(v) => b.push(Op::Const(if *v { 1.0 } else { 0.0 })),
            Expr::Name { name, span } => self.lower_name(name, *span, b, scope, ctx)?,
            Expr::Unary { op, operand } => {
                let a = self.lower(operand, b, scope, ctx)?;
                match op {
                    UnaryOp::Plus => a,
                    UnaryOp::Neg => b.unary(Fn1::Neg, a),
                    UnaryOp::Not => b.unary(Fn1::Not, a),
                }
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.lower(lhs, b, scope, ctx)?;
                match (*op, rhs.as_ref()) {
                    (BinaryOp::Pow, Expr::Number(n)) if small_power(*n) => integer_power(b, a, *n),
                    _ => {
                        let c = self.lower(rhs, b, scope, ctx)?;
                        Self::binop(b, *op, a, c)
                    }
                }
            }
            Expr::Compare { ops, operands } => {
                let regs = self.lower_all(operands, b, scope, ctx)?;
                compare_chain(b, ops, &regs)?
            }
            Expr::IfElse {
                cond,
                then,
                otherwise,
            } => {
                let c = self.lower(cond, b, scope, ctx)?;
                let t = self.lower(then, b, scope, ctx)?;
                let o = self.lower(otherwise, b, scope, ctx)?;
                b.push(Op::Select(c, t, o))
            }
            Expr::Call { name, args, span } => self.lower_call(name, args, *span, b, scope, ctx)?,
        })
    }

    fn lower_name(
        &mut self,
        name: &str,
        span: Span,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        Ok(match self.resolve(name, scope) {
            Some(Resolved::Local(r)) => r,
            Some(Resolved::Time) => b.push(Op::Time),
            Some(Resolved::State(i)) => b.push(Op::State(i as u32)),
            Some(Resolved::Param(i)) => b.push(Op::Param(i as u32)),
            Some(Resolved::Constant(v)) => b.push(Op::Const(v)),
            Some(Resolved::Aux(i)) => self.lower_aux(i, b)?,
            None if self.poisoned.iter().any(|p| p == name) => b.push(Op::Const(0.0)),
            None => {
                let hint = if self.spec.functions.iter().any(|f| f.name == name)
                    || math1(name).is_some()
                {
                    " (it is a function: call it with parentheses)".to_string()
                } else {
                    suggestion_suffix(name, self.known_names(scope))
                };
                return Err(ctx.error(
                    span,
                    format!("unknown identifier '{name}' at column {}{hint}", span.col),
                ));
            }
        })
    }

    fn lower_call(
        &mut self,
        name: &str,
        args: &[Expr],
        span: Span,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        let call = Call { name, args, span };
        if let Some(state) = name.strip_prefix("lag_") {
            return self.lower_lag(&call, state, b, ctx);
        }
        if let Some((_, want)) = LAG_MACROS.iter().find(|(n, _)| *n == name) {
            call.arity(*want, ctx)?;
            return self.lower_lag_macro(&call, b, scope, ctx);
        }
        if let Some((_, want)) = MACROS.iter().find(|(n, _)| *n == name) {
            call.arity(*want, ctx)?;
            let a = self.lower_all(args, b, scope, ctx)?;
            return Ok(lower_macro(b, name, &a));
        }
        if name == "min" || name == "max" {
            return self.lower_min_max(&call, b, scope, ctx);
        }
        if name == "log" && args.len() == 2 {
            let x = self.lower(&args[0], b, scope, ctx)?;
            let base = self.lower(&args[1], b, scope, ctx)?;
            let lx = b.unary(Fn1::Ln, x);
            let lb = b.unary(Fn1::Ln, base);
            return Ok(b.binary(Fn2::Div, lx, lb));
        }
        if let Some(f) = math1(name) {
            call.arity(1, ctx)?;
            let a = self.lower(&args[0], b, scope, ctx)?;
            return Ok(b.unary(f, a));
        }
        if let Some(f) = math2(name) {
            call.arity(2, ctx)?;
            let a = self.lower(&args[0], b, scope, ctx)?;
            let c = self.lower(&args[1], b, scope, ctx)?;
            return Ok(b.binary(f, a, c));
        }
        if let Some(&fi) = self.functions.get(name) {
            return self.lower_user_function(&call, fi, b, scope, ctx);
        }
        if self.poisoned.iter().any(|p| p == name) {
            return Ok(b.push(Op::Const(0.0)));
        }
        Err(self.unknown_function(&call, ctx))
    }

    fn lower_all(
        &mut self,
        args: &[Expr],
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Vec<Reg>> {
        args.iter().map(|a| self.lower(a, b, scope, ctx)).collect()
    }

    /// Lagged state value: `lag_x()` or `lag_x(k)` with an integer literal k.
    fn lower_lag(
        &mut self,
        call: &Call<'_>,
        state: &str,
        b: &mut ProgramBuilder,
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        let name = call.name;
        let Some(si) = self.state_index(state) else {
            return Err(ctx.error(
                call.span,
                format!(
                    "'{name}': only states can be lagged, and '{state}' is not a state{}",
                    suggestion_suffix(state, self.spec.states.iter().map(|(n, _)| n.as_str()))
                ),
            ));
        };
        let k = match call.args {
            [] => 1,
            [Expr::Number(k)] if k.fract() == 0.0 && *k >= 1.0 && *k <= MAX_LAG as f64 => *k as u32,
            _ => {
                return Err(ctx.error(
                    call.span,
                    format!(
                        "{name}() takes no argument or one integer literal between 1 and \
                         {MAX_LAG} (how many committed steps back)"
                    ),
                ))
            }
        };
        Ok(self.lag(b, si, k))
    }

    /// A macro over a state and its last committed value (`cross_up(x, level)`, ...).
    fn lower_lag_macro(
        &mut self,
        call: &Call<'_>,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        let si = match &call.args[0] {
            Expr::Name { name: s, .. } if self.state_index(s).is_some() => {
                self.state_index(s).unwrap_or_default()
            }
            _ => {
                return Err(ctx.error(
                    call.span,
                    format!("{}(): the first argument must be a state name", call.name),
                ))
            }
        };
        let cur = b.push(Op::State(si as u32));
        let prev = self.lag(b, si, 1);
        let rest = self.lower_all(&call.args[1..], b, scope, ctx)?;
        Ok(lag_macro(b, call.name, cur, prev, &rest))
    }

    fn lower_min_max(
        &mut self,
        call: &Call<'_>,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        let (name, args) = (call.name, call.args);
        if args.len() < 2 {
            return Err(ctx.error(
                call.span,
                format!(
                    "{name}() takes at least 2 arguments, but {} given",
                    args.len()
                ),
            ));
        }
        let f = if name == "min" { Fn2::Min } else { Fn2::Max };
        let mut acc = self.lower(&args[0], b, scope, ctx)?;
        for a in &args[1..] {
            let r = self.lower(a, b, scope, ctx)?;
            acc = b.binary(f, acc, r);
        }
        Ok(acc)
    }

    /// A `[functions]` entry, lowered once per distinct argument registers (a repeated call
    /// with the same arguments is the same code: nested functions cost linear time).
    fn lower_user_function(
        &mut self,
        call: &Call<'_>,
        fi: usize,
        b: &mut ProgramBuilder,
        scope: &[(String, Reg)],
        ctx: &Ctx<'_>,
    ) -> Result<Reg> {
        let spec = self.spec;
        let f = &spec.functions[fi];
        call.arity(f.args.len(), ctx)?;
        let regs = self.lower_all(call.args, b, scope, ctx)?;
        let key = (fi, regs);
        if let Some(&r) = b.calls.get(&key) {
            return Ok(r);
        }
        let inner: Vec<(String, Reg)> = f.args.iter().cloned().zip(key.1.clone()).collect();
        self.enter(&f.name)?;
        let r = self.lower_source(&f.expr, b, &inner);
        self.stack.pop();
        if let Ok(r) = r {
            b.calls.insert(key, r);
        }
        r
    }

    fn unknown_function(&self, call: &Call<'_>, ctx: &Ctx<'_>) -> Error {
        let mut candidates: Vec<&str> = BUILTIN_FUNCTIONS.to_vec();
        candidates.extend(["min", "max"]);
        candidates.extend(MACROS.iter().map(|(n, _)| *n));
        candidates.extend(LAG_MACROS.iter().map(|(n, _)| *n));
        candidates.extend(self.spec.functions.iter().map(|f| f.name.as_str()));
        ctx.error(
            call.span,
            format!(
                "unknown function '{}' at column {}{}",
                call.name,
                call.span.col,
                suggestion_suffix(call.name, candidates)
            ),
        )
    }

    fn lag(&mut self, b: &mut ProgramBuilder, state: usize, k: u32) -> Reg {
        let d = &mut self.lag_depth[state];
        *d = (*d).max(k as usize);
        b.push(Op::Lag {
            state: state as u32,
            k,
        })
    }

    fn action_target(&self, target: &str, location: &str) -> Result<Target> {
        if let Some(i) = self.state_index(target) {
            return Ok(Target::State(i));
        }
        if let Some(i) = self.spec.params.iter().position(|(n, _)| n == target) {
            return Ok(Target::Param(i));
        }
        let candidates = self
            .spec
            .states
            .iter()
            .chain(&self.spec.params)
            .map(|(n, _)| n.as_str());
        Err(Error::model(format!(
            "{location}: an event action may assign only states and params, and '{target}' is \
             neither{}",
            suggestion_suffix(target, candidates)
        )))
    }

    fn lower_log_field(
        &mut self,
        field: &str,
        location: &str,
        b: &mut ProgramBuilder,
    ) -> Result<Reg> {
        let spec = self.spec;
        let bad = |why: &str| Error::model(format!("{location}: log field '{field}' {why}"));
        if field == "t" {
            return Ok(b.push(Op::Time));
        }
        let (prefix, name) = match field.split_once(':') {
            Some((p, n)) => (Some(p), n),
            None => (None, field),
        };
        let state = || self.state_index(name);
        let param = || spec.params.iter().position(|(n, _)| n == name);
        let aux = || spec.aux.iter().position(|(n, _)| n == name);
        match prefix {
            Some("state") => state()
                .map(|i| b.push(Op::State(i as u32)))
                .ok_or_else(|| bad("is not a state")),
            Some("param") => param()
                .map(|i| b.push(Op::Param(i as u32)))
                .ok_or_else(|| bad("is not a parameter")),
            Some("aux") => match aux() {
                Some(i) => self.lower_aux(i, b),
                None => Err(bad("is not an aux variable")),
            },
            Some(p) => Err(bad(&format!(
                "has unknown prefix '{p}:' (use state:, param: or aux:)"
            ))),
            None => {
                if let Some(i) = state() {
                    Ok(b.push(Op::State(i as u32)))
                } else if let Some(i) = param() {
                    Ok(b.push(Op::Param(i as u32)))
                } else if let Some(i) = aux() {
                    self.lower_aux(i, b)
                } else {
                    let names = self.known_names(&[]);
                    Err(bad(&format!(
                        "is not t, a state, a parameter or an aux variable{}",
                        suggestion_suffix(name, names)
                    )))
                }
            }
        }
    }
}

/// The expression of `src`, or its syntax error placed in the file.
fn parse_uncached(src: &Source) -> Result<Expr> {
    parser::parse(&src.text).map_err(|e| {
        let (line, column) = src.origin.position(e.span.col);
        Error::model_at(Diagnostic {
            message: format!("{}: {}", src.location, parser::render_error(&src.text, &e)),
            location: src.location.clone(),
            line,
            column,
        })
    })
}

/// Small integer powers are products: much faster than powf.
fn small_power(n: f64) -> bool {
    n == 2.0 || n == 3.0 || n == 4.0
}

fn integer_power(b: &mut ProgramBuilder, a: Reg, n: f64) -> Reg {
    let sq = b.binary(Fn2::Mul, a, a);
    if n == 2.0 {
        sq
    } else if n == 3.0 {
        b.binary(Fn2::Mul, sq, a)
    } else {
        b.binary(Fn2::Mul, sq, sq)
    }
}

/// `a < b <= c ...`: every comparison, and-ed left to right.
fn compare_chain(b: &mut ProgramBuilder, ops: &[CompareOp], regs: &[Reg]) -> Result<Reg> {
    let mut acc: Option<Reg> = None;
    for (i, op) in ops.iter().enumerate() {
        let f = match op {
            CompareOp::Lt => Fn2::Lt,
            CompareOp::Le => Fn2::Le,
            CompareOp::Gt => Fn2::Gt,
            CompareOp::Ge => Fn2::Ge,
            CompareOp::Eq => Fn2::Eq,
            CompareOp::Ne => Fn2::Ne,
        };
        let c = b.binary(f, regs[i], regs[i + 1]);
        acc = Some(match acc {
            None => c,
            Some(p) => b.binary(Fn2::And, p, c),
        });
    }
    acc.ok_or_else(|| Error::internal("empty comparison chain"))
}

/// A function call as written: its name, arguments and where it is.
struct Call<'e> {
    name: &'e str,
    args: &'e [Expr],
    span: Span,
}

impl Call<'_> {
    fn arity(&self, want: usize, ctx: &Ctx<'_>) -> Result<()> {
        if self.args.len() == want {
            return Ok(());
        }
        Err(ctx.error(
            self.span,
            format!(
                "{}() takes {want} argument{}, but {} {} given",
                self.name,
                if want == 1 { "" } else { "s" },
                self.args.len(),
                if self.args.len() == 1 { "was" } else { "were" }
            ),
        ))
    }
}

/// The macros over plain values (`heaviside`, `relu`, `clip`, ...), arguments lowered.
fn lower_macro(b: &mut ProgramBuilder, name: &str, a: &[Reg]) -> Reg {
    let zero = b.push(Op::Const(0.0));
    match name {
        "heaviside" | "step" => b.binary(Fn2::Ge, a[0], zero),
        "relu" => b.binary(Fn2::Max, a[0], zero),
        "clip" => {
            let lo = b.binary(Fn2::Max, a[0], a[1]);
            b.binary(Fn2::Min, lo, a[2])
        }
        "approx" => {
            let d = b.binary(Fn2::Sub, a[0], a[1]);
            let d = b.unary(Fn1::Abs, d);
            b.binary(Fn2::Le, d, a[2])
        }
        _ => {
            // in_interval(v, lo, hi)
            let lo = b.binary(Fn2::Le, a[1], a[0]);
            let hi = b.binary(Fn2::Le, a[0], a[2]);
            b.binary(Fn2::And, lo, hi)
        }
    }
}

fn lag_macro(b: &mut ProgramBuilder, name: &str, cur: Reg, prev: Reg, a: &[Reg]) -> Reg {
    let up = |b: &mut ProgramBuilder, th: Reg| {
        let x = b.binary(Fn2::Le, prev, th);
        let y = b.binary(Fn2::Gt, cur, th);
        b.binary(Fn2::And, x, y)
    };
    let down = |b: &mut ProgramBuilder, th: Reg| {
        let x = b.binary(Fn2::Ge, prev, th);
        let y = b.binary(Fn2::Lt, cur, th);
        b.binary(Fn2::And, x, y)
    };
    let inside = |b: &mut ProgramBuilder, v: Reg, lo: Reg, hi: Reg| {
        let x = b.binary(Fn2::Le, lo, v);
        let y = b.binary(Fn2::Le, v, hi);
        b.binary(Fn2::And, x, y)
    };
    match name {
        "cross_up" => up(b, a[0]),
        "cross_down" => down(b, a[0]),
        "cross_either" => {
            let u = up(b, a[0]);
            let d = down(b, a[0]);
            b.binary(Fn2::Or, u, d)
        }
        "changed" => b.binary(Fn2::Ne, cur, prev),
        "increasing" => b.binary(Fn2::Gt, cur, prev),
        "decreasing" => b.binary(Fn2::Lt, cur, prev),
        "enters_interval" => {
            let was = inside(b, prev, a[0], a[1]);
            let was_out = b.unary(Fn1::Not, was);
            let is = inside(b, cur, a[0], a[1]);
            b.binary(Fn2::And, was_out, is)
        }
        _ => {
            // leaves_interval
            let was = inside(b, prev, a[0], a[1]);
            let is = inside(b, cur, a[0], a[1]);
            let is_out = b.unary(Fn1::Not, is);
            b.binary(Fn2::And, was, is_out)
        }
    }
}

/// Kind-specific checks the compiler cannot see from expressions alone.
pub fn check_kind(spec: &ModelSpec) -> Result<()> {
    if spec.kind == ModelKind::Map && spec.jacobian.is_some() {
        // Allowed: the Jacobian of the map update (used by analysis and implicit code).
    }
    Ok(())
}

/// The spec of `parsed` when it has no errors; otherwise every error of the structure and of
/// the expressions that could be compiled, in file order.
pub fn checked(parsed: Parsed) -> Result<ModelSpec> {
    let Some(spec) = parsed.spec else {
        return Err(Error::from_diagnostics(parsed.errors));
    };
    if parsed.errors.is_empty() {
        return Ok(spec);
    }
    let mut all = parsed.errors;
    if let Err(e) = compile_with(&spec, &parsed.poisoned) {
        for d in e.diagnostics() {
            if !all.contains(&d) {
                all.push(d);
            }
        }
    }
    all.sort_by_key(|d| {
        if d.line == 0 {
            (usize::MAX, 0)
        } else {
            (d.line, d.column)
        }
    });
    Err(Error::from_diagnostics(all))
}
