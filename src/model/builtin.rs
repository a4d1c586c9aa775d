//! Built-in models, embedded in the library and addressed as `builtin://ode/NAME` or
//! `builtin://map/NAME`.

use crate::error::{suggestion_suffix, Error, Result};

macro_rules! builtins {
    ($($id:literal),* $(,)?) => {
        /// (id, TOML text) of every built-in model.
        pub const BUILTINS: &[(&str, &str)] = &[
            $(($id, include_str!(concat!("builtin/", $id, ".toml")))),*
        ];
    };
}

builtins!(
    "ode/izhikevich",
    "ode/lorenz",
    "ode/vanderpol",
    "ode/expdecay",
    "ode/duffing",
    "ode/fitzhugh-nagumo",
    "ode/hodgkin-huxley",
    "ode/leaky-if",
    "ode/quadratic-if",
    "ode/exp-if",
    "ode/resonate-if",
    "ode/eto-circular",
    "map/logistic",
    "map/henon",
    "map/henon2",
    "map/ikeda",
    "map/lozi",
    "map/sine",
    "map/standard",
);

/// The TOML text of a built-in model, by id such as `ode/lorenz` (`.toml` optional).
pub fn lookup(id: &str) -> Result<&'static str> {
    let id = id.strip_suffix(".toml").unwrap_or(id);
    BUILTINS
        .iter()
        .find(|(k, _)| *k == id)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            Error::unknown(format!(
                "no built-in model 'builtin://{id}'{}; available: {}",
                suggestion_suffix(id, BUILTINS.iter().map(|(k, _)| *k)),
                BUILTINS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}
