//! Discrete maps: y₁ = F(y₀). `dt` only labels time.

use super::{Rhs, StepOutcome, Stepper, StepperInfo, WsArray};
use crate::error::Result;
use crate::method::ModelKind;

pub static INFO: StepperInfo = StepperInfo {
    name: "map",
    aliases: &["iter", "discrete"],
    kind: ModelKind::Map,
    adaptive: false,
    implicit: false,
    order: 1,
    embedded_order: None,
    dense_output: false,
    config: &[],
    description: "iterate a discrete map",
    legacy: None,
};

pub struct MapStepper;

impl MapStepper {
    pub fn new(_n: usize) -> Self {
        MapStepper
    }
}

impl Stepper for MapStepper {
    fn info(&self) -> &'static StepperInfo {
        &INFO
    }
    fn save(&self) -> Vec<WsArray> {
        Vec::new()
    }
    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        super::workspace::check_layout(ws, &[], "stepper")
    }
    fn restart(&mut self) {}
    fn step_form(&self) -> Option<crate::method::StepForm> {
        Some(crate::method::StepForm::Map)
    }
    fn step(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        _cfg: &[f64],
        y_new: &mut [f64],
    ) -> Result<StepOutcome> {
        f.eval(t, y, y_new)?;
        Ok(StepOutcome {
            h_used: h,
            h_next: h,
        })
    }
}
