//! A voice's weights and convolution attributes: from its Piper `.onnx`, or from the
//! `.safetensors` that `spiral compress` writes for a voice (docs/FORMATS.md).
//!
//! The compressed file holds every tensor under its canonical name (as [`onnx::read`]
//! names them), encoded ones flattened to `[out, rest]` rows of blocks; its metadata holds
//! the convolutions' attributes ([`CONVS_KEY`]) and the shapes of the flattened tensors
//! ([`SHAPES_KEY`]). Reading decodes every tensor back to f32: the voice's convolutions
//! run on f32 weights whatever the file holds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::onnx::{self, ConvAttrs};
use crate::tensors::{Tensor, Tensors};

use super::voice::SpeechError;

/// Metadata key: a JSON object from module name to `[stride, pad start, pad end, dilation,
/// group, kernel]`.
pub const CONVS_KEY: &str = "spiral.convs";
/// Metadata key: a JSON object from tensor name to its shape, for tensors stored flattened.
pub const SHAPES_KEY: &str = "spiral.shapes";

/// The tensors and convolution attributes of the voice model at `path`.
pub fn read(path: &Path) -> Result<(Tensors, HashMap<String, ConvAttrs>), SpeechError> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(read_compressed(path)?);
    }
    let model = onnx::read(path)?;
    Ok((model.tensors, model.convs))
}

fn read_compressed(path: &Path) -> Result<(Tensors, HashMap<String, ConvAttrs>), CheckpointError> {
    let ckpt = Checkpoint::open(path)?;
    let format = |detail: String| CheckpointError::Format { file: path.into(), detail };
    let json = |key: &str| {
        let text = ckpt.metadata(key).ok_or_else(|| format(format!("no {key}: not a voice spiral compress wrote")))?;
        serde_json::from_str::<BTreeMap<String, Vec<usize>>>(text).map_err(|e| format(format!("{key}: {e}")))
    };
    let mut convs = HashMap::new();
    for (module, a) in json(CONVS_KEY)? {
        let &[stride, start, end, dilation, group, kernel] = a.as_slice() else {
            return Err(format(format!("{CONVS_KEY}: {module} has {} values, not 6", a.len())));
        };
        convs.insert(module, ConvAttrs { stride, pads: (start, end), dilation, group, kernel });
    }
    let shapes = json(SHAPES_KEY)?;
    let mut tensors = Tensors::new(path);
    for name in ckpt.names() {
        let stored = ckpt.shape(name)?.to_vec();
        let values = ckpt.f32(name, &stored)?;
        let shape = shapes.get(name).cloned().unwrap_or(stored);
        let tensor = Tensor::new(shape, values).map_err(|e| format(format!("tensor {name:?}: {e}")))?;
        tensors.insert(name, tensor).map_err(|e| format(e.to_string()))?;
    }
    Ok((tensors, convs))
}

/// The metadata [`read`] expects beside the tensors of a compressed voice.
pub fn metadata(
    convs: &HashMap<String, ConvAttrs>,
    flattened: &BTreeMap<String, Vec<usize>>,
) -> BTreeMap<String, String> {
    let convs: BTreeMap<&String, [usize; 6]> =
        convs.iter().map(|(m, a)| (m, [a.stride, a.pads.0, a.pads.1, a.dilation, a.group, a.kernel])).collect();
    BTreeMap::from([
        (CONVS_KEY.to_string(), serde_json::to_string(&convs).expect("numbers serialize")),
        (SHAPES_KEY.to_string(), serde_json::to_string(flattened).expect("numbers serialize")),
    ])
}
