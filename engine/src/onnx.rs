//! Reads the weights of an ONNX model natively, without an ONNX runtime.
//!
//! spiral runs its own kernels, so from an `.onnx` file it needs only the float
//! initializers (the trained weights) and the attributes of the convolutions that use
//! them. The protobuf is decoded with `prost` through hand-written message structs that
//! declare just those fields; everything else in the file is skipped unread.
//!
//! Names are made canonical: a PyTorch export folds weight norm into new, anonymous
//! initializers (`onnx::Conv_8168`) and may keep an input's name for a weight (`sid` is the
//! phoneme embedding of a Piper voice). Every Conv, ConvTranspose, Gemm, MatMul and Gather
//! node is named after its module path (`/flow/flows.6/enc/in_layers.0/Conv`), so a weight
//! or bias feeding such a node is stored as `<module>.weight` / `<module>.bias`
//! (`flow.flows.6.enc.in_layers.0.weight`). The mapping goes through the graph because the
//! anonymous initializers are not stored in module order.
//!
//! ```no_run
//! let model = spiral_engine::onnx::read("en_US-joe-medium.onnx")?;
//! let up = model.conv_attrs("dec.ups.0").expect("a transposed convolution");
//! assert_eq!(up.stride, 8);
//! assert!(model.tensors.contains("enc_p.emb.weight"));
//! # Ok::<(), spiral_engine::onnx::OnnxError>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use thiserror::Error;

use crate::tensors::{Tensor, TensorError, Tensors};

/// The subset of `onnx.proto` that spiral reads; field numbers are ONNX's.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int64, tag = "3")]
        pub i: i64,
        #[prost(bytes = "vec", tag = "4")]
        pub s: Vec<u8>,
        #[prost(int64, repeated, packed = "false", tag = "8")]
        pub ints: Vec<i64>,
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    // ONNX is proto2: `dims` is unpacked on the wire, the data arrays are declared packed.
    // prost accepts either encoding when decoding, so only encoding (tests) cares.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, packed = "false", tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        #[prost(string, tag = "8")]
        pub name: String,
        // `Bytes` so that the weights are slices of the file buffer, not copies.
        #[prost(bytes = "bytes", tag = "9")]
        pub raw_data: bytes::Bytes,
        #[prost(double, repeated, tag = "10")]
        pub double_data: Vec<f64>,
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }
}

/// ONNX `TensorProto.DataType` codes.
mod dtype {
    pub const FLOAT: i32 = 1;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const BFLOAT16: i32 = 16;
    /// UINT8..INT64, STRING, BOOL, UINT32, UINT64, UINT4, INT4: shapes, indices and masks.
    pub const PLUMBING: [i32; 12] = [2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 21, 22];

    pub fn name(code: i32) -> &'static str {
        match code {
            0 => "UNDEFINED",
            14 => "COMPLEX64",
            15 => "COMPLEX128",
            17..=20 => "FLOAT8",
            23 => "FLOAT4E2M1",
            24 => "FLOAT8E8M0",
            _ => "unknown",
        }
    }
}

/// `TensorProto.data_location` for data kept in a separate file.
const EXTERNAL: i32 = 1;

/// The attributes of one 1-D convolution (Conv or ConvTranspose), ONNX defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvAttrs {
    /// Step between output positions (the upsampling factor of a ConvTranspose).
    pub stride: usize,
    /// Padding at the start and at the end of the time axis.
    pub pads: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups (the channel count for a depthwise convolution).
    pub group: usize,
    /// Kernel length in taps.
    pub kernel: usize,
}

/// What spiral takes from an ONNX file: its float weights under canonical names and the
/// attributes of its convolutions under the same module names.
#[derive(Debug)]
pub struct OnnxModel {
    /// Float weights under canonical names (see the module docs).
    pub tensors: Tensors,
    /// Conv / ConvTranspose attributes by module name (`dec.ups.0`).
    pub convs: HashMap<String, ConvAttrs>,
    /// Who wrote the file (`pytorch` for Piper voices).
    pub producer: String,
    /// ONNX IR version of the file.
    pub ir_version: i64,
    /// Version of the default ONNX operator set, if the file declares it.
    pub opset: Option<i64>,
    /// Names of the graph's inputs, in order.
    pub inputs: Vec<String>,
    /// Names of the graph's outputs, in order.
    pub outputs: Vec<String>,
}

impl OnnxModel {
    /// The attributes of the convolution of module `module` (`dec.ups.0`), if there is one.
    pub fn conv_attrs(&self, module: &str) -> Option<ConvAttrs> {
        self.convs.get(module).copied()
    }

    /// Number of float parameters held.
    pub fn parameter_count(&self) -> usize {
        self.tensors.names().iter().filter_map(|n| self.tensors.get(n).ok()).map(|t| t.data().len()).sum()
    }
}

/// Why an ONNX file could not be read; every variant names the file and the remedy.
#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("cannot read {file}: {source}; check the path (download the voice again if it should be there)")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is not a readable ONNX model ({source}): it is damaged or truncated; download the voice again")]
    Decode {
        file: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{file} is an ONNX file without a graph, so it holds no weights; download the voice again")]
    NoGraph { file: PathBuf },
    #[error(
        "{file}: tensor {name:?} keeps its data in an external file, which spiral does not read; \
         use a model with its weights inside the .onnx (download the voice again)"
    )]
    ExternalData { file: PathBuf, name: String },
    #[error(
        "{file}: tensor {name:?} has ONNX data type {code} ({kind}), which spiral cannot use as weights \
         (it reads float32, float16, bfloat16 and float64); download the voice again, or use a float model"
    )]
    DataType { file: PathBuf, name: String, code: i32, kind: &'static str },
    #[error("{file}: tensor {name:?} has invalid dimensions {dims:?}; the file is damaged, download the voice again")]
    Dims { file: PathBuf, name: String, dims: Vec<i64> },
    #[error(
        "{file}: tensor {name:?} of shape {dims:?} needs {expected} {unit} of data but has {got}; \
         the file is damaged, download the voice again"
    )]
    Length { file: PathBuf, name: String, dims: Vec<i64>, expected: usize, got: usize, unit: &'static str },
    #[error("{file}: node {node:?}: {reason}; spiral runs 1-D convolutions only, so it cannot use this model")]
    Conv { file: PathBuf, node: String, reason: String },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Reads the float weights and convolution attributes of the ONNX model at `path`.
pub fn read(path: impl AsRef<Path>) -> Result<OnnxModel, OnnxError> {
    let path = path.as_ref();
    let io = |source| OnnxError::Read { file: path.into(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    // Mapped, not read: the initializers' raw data are then slices of the page cache until
    // they are converted, instead of a 63 MB copy of the file first (a quarter of a one-shot
    // `spiral speak`'s startup went to that copy and its page faults).
    // SAFETY: the mapping is read-only; a model rewritten while spiral runs is outside what
    // any loader can defend against (as for `Checkpoint`).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    decode(path, Bytes::from_owner(map))
}

/// Decodes an ONNX model held in memory; `file` is named in errors.
pub fn decode(file: &Path, bytes: Bytes) -> Result<OnnxModel, OnnxError> {
    let model = proto::ModelProto::decode(bytes).map_err(|source| OnnxError::Decode { file: file.into(), source })?;
    let graph = model.graph.ok_or_else(|| OnnxError::NoGraph { file: file.into() })?;
    let opset = model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version);

    let mut floats = Vec::new();
    for init in &graph.initializer {
        if let Some(tensor) = float_tensor(file, init)? {
            floats.push((init.name.as_str(), tensor));
        }
    }
    let is_float: std::collections::HashSet<&str> = floats.iter().map(|(n, _)| *n).collect();
    let renames = canonical_names(&graph.node, &is_float);

    let mut tensors = Tensors::new(file);
    for (name, tensor) in floats {
        match renames.get(name).map(Vec::as_slice) {
            None | Some([]) => tensors.insert(name, tensor)?,
            // A weight tied between modules is stored once per module that uses it.
            Some([rest @ .., last]) => {
                for canonical in rest {
                    tensors.insert(canonical.as_str(), tensor.clone())?;
                }
                tensors.insert(last.as_str(), tensor)?;
            }
        }
    }

    let init_dims: HashMap<&str, &[i64]> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t.dims.as_slice())).collect();
    let convs = conv_attributes(file, &graph.node, &init_dims)?;

    Ok(OnnxModel {
        tensors,
        convs,
        producer: model.producer_name,
        ir_version: model.ir_version,
        opset,
        inputs: graph.input.into_iter().map(|v| v.name).collect(),
        outputs: graph.output.into_iter().map(|v| v.name).collect(),
    })
}

/// Converts a float initializer to an f32 [`Tensor`]; integer tensors are graph plumbing
/// (shapes, indices) and yield `None`.
fn float_tensor(file: &Path, t: &proto::TensorProto) -> Result<Option<Tensor>, OnnxError> {
    let code = t.data_type;
    if dtype::PLUMBING.contains(&code) {
        return Ok(None);
    }
    if ![dtype::FLOAT, dtype::FLOAT16, dtype::BFLOAT16, dtype::DOUBLE].contains(&code) {
        return Err(OnnxError::DataType { file: file.into(), name: t.name.clone(), code, kind: dtype::name(code) });
    }
    if t.data_location == EXTERNAL {
        return Err(OnnxError::ExternalData { file: file.into(), name: t.name.clone() });
    }
    let bad_dims = || OnnxError::Dims { file: file.into(), name: t.name.clone(), dims: t.dims.clone() };
    let shape: Vec<usize> =
        t.dims.iter().map(|&d| usize::try_from(d).map_err(|_| bad_dims())).collect::<Result<_, _>>()?;
    let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(bad_dims)?;

    let length = |expected: usize, got: usize, unit: &'static str| OnnxError::Length {
        file: file.into(),
        name: t.name.clone(),
        dims: t.dims.clone(),
        expected,
        got,
        unit,
    };
    let raw = &t.raw_data;
    let sized = |width: usize| {
        let expected = elements.checked_mul(width).ok_or_else(bad_dims)?;
        if raw.len() == expected {
            Ok(&raw[..])
        } else {
            Err(length(expected, raw.len(), "bytes"))
        }
    };
    // Generic, so each conversion is inlined into its loop (through a function pointer it
    // was one call per value: a tenth of loading a voice).
    fn values<const W: usize>(raw: &[u8], convert: impl Fn([u8; W]) -> f32) -> Vec<f32> {
        raw.chunks_exact(W).map(|b| convert(b.try_into().expect("chunks of W"))).collect()
    }
    let counted = |got: usize| if got == elements { Ok(()) } else { Err(length(elements, got, "values")) };

    // raw_data, when present, wins: that is how exporters write all but tiny tensors.
    let data = match code {
        dtype::FLOAT if !raw.is_empty() => values(sized(4)?, f32::from_le_bytes),
        dtype::FLOAT => counted(t.float_data.len()).map(|_| t.float_data.clone())?,
        dtype::DOUBLE if !raw.is_empty() => values(sized(8)?, |b| f64::from_le_bytes(b) as f32),
        dtype::DOUBLE => counted(t.double_data.len()).map(|_| t.double_data.iter().map(|&v| v as f32).collect())?,
        dtype::FLOAT16 if !raw.is_empty() => values(sized(2)?, |b| half::f16::from_le_bytes(b).to_f32()),
        dtype::BFLOAT16 if !raw.is_empty() => values(sized(2)?, |b| half::bf16::from_le_bytes(b).to_f32()),
        // Without raw_data, 16-bit floats sit in the low half of int32_data.
        dtype::FLOAT16 => {
            counted(t.int32_data.len())?;
            t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f32()).collect()
        }
        // BFLOAT16, the only code left after the checks above.
        _ => {
            counted(t.int32_data.len())?;
            t.int32_data.iter().map(|&v| half::bf16::from_bits(v as u16).to_f32()).collect()
        }
    };
    Ok(Some(Tensor::new(shape, data).map_err(|_| bad_dims())?))
}

/// The module path of a node named by PyTorch's exporter: `/enc_p/emb/Gather` -> `enc_p.emb`.
/// Nodes at the top level (`/Gather`) or without a scoped name belong to no module.
fn module_of(node_name: &str) -> Option<String> {
    let (module, _op) = node_name.strip_prefix('/')?.rsplit_once('/')?;
    (!module.is_empty()).then(|| module.replace('/', "."))
}

/// Which inputs of an op are its parameters, and what PyTorch calls them.
fn parameter_inputs(op_type: &str) -> &'static [(usize, &'static str)] {
    match op_type {
        "Conv" | "ConvTranspose" | "Gemm" => &[(1, "weight"), (2, "bias")],
        "MatMul" => &[(1, "weight")],
        "Gather" => &[(0, "weight")],
        _ => &[],
    }
}

/// For each float initializer that feeds a module's parameter slot under another name,
/// the canonical name(s) it must be stored under.
fn canonical_names(
    nodes: &[proto::NodeProto],
    is_float: &std::collections::HashSet<&str>,
) -> HashMap<String, Vec<String>> {
    let mut renames: HashMap<String, Vec<String>> = HashMap::new();
    for node in nodes {
        let Some(module) = module_of(&node.name) else { continue };
        for &(index, role) in parameter_inputs(&node.op_type) {
            let Some(input) = node.input.get(index) else { continue };
            let canonical = format!("{module}.{role}");
            if !is_float.contains(input.as_str()) || *input == canonical {
                continue;
            }
            let names = renames.entry(input.clone()).or_default();
            if !names.contains(&canonical) {
                names.push(canonical);
            }
        }
    }
    renames
}

/// The attributes of every named Conv / ConvTranspose node, by module.
fn conv_attributes(
    file: &Path,
    nodes: &[proto::NodeProto],
    init_dims: &HashMap<&str, &[i64]>,
) -> Result<HashMap<String, ConvAttrs>, OnnxError> {
    let mut convs = HashMap::new();
    for node in nodes.iter().filter(|n| n.op_type == "Conv" || n.op_type == "ConvTranspose") {
        let Some(module) = module_of(&node.name) else { continue };
        let attrs = conv_attrs_of(node, init_dims).map_err(|reason| OnnxError::Conv {
            file: file.into(),
            node: node.name.clone(),
            reason,
        })?;
        if let Some(earlier) = convs.insert(module.clone(), attrs) {
            if earlier != attrs {
                let reason = format!("module {module:?} has convolutions with different attributes");
                return Err(OnnxError::Conv { file: file.into(), node: node.name.clone(), reason });
            }
        }
    }
    Ok(convs)
}

/// Reads one 1-D convolution's attributes, applying ONNX's defaults for absent ones.
fn conv_attrs_of(node: &proto::NodeProto, init_dims: &HashMap<&str, &[i64]>) -> Result<ConvAttrs, String> {
    let weight_dims = node.input.get(1).and_then(|w| init_dims.get(w.as_str())).copied();
    if let Some(dims) = weight_dims {
        if dims.len() != 3 {
            return Err(format!("its weight has {} dimensions ({dims:?}), not 3", dims.len()));
        }
    }
    let (mut strides, mut pads, mut dilations, mut group, mut kernel) = (vec![1], vec![0, 0], vec![1], 1, None);
    for a in &node.attribute {
        match a.name.as_str() {
            "strides" => strides = a.ints.clone(),
            "pads" => pads = a.ints.clone(),
            "dilations" => dilations = a.ints.clone(),
            "group" => group = a.i,
            "kernel_shape" => kernel = Some(a.ints.clone()),
            "auto_pad" if !a.s.is_empty() && a.s != b"NOTSET" => {
                return Err(format!("auto_pad {:?} is not supported", String::from_utf8_lossy(&a.s)));
            }
            "output_padding" if a.ints.iter().any(|&p| p != 0) => {
                return Err(format!("output_padding {:?} is not supported", a.ints));
            }
            "output_shape" if !a.ints.is_empty() => return Err("output_shape is not supported".into()),
            _ => {}
        }
    }
    let kernel = match (kernel, weight_dims) {
        (Some(k), _) => k,
        (None, Some(dims)) => dims[2..].to_vec(),
        (None, None) => return Err("it has no kernel_shape and its weight is not an initializer".into()),
    };
    let one = |what: &str, v: &[i64], min: i64| -> Result<usize, String> {
        match v {
            [x] if *x >= min => Ok(*x as usize),
            [x] => Err(format!("{what} {x} is below {min}")),
            _ => Err(format!("{what} {v:?} is not one value (not a 1-D convolution)")),
        }
    };
    // The kernel first: its rank is what tells a 2-D convolution apart most plainly.
    let kernel = one("kernel_shape", &kernel, 1)?;
    let pads = match pads.as_slice() {
        [a, b] if *a >= 0 && *b >= 0 => (*a as usize, *b as usize),
        _ => return Err(format!("pads {pads:?} are not two non-negative values (not a 1-D convolution)")),
    };
    Ok(ConvAttrs {
        stride: one("strides", &strides, 1)?,
        pads,
        dilation: one("dilations", &dilations, 1)?,
        group: one("group", &[group], 1)?,
        kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;

    fn raw_f32(values: &[f32]) -> Bytes {
        values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
    }

    fn tensor(name: &str, dims: &[i64], data_type: i32) -> TensorProto {
        TensorProto { name: name.into(), dims: dims.to_vec(), data_type, ..Default::default() }
    }

    fn node(name: &str, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![format!("{name}_output_0")],
            attribute,
        }
    }

    fn ints(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto { name: name.into(), ints: values.to_vec(), r#type: 7, ..Default::default() }
    }

    fn encoded(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> Bytes {
        let graph = GraphProto { node: nodes, initializer, ..Default::default() };
        let model =
            ModelProto { ir_version: 8, producer_name: "test".into(), graph: Some(graph), ..Default::default() };
        model.encode_to_vec().into()
    }

    fn load(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> Result<OnnxModel, OnnxError> {
        decode(Path::new("/m/test.onnx"), encoded(nodes, initializer))
    }

    #[test]
    fn every_float_encoding_converts_and_integers_are_skipped() {
        let mut f32_raw = tensor("a.raw", &[2], dtype::FLOAT);
        f32_raw.raw_data = raw_f32(&[1.5, -2.0]);
        let mut f32_list = tensor("a.list", &[1, 2], dtype::FLOAT);
        f32_list.float_data = vec![0.25, 4.0];
        let mut f16_raw = tensor("h.raw", &[2], dtype::FLOAT16);
        f16_raw.raw_data = Bytes::from_static(&[0x00, 0x3C, 0x00, 0xC0]); // 1.0, -2.0
        let mut bf16_list = tensor("b.list", &[2], dtype::BFLOAT16);
        bf16_list.int32_data = vec![0x3F80, 0x4049]; // 1.0, 3.140625
        let mut bf16_raw = tensor("b.raw", &[1], dtype::BFLOAT16);
        bf16_raw.raw_data = Bytes::from_static(&[0x49, 0x40]);
        let mut f64_raw = tensor("d.raw", &[1], dtype::DOUBLE);
        f64_raw.raw_data = Bytes::copy_from_slice(&0.1f64.to_le_bytes());
        let mut f64_list = tensor("d.list", &[], dtype::DOUBLE);
        f64_list.double_data = vec![-3.5];
        let mut shape = tensor("shape", &[2], 7);
        shape.int64_data = vec![1, 2];
        let m = load(vec![], vec![f32_raw, f32_list, f16_raw, bf16_list, bf16_raw, f64_raw, f64_list, shape]).unwrap();
        let get = |n: &str| m.tensors.get(n).unwrap().clone();
        assert_eq!(get("a.raw").data(), [1.5, -2.0]);
        assert_eq!((get("a.list").shape(), get("a.list").data()), (&[1, 2][..], &[0.25, 4.0][..]));
        assert_eq!(get("h.raw").data(), [1.0, -2.0]);
        assert_eq!(get("b.list").data(), [1.0, 3.140625]);
        assert_eq!(get("b.raw").data(), [3.140625]);
        assert_eq!(get("d.raw").data(), [0.1f32]);
        assert_eq!((get("d.list").shape(), get("d.list").data()), (&[][..], &[-3.5][..]));
        assert!(!m.tensors.contains("shape"), "integer tensors are plumbing");
        assert_eq!(m.parameter_count(), 11);
    }

    #[test]
    fn anonymous_weights_are_named_through_the_graph_not_by_order() {
        // Initializers listed in the opposite order of the modules that use them.
        let mut second = tensor("onnx::Conv_2", &[4, 2, 3], dtype::FLOAT);
        second.raw_data = raw_f32(&[2.0; 24]);
        let mut first = tensor("onnx::Conv_1", &[4, 2, 3], dtype::FLOAT);
        first.raw_data = raw_f32(&[1.0; 24]);
        let mut bias = tensor("net.0.bias", &[4], dtype::FLOAT);
        bias.raw_data = raw_f32(&[0.0; 4]);
        let mut emb = tensor("sid", &[3, 2], dtype::FLOAT);
        emb.raw_data = raw_f32(&[9.0; 6]);
        let mut other = tensor("/net/Exp_output_0", &[1], dtype::FLOAT);
        other.raw_data = raw_f32(&[7.0]);
        let nodes = vec![
            node("/emb/Gather", "Gather", &["sid", "ids"], vec![]),
            node("/net/0/Conv", "Conv", &["x", "onnx::Conv_1", "net.0.bias"], vec![]),
            node("/net/1/Conv", "Conv", &["y", "onnx::Conv_2"], vec![ints("pads", &[1, 1])]),
            node("/net/Exp", "Exp", &["/net/Exp_output_0"], vec![]),
            node("/Gather", "Gather", &["/net/Exp_output_0", "i"], vec![]),
        ];
        let m = load(nodes, vec![second, first, bias, emb, other]).unwrap();
        assert_eq!(
            m.tensors.names(),
            ["/net/Exp_output_0", "emb.weight", "net.0.bias", "net.0.weight", "net.1.weight"]
        );
        assert_eq!(m.tensors.get("net.0.weight").unwrap().data()[0], 1.0);
        assert_eq!(m.tensors.get("net.1.weight").unwrap().data()[0], 2.0);
        assert_eq!(m.tensors.get("emb.weight").unwrap().shape(), [3, 2]);
        // Defaults when attributes are absent; the kernel comes from the weight's shape.
        let plain = ConvAttrs { stride: 1, pads: (0, 0), dilation: 1, group: 1, kernel: 3 };
        assert_eq!(m.conv_attrs("net.0"), Some(plain));
        assert_eq!(m.conv_attrs("net.1"), Some(ConvAttrs { pads: (1, 1), ..plain }));
        assert_eq!(m.conv_attrs("net"), None);
    }

    fn err(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> String {
        let e = load(nodes, initializer).unwrap_err().to_string();
        assert!(e.contains("/m/test.onnx"), "error does not name the file: {e}");
        e
    }

    #[test]
    fn bad_tensors_are_errors_naming_tensor_and_fix() {
        let mut external = tensor("w", &[2], dtype::FLOAT);
        external.data_location = EXTERNAL;
        let e = err(vec![], vec![external]);
        assert!(e.contains("\"w\"") && e.contains("external file"), "{e}");

        let e = err(vec![], vec![tensor("c", &[2], 14)]);
        assert!(e.contains("\"c\"") && e.contains("COMPLEX64"), "{e}");

        let mut short = tensor("s", &[2, 3], dtype::FLOAT);
        short.raw_data = raw_f32(&[1.0; 5]);
        let e = err(vec![], vec![short]);
        assert!(e.contains("\"s\"") && e.contains("24 bytes") && e.contains("has 20") && e.contains("download"), "{e}");

        let mut missing = tensor("m", &[3], dtype::FLOAT);
        missing.float_data = vec![1.0];
        assert!(err(vec![], vec![missing]).contains("needs 3 values of data but has 1"));

        let mut negative = tensor("n", &[-1, 2], dtype::FLOAT);
        negative.float_data = vec![1.0];
        assert!(err(vec![], vec![negative]).contains("invalid dimensions [-1, 2]"));

        let huge = tensor("x", &[i64::MAX, i64::MAX], dtype::FLOAT16);
        assert!(err(vec![], vec![huge]).contains("invalid dimensions"));
    }

    #[test]
    fn only_one_dimensional_convolutions_are_accepted() {
        let mut w2d = tensor("k", &[4, 2, 3, 3], dtype::FLOAT);
        w2d.raw_data = raw_f32(&[0.0; 72]);
        let e = err(vec![node("/a/Conv", "Conv", &["x", "k"], vec![])], vec![w2d]);
        assert!(e.contains("\"/a/Conv\"") && e.contains("not 3") && e.contains("1-D"), "{e}");

        let two = vec![ints("kernel_shape", &[3, 3]), ints("strides", &[1, 1])];
        let e = err(vec![node("/a/Conv", "Conv", &["x", "w"], two)], vec![]);
        assert!(e.contains("kernel_shape [3, 3]"), "{e}");
        let e = err(vec![node("/a/Conv", "Conv", &["x", "w"], vec![])], vec![]);
        assert!(e.contains("no kernel_shape"), "{e}");
        let e = err(
            vec![node("/a/Conv", "Conv", &["x", "w"], vec![ints("kernel_shape", &[3]), ints("strides", &[0])])],
            vec![],
        );
        assert!(e.contains("strides 0 is below 1"), "{e}");
        let same_upper = AttributeProto { name: "auto_pad".into(), s: b"SAME_UPPER".to_vec(), ..Default::default() };
        let e = err(vec![node("/a/Conv", "Conv", &["x", "w"], vec![ints("kernel_shape", &[3]), same_upper])], vec![]);
        assert!(e.contains("SAME_UPPER"), "{e}");
        let out_pad = vec![ints("kernel_shape", &[4]), ints("output_padding", &[1])];
        assert!(err(vec![node("/u/ConvTranspose", "ConvTranspose", &["x", "w"], out_pad)], vec![])
            .contains("output_padding"));
    }

    #[test]
    fn not_onnx_is_an_error() {
        let file = Path::new("/m/test.onnx");
        let e = decode(file, Bytes::new()).unwrap_err().to_string();
        assert!(e.contains("/m/test.onnx") && e.contains("without a graph"), "{e}");
        let e = read("/nonexistent/dir/v.onnx").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/dir/v.onnx") && e.contains("cannot read"), "{e}");
    }

    /// The real default voice: downloaded once into the user's voice cache if absent.
    mod joe {
        use super::*;
        use crate::voices;

        fn joe() -> PathBuf {
            voices::default_voice().unwrap_or_else(|e| panic!("the joe voice is needed for this test: {e}")).model
        }

        fn bits(t: &Tensor, at: &[usize]) -> Vec<u32> {
            at.iter().map(|&i| t.data()[i].to_bits()).collect()
        }

        fn sum(t: &Tensor) -> f64 {
            t.data().iter().map(|&v| v as f64).sum()
        }

        #[test]
        fn joe_voice_loads_with_canonical_names_and_conv_attributes() {
            let m = read(joe()).unwrap();
            assert_eq!((m.producer.as_str(), m.ir_version, m.opset), ("pytorch", 8, Some(15)));
            assert_eq!(m.inputs, ["input", "input_lengths", "scales"]);
            assert_eq!(m.outputs, ["output"]);
            assert_eq!(m.parameter_count(), 15_650_475, "15.6 M float parameters");
            assert!(
                m.tensors.names().iter().all(|n| !n.starts_with("onnx::") && *n != "sid"),
                "{:?}",
                m.tensors.names()
            );

            // Values read with python `onnx` from onnx::Conv_8168 (flows.6) and onnx::Conv_8240
            // (flows.0, stored after flows.6 in the file) and from `sid`: first three and last.
            let t = m.tensors.get("flow.flows.6.enc.in_layers.0.weight").unwrap();
            assert_eq!(t.shape(), [384, 192, 5]);
            let last = t.data().len() - 1;
            assert_eq!(bits(t, &[0, 1, 2, last]), [0xba28acc4, 0xbaa656a2, 0xbcaa16a4, 0xbc723a21]);
            assert!((sum(t) - 52.362641682845755).abs() < 1e-9);
            let t = m.tensors.get("flow.flows.0.enc.in_layers.0.weight").unwrap();
            assert_eq!(bits(t, &[0, 1, 2, last]), [0xbc259bf9, 0x3b4e280a, 0x3c8daf76, 0xbca6583e]);
            assert!((sum(t) - 11.635211758614055).abs() < 1e-9);
            let t = m.tensors.get("enc_p.emb.weight").unwrap();
            assert_eq!(t.shape(), [256, 192]);
            assert_eq!(bits(t, &[0, 1, 2, 256 * 192 - 1]), [0x3b97c2d7, 0xbb43487f, 0xbb83e396, 0xbda99f1a]);
            assert!((sum(t) - 7.35867623362077).abs() < 1e-9);
            assert_eq!(m.tensors.get("flow.flows.6.enc.res_skip_layers.3.weight").unwrap().shape(), [192, 192, 1]);
            assert_eq!(m.tensors.get("/dp/flows.0/Exp_output_0").unwrap().shape(), [2, 1]);
            assert_eq!(m.tensors.get("enc_p.encoder.attn_layers.0.conv_q.weight").unwrap().shape(), [192, 192, 1]);

            assert_eq!(m.convs.len(), 132);
            let up = ConvAttrs { stride: 8, pads: (4, 4), dilation: 1, group: 1, kernel: 16 };
            assert_eq!(m.conv_attrs("dec.ups.0"), Some(up));
            assert_eq!(m.conv_attrs("dec.ups.2"), Some(ConvAttrs { stride: 4, pads: (2, 2), kernel: 8, ..up }));
            let dilated = ConvAttrs { stride: 1, pads: (36, 36), dilation: 12, group: 1, kernel: 7 };
            assert_eq!(m.conv_attrs("dec.resblocks.2.convs.1"), Some(dilated));
            let depthwise = ConvAttrs { stride: 1, pads: (3, 3), dilation: 3, group: 192, kernel: 3 };
            assert_eq!(m.conv_attrs("dp.convs.convs_sep.1"), Some(depthwise));
        }

        #[test]
        fn damaged_copies_are_errors_not_panics() {
            let original = std::fs::read(joe()).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            let noise: Vec<u8> = (0..65_536)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let cases = [
                ("first-1mb.onnx", &original[..1 << 20]),
                ("minus-100.onnx", &original[..original.len() - 100]),
                ("noise.onnx", &noise[..]),
            ];
            for (name, bytes) in cases {
                let path = dir.path().join(name);
                std::fs::write(&path, bytes).unwrap();
                let e = read(&path).unwrap_err().to_string();
                assert!(e.contains(name) && e.contains("download the voice again"), "{name}: {e}");
            }
        }
    }
}
