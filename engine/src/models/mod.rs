//! The text-to-speech models, one directory per family, built from the kernels.

pub mod cuts;
pub mod nn;
pub mod qwen3;
pub(crate) mod stream;
pub mod vits;
