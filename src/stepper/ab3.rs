//! Adams–Bashforth 3 with a Heun start-up step and one AB2 step. One right-hand-side call per
//! step.

use super::StepperInfo;
use crate::method::ModelKind;

pub static INFO: StepperInfo = StepperInfo {
    name: "ab3",
    aliases: &["adams_bashforth_3"],
    kind: ModelKind::Ode,
    adaptive: false,
    implicit: false,
    order: 3,
    embedded_order: None,
    dense_output: false,
    config: &[],
    description: "Adams-Bashforth 3, fixed step, Heun and AB2 start-up",
    legacy: None,
};

pub fn new(n: usize) -> super::adams::AdamsBashforth {
    super::adams::AdamsBashforth::new(&INFO, 3, n)
}
