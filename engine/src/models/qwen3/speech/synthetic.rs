//! Random-weight speech tokenizer checkpoints of any shape, in the reference's layout (its
//! `decoder.*` state dict names): for tests that need no fixture, and the decoder of the
//! synthetic real-shape checkpoint the benchmark runs (speed does not depend on the
//! weights' values).

use std::path::Path;

use super::config::{DecoderConfig, SpeechConfig};
use crate::checkpoint::{self, Spec, Stored};
use crate::models::qwen3::synthetic::Noise;

/// A `speech_tokenizer/config.json` with `decoder` as its `decoder_config` (the rest at
/// the reference's defaults, `decode_upsample_rate` made to agree).
pub fn config_json(decoder: &str) -> String {
    let probe: serde_json::Value = serde_json::from_str(decoder).expect("a JSON object");
    let mut full = serde_json::json!({"codebook_dim": 512});
    full.as_object_mut().unwrap().extend(probe.as_object().unwrap().clone());
    let c: DecoderConfig = serde_json::from_value(full.clone()).expect("a decoder config");
    serde_json::json!({
        "model_type": "qwen3_tts_tokenizer_12hz",
        "decoder_config": full,
        "decode_upsample_rate": c.samples_per_frame(),
    })
    .to_string()
}

/// Every tensor the decoder reads, by name and shape, for `c`.
pub fn tensors(c: &DecoderConfig) -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: &[usize]| t.push((name, shape.to_vec()));
    let (cd, size, l, h) = (c.codebook_dim, c.codebook_size, c.latent_dim, c.hidden_size);
    for (group, count) in [("rvq_first", 1), ("rvq_rest", c.num_quantizers - 1)] {
        let p = format!("decoder.quantizer.{group}");
        for i in 0..count {
            add(format!("{p}.vq.layers.{i}._codebook.cluster_usage"), &[size]);
            add(format!("{p}.vq.layers.{i}._codebook.embedding_sum"), &[size, cd / 2]);
        }
        add(format!("{p}.output_proj.weight"), &[cd, cd / 2, 1]);
    }
    add("decoder.pre_conv.conv.weight".into(), &[l, cd, 3]);
    add("decoder.pre_conv.conv.bias".into(), &[l]);
    let p = "decoder.pre_transformer";
    add(format!("{p}.input_proj.weight"), &[h, l]);
    add(format!("{p}.input_proj.bias"), &[h]);
    let widths = c.widths();
    for i in 0..c.num_hidden_layers {
        let p = format!("{p}.layers.{i}");
        for (name, shape) in widths.projections() {
            add(format!("{p}.{name}.weight"), &shape);
        }
        for name in [
            "input_layernorm.weight",
            "self_attn_layer_scale.scale",
            "post_attention_layernorm.weight",
            "mlp_layer_scale.scale",
        ] {
            add(format!("{p}.{name}"), &[h]);
        }
    }
    add(format!("{p}.norm.weight"), &[h]);
    add(format!("{p}.output_proj.weight"), &[l, h]);
    add(format!("{p}.output_proj.bias"), &[l]);
    for (i, &r) in c.upsampling_ratios.iter().enumerate() {
        let p = format!("decoder.upsample.{i}");
        for (name, shape) in [
            ("0.conv.weight", vec![l, l, r]),
            ("0.conv.bias", vec![l]),
            ("1.dwconv.conv.weight", vec![l, 1, 7]),
            ("1.dwconv.conv.bias", vec![l]),
            ("1.norm.weight", vec![l]),
            ("1.norm.bias", vec![l]),
            ("1.pwconv1.weight", vec![4 * l, l]),
            ("1.pwconv1.bias", vec![4 * l]),
            ("1.pwconv2.weight", vec![l, 4 * l]),
            ("1.pwconv2.bias", vec![l]),
            ("1.gamma", vec![l]),
        ] {
            add(format!("{p}.{name}"), &shape);
        }
    }
    // A convolution's weight is [out, in, kernel], a transposed one's [in, out, kernel].
    let conv = |add: &mut dyn FnMut(String, &[usize]), module: String, weight: [usize; 3], bias: usize| {
        add(format!("{module}.conv.weight"), &weight);
        add(format!("{module}.conv.bias"), &[bias]);
    };
    let snake = |add: &mut dyn FnMut(String, &[usize]), module: String, channels: usize| {
        add(format!("{module}.alpha"), &[channels]);
        add(format!("{module}.beta"), &[channels]);
    };
    conv(&mut add, "decoder.decoder.0".into(), [c.decoder_dim, l, 7], c.decoder_dim);
    let mut inp = c.decoder_dim;
    for (i, &rate) in c.upsample_rates.iter().enumerate() {
        let (p, out) = (format!("decoder.decoder.{}.block", i + 1), c.block_channels(i));
        snake(&mut add, format!("{p}.0"), inp);
        conv(&mut add, format!("{p}.1"), [inp, out, 2 * rate], out);
        for unit in 2..5 {
            snake(&mut add, format!("{p}.{unit}.act1"), out);
            conv(&mut add, format!("{p}.{unit}.conv1"), [out, out, 7], out);
            snake(&mut add, format!("{p}.{unit}.act2"), out);
            conv(&mut add, format!("{p}.{unit}.conv2"), [out, out, 1], out);
        }
        inp = out;
    }
    let n = c.upsample_rates.len();
    snake(&mut add, format!("decoder.decoder.{}", n + 1), inp);
    conv(&mut add, format!("decoder.decoder.{}", n + 2), [1, inp, 7], 1);
    t
}

/// How tensor `name` of `shape` is filled: `offset + scale · u` with `u` uniform in
/// [−1, 1) — positive usage counts, gains near 1, small log-scale snake parameters and
/// layer scales, weights of unit fan-in gain.
fn init(name: &str, shape: &[usize]) -> (f32, f32) {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    if leaf == "cluster_usage" {
        (1.25, 0.75)
    } else if leaf == "embedding_sum" {
        (0.0, 1.0)
    } else if matches!(leaf, "alpha" | "beta") {
        (0.0, 0.2)
    } else if matches!(leaf, "scale" | "gamma") {
        (0.1, 0.05)
    } else if name.contains("norm") && leaf == "weight" {
        (1.0, 0.1)
    } else if shape.len() == 1 {
        (0.0, 0.05)
    } else {
        let fan_in = shape[1..].iter().product::<usize>() as f32;
        (0.0, 3f32.sqrt() / fan_in.sqrt())
    }
}

/// Writes `dir/config.json` (`config_json`) and `dir/model.safetensors` with random values
/// for every tensor the decoder reads, matrices and convolutions in bf16 if `bf16_weights`.
pub fn write(dir: &Path, config_json: &str, bf16_weights: bool) -> std::io::Result<SpeechConfig> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), config_json)?;
    let config = SpeechConfig::from_json(dir.join("config.json"), config_json).map_err(std::io::Error::other)?;
    let specs: Vec<Spec> = tensors(&config.decoder_config)
        .into_iter()
        .map(|(name, shape)| {
            let stored = if bf16_weights && shape.len() > 1 { Stored::Bf16 } else { Stored::F32 };
            Spec { name, shape, stored }
        })
        .collect();
    let mut noise = Noise::new(1);
    checkpoint::write(
        &dir.join("model.safetensors"),
        &specs,
        |i, chunk| {
            let (offset, scale) = init(&specs[i].name, &specs[i].shape);
            noise.fill(offset, scale, chunk);
        },
        |_| {},
    )?;
    Ok(config)
}
