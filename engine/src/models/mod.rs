//! Text-to-speech models.

pub mod vits;
