//! Choosing how a model-language model is evaluated: the default, the explicit choices, and
//! the rule that the choice never reaches the spec hash or the snapshot pins.

use dynlib::{Backend, Model, RunOptions, Sim};

const LORENZ: &str = "builtin://ode/lorenz";

#[test]
fn the_interpreter_can_always_be_chosen() {
    let m = Model::load_with(LORENZ, Backend::Interpreter).unwrap();
    assert_eq!(m.backend(), Backend::Interpreter);
    assert_eq!(m.info_json()["backend"], "interpreter");
}

#[cfg(feature = "jit")]
#[test]
fn native_code_is_the_default_with_the_jit_feature() {
    assert_eq!(Model::load(LORENZ).unwrap().backend(), Backend::Native);
    assert_eq!(
        Model::load_with(LORENZ, Backend::Native).unwrap().backend(),
        Backend::Native
    );
}

#[cfg(not(feature = "jit"))]
#[test]
fn without_the_jit_feature_auto_interprets_and_native_is_refused() {
    assert_eq!(Model::load(LORENZ).unwrap().backend(), Backend::Interpreter);
    let err = Model::load_with(LORENZ, Backend::Native).unwrap_err();
    assert!(err.to_string().contains("feature `jit`"), "{err}");
}

#[test]
fn the_backend_is_not_pinned_and_snapshots_compare_equal() {
    let auto = Model::load(LORENZ).unwrap();
    let interp = auto.with_backend(Backend::Interpreter).unwrap();
    assert_eq!(auto.spec_hash, interp.spec_hash);
    let mut a = Sim::new(&auto).unwrap();
    let mut b = Sim::new(&interp).unwrap();
    assert_eq!(a.pins(), b.pins());
    for sim in [&mut a, &mut b] {
        sim.run(&RunOptions::new().t(1.0)).unwrap();
        sim.create_snapshot("s", "").unwrap();
        sim.run(&RunOptions::new().t(2.0).resume(true)).unwrap();
    }
    assert!(a.session_state().bits_eq(b.session_state()));
}
