//! The C ABI call-sequence fuzzer, bounded: 2000 sequences from a seeded generator run on
//! stable Rust in every `cargo test`. The interpreter and its rules are in
//! `tests/fuzzing/abi_sequences.rs`, shared with the cargo-fuzz target
//! `fuzz/fuzz_targets/abi_sequences.rs` for longer runs (see the README's Hardening section).

#[path = "fuzzing/abi_sequences.rs"]
mod abi_sequences;

use std::time::Instant;

/// xorshift64*: a fixed seed gives the same sequences on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const SEQUENCES: u64 = 2000;

#[test]
fn random_abi_call_sequences_keep_every_rule() {
    let seed = std::env::var("DYNLIB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_D15C_0FFE_E000u64);
    let dir = std::env::temp_dir().join(format!("dynlib-abi-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(seed);
    let mut stats = abi_sequences::Stats::default();
    let start = Instant::now();
    for _ in 0..SEQUENCES {
        let len = 16 + (rng.next() % 400) as usize;
        let data: Vec<u8> = (0..len).map(|_| (rng.next() >> 56) as u8).collect();
        abi_sequences::run_sequence(&data, &dir, &mut stats);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "ABI sequence fuzzing: {} sequences, {} calls ({} OK, {} refused), {} re-entrant calls \
         from callbacks refused with BUSY, seed {seed:#x}, {:.1} s",
        stats.sequences,
        stats.calls,
        stats.ok,
        stats.failed,
        stats.busy_in_callbacks,
        start.elapsed().as_secs_f64()
    );
    assert_eq!(stats.sequences, SEQUENCES);
    // The generator must reach the interesting paths, or the run proves little.
    assert!(stats.calls > 20 * SEQUENCES, "{stats:?}");
    assert!(
        stats.ok > stats.calls / 10 && stats.failed > stats.calls / 10,
        "{stats:?}"
    );
    assert!(stats.busy_in_callbacks > 50, "{stats:?}");
}
