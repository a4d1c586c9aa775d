//! Methods as data: the Butcher tableaux and Adams weights that both the general stepping
//! engine (`stepper`) and the fused native loops (`model::jit::kernel`) are built from, so the
//! two can never disagree about a coefficient.

/// A Butcher tableau: `a` is the strictly lower triangle, row `i` holding `i` entries.
#[derive(Debug)]
pub struct Tableau {
    pub c: &'static [f64],
    pub a: &'static [&'static [f64]],
    pub b: &'static [f64],
}

/// One step of a fixed-step explicit method written as straight-line arithmetic, for code
/// that runs many steps in one loop. Each form stands for exactly the IEEE operations, in
/// the same order, that the method's `Stepper::step` and `commit` perform.
#[derive(Debug, Clone, Copy)]
pub enum StepForm {
    /// `y_new = F(t, y)`.
    Map,
    /// Stages `k_i = f(t + c_i h, y + h (0 + Σ_j a_ij k_j))` (zero `a_ij` skipped), then
    /// `y_new = y + h (0 + Σ_i b_i k_i)` (zero `b_i` skipped).
    Erk(&'static Tableau),
    /// Adams–Bashforth in its steady state: `y_new = y + h (0 + Σ_i w_i f_{n-i})` over the
    /// history `f_n, f_{n-1}, …` (newest first, one weight per entry); after the commit
    /// `f(t_new, y_new)` becomes the newest entry and the oldest is dropped.
    Adams(&'static [f64]),
}
