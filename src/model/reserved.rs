//! The names the model language reserves: built-in functions, macros and the Python
//! builtins it keeps for itself. A leaf module: the compiler lowers these names, and the spec
//! checker refuses them as variable names, without either depending on the other.

/// Macros over plain values and their arity.
pub const MACROS: [(&str, usize); 6] = [
    ("heaviside", 1),
    ("step", 1),
    ("relu", 1),
    ("clip", 3),
    ("approx", 3),
    ("in_interval", 3),
];

/// Macros whose first argument is a state compared with its previous committed value.
pub const LAG_MACROS: [(&str, usize); 8] = [
    ("cross_up", 2),
    ("cross_down", 2),
    ("cross_either", 2),
    ("changed", 1),
    ("enters_interval", 3),
    ("leaves_interval", 3),
    ("increasing", 1),
    ("decreasing", 1),
];

pub const BUILTIN_FUNCTIONS: [&str; 32] = [
    "abs", "fabs", "exp", "expm1", "log", "log10", "log2", "log1p", "sqrt", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "floor", "ceil",
    "trunc", "round", "erf", "erfc", "sign", "atan2", "hypot", "copysign", "pow",
];

/// Every built-in function and macro name (and the Python builtins the language reserves):
/// none may name a model variable or function.
pub fn builtin_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = BUILTIN_FUNCTIONS.to_vec();
    v.extend([
        "min", "max", "fmod", "math", "sum", "prod", "range", "int", "float", "bool", "len",
    ]);
    v.extend(MACROS.iter().map(|(n, _)| *n));
    v.extend(LAG_MACROS.iter().map(|(n, _)| *n));
    v
}
