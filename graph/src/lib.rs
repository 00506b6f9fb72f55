//! `spiral-graph`: the frame graph between the engine and the output spine.
//!
//! Each frame the engine produces becomes one 60-byte `AudioNode` vertex; the streaming
//! scheduler asks the HHTL cascade per frame whether to skip, reuse or decode it. That work
//! is tracked in its own issue; this crate holds the place in the dependency order
//! (`engine` -> `graph` -> facade) so apps can depend on it now.
