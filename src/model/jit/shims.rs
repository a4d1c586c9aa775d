//! C-ABI entry points to the interpreter's math, called from native code.
//!
//! Every function here forwards to [`call1`] / [`call2`], the very implementations the
//! interpreter runs, so native code and interpreter give the same bits for every function that
//! is not an exactly rounded IEEE operation (those are emitted as instructions).

use crate::model::program::{call1, call2, Fn1, Fn2};

/// A native-code-callable one-argument function.
pub type Shim1 = extern "C" fn(f64) -> f64;
/// A native-code-callable two-argument function.
pub type Shim2 = extern "C" fn(f64, f64) -> f64;

macro_rules! shims1 {
    ($($variant:ident => $name:ident),* $(,)?) => {
        $(extern "C" fn $name(x: f64) -> f64 { call1(Fn1::$variant, x) })*

        /// The symbol and address native code calls for `f`, or `None` when `f` is emitted as
        /// instructions.
        pub fn unary(f: Fn1) -> Option<(&'static str, Shim1)> {
            match f {
                $(Fn1::$variant => Some((concat!("dynlib_jit_", stringify!($name)), $name as Shim1)),)*
                Fn1::Neg | Fn1::Not | Fn1::Abs | Fn1::Sqrt => None,
            }
        }

        /// Every one-argument shim (registered with the JIT linker).
        pub fn all_unary() -> Vec<(&'static str, Shim1)> {
            vec![$((concat!("dynlib_jit_", stringify!($name)), $name as Shim1)),*]
        }
    };
}

macro_rules! shims2 {
    ($($variant:ident => $name:ident),* $(,)?) => {
        $(extern "C" fn $name(a: f64, b: f64) -> f64 { call2(Fn2::$variant, a, b) })*

        /// The symbol and address native code calls for `f`, or `None` when `f` is emitted as
        /// instructions.
        pub fn binary(f: Fn2) -> Option<(&'static str, Shim2)> {
            match f {
                $(Fn2::$variant => Some((concat!("dynlib_jit_", stringify!($name)), $name as Shim2)),)*
                Fn2::Add | Fn2::Sub | Fn2::Mul | Fn2::Div | Fn2::Min | Fn2::Max | Fn2::Lt
                | Fn2::Le | Fn2::Gt | Fn2::Ge | Fn2::Eq | Fn2::Ne | Fn2::And | Fn2::Or => None,
            }
        }

        /// Every two-argument shim (registered with the JIT linker).
        pub fn all_binary() -> Vec<(&'static str, Shim2)> {
            vec![$((concat!("dynlib_jit_", stringify!($name)), $name as Shim2)),*]
        }
    };
}

shims1!(
    Exp => exp,
    Expm1 => expm1,
    Ln => ln,
    Log10 => log10,
    Log2 => log2,
    Log1p => log1p,
    Sin => sin,
    Cos => cos,
    Tan => tan,
    Asin => asin,
    Acos => acos,
    Atan => atan,
    Sinh => sinh,
    Cosh => cosh,
    Tanh => tanh,
    Asinh => asinh,
    Acosh => acosh,
    Atanh => atanh,
    // Rounding is exact, but routing it through the shared code keeps NaN payloads and the
    // no-SSE4.1 fallback identical without reasoning about each instruction.
    Floor => floor,
    Ceil => ceil,
    Trunc => trunc,
    Round => round,
    Erf => erf,
    Erfc => erfc,
    Sign => sign,
);

shims2!(
    FloorDiv => floordiv,
    Mod => modulo,
    Pow => pow,
    Atan2 => atan2,
    Hypot => hypot,
    Copysign => copysign,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_forward_to_the_interpreter_math() {
        for (name, f) in all_unary() {
            assert!(name.starts_with("dynlib_jit_"));
            let _ = f(0.3);
        }
        let (_, sin) = unary(Fn1::Sin).unwrap();
        assert_eq!(sin(0.7).to_bits(), call1(Fn1::Sin, 0.7).to_bits());
        let (_, pow) = binary(Fn2::Pow).unwrap();
        assert_eq!(pow(1.3, 2.7).to_bits(), call2(Fn2::Pow, 1.3, 2.7).to_bits());
        assert!(unary(Fn1::Sqrt).is_none());
        assert!(binary(Fn2::Min).is_none());
        assert_eq!(all_binary().len(), 6);
    }
}
