//! Adams–Bashforth 2 with a Heun start-up step. One right-hand-side call per step.

use super::StepperInfo;
use crate::method::ModelKind;

pub static INFO: StepperInfo = StepperInfo {
    name: "ab2",
    aliases: &["adams_bashforth_2"],
    kind: ModelKind::Ode,
    adaptive: false,
    implicit: false,
    order: 2,
    embedded_order: None,
    dense_output: false,
    config: &[],
    description: "Adams-Bashforth 2, fixed step, Heun start-up",
    legacy: None,
};

pub fn new(n: usize) -> super::adams::AdamsBashforth {
    super::adams::AdamsBashforth::new(&INFO, 2, n)
}
