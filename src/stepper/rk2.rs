//! Explicit midpoint: k₁ = f(t, y), k₂ = f(t + h/2, y + h/2·k₁), y₁ = y + h·k₂. Second order.

use super::erk::Tableau;
use super::StepperInfo;
use crate::method::ModelKind;

pub static TABLEAU: Tableau = Tableau {
    c: &[0.0, 0.5],
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
};

pub static INFO: StepperInfo = StepperInfo {
    name: "rk2",
    aliases: &["rk2_midpoint", "midpoint"],
    kind: ModelKind::Ode,
    adaptive: false,
    implicit: false,
    order: 2,
    embedded_order: None,
    dense_output: false,
    config: &[],
    description: "explicit midpoint Runge-Kutta, fixed step",
    legacy: None,
};
