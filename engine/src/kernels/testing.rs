//! Test helpers shared by the kernel modules.

use super::cpu::{Cpu, Isa};

/// A token for every level this machine has, and a line saying which levels did not run.
pub fn available() -> Vec<Cpu> {
    let (run, skipped): (Vec<Isa>, Vec<Isa>) = Isa::ALL.into_iter().partition(|i| i.is_available());
    if !skipped.is_empty() {
        eprintln!("kernel paths not run here (this CPU or OS lacks them): {skipped:?}");
    }
    run.into_iter().map(|i| Cpu::forced(i).expect("available")).collect()
}

/// Lengths that hit empty input, every tail length around the vector widths, and large.
pub fn lengths() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=70).collect();
    v.extend([127, 128, 129, 255, 1000, 1023, 4096, 4099, 65_537]);
    v
}

/// Deterministic values in -1..1 (xorshift), different per `seed`.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
