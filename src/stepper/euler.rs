//! Forward Euler: y₁ = y₀ + h·f(t, y₀). First order.

use super::erk::Tableau;
use super::StepperInfo;
use crate::method::ModelKind;

pub static TABLEAU: Tableau = Tableau {
    c: &[0.0],
    a: &[&[]],
    b: &[1.0],
};

pub static INFO: StepperInfo = StepperInfo {
    name: "euler",
    aliases: &["fwd_euler", "forward_euler"],
    kind: ModelKind::Ode,
    adaptive: false,
    implicit: false,
    order: 1,
    embedded_order: None,
    dense_output: false,
    config: &[],
    description: "forward Euler, fixed step",
    legacy: None,
};
