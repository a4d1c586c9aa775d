//! The seed workflow on a built-in model (the same code as `dynlib demo`): run, snapshot,
//! resume, branch — and a check that the resumed run is bit-identical to an uninterrupted one.
//!
//! cargo run --release -- demo      (or: cargo run --release --example demo)

fn main() -> dynlib::Result<()> {
    if !dynlib::demo::run(&mut std::io::stdout().lock())? {
        std::process::exit(1);
    }
    Ok(())
}
