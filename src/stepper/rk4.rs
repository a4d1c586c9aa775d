//! The classical fourth-order Runge–Kutta method.

use super::erk::Tableau;
use super::StepperInfo;
use crate::method::ModelKind;

pub static TABLEAU: Tableau = Tableau {
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
};

pub static INFO: StepperInfo = StepperInfo {
    name: "rk4",
    aliases: &["rk4_classic", "classical_rk4"],
    kind: ModelKind::Ode,
    adaptive: false,
    implicit: false,
    order: 4,
    embedded_order: None,
    dense_output: false,
    config: &[],
    description: "classical Runge-Kutta 4, fixed step",
    legacy: None,
};
