//! Piper / VITS voices.

pub mod config;
