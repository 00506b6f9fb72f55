//! spiral's numeric kernels: one module per operation family, each with a scalar
//! reference and SIMD paths, chosen at run time through a [`Cpu`] token.
//!
//! `SPIRAL_ISA=scalar|avx2|avx512|avx512vnni|avx512bf16|amx` forces a level
//! ([`Cpu::from_env`]); asking for a level the machine lacks is an error, never an
//! emulation.

pub mod activation;
pub mod bf16;
pub mod conv;
pub mod cpu;
mod deal;
pub mod gemm;
pub mod gemv;
pub mod palette;
mod prefetch;
mod q4_0;
mod q4k;
mod q6k;
mod q8;
pub mod quant;
pub mod rows;
mod scratch;
mod shared;
pub mod vector;

#[cfg(test)]
pub(crate) mod testing;

pub use cpu::{Cpu, Isa, IsaError};
