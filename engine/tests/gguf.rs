//! spiral's GGUF reader and block decoders against llama.cpp's own gguf-py: the fixture
//! (scripts/fixtures/gguf_layouts.py) holds a tensor of each type spiral reads and, beside
//! each, gguf-py's decoding of it.

use std::path::PathBuf;

use spiral_engine::checkpoint::{Checkpoint, Data, Storage, Stored};
use spiral_engine::kernels::gemv;
use spiral_engine::kernels::quant::Quant;
use spiral_engine::kernels::Cpu;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf/layouts.gguf")
}

#[test]
fn every_type_decodes_as_gguf_py_does() {
    let ckpt = Checkpoint::open(&fixture()).unwrap();
    for (name, shape, quant) in [
        ("f32", [3, 40], None),
        ("f16", [2, 64], None),
        ("bf16", [2, 32], None),
        ("q8_0", [4, 256], Some(Quant::Q8_0)),
        ("q4_0", [4, 256], Some(Quant::Q4_0)),
        ("q4_k", [3, 512], Some(Quant::Q4K)),
        ("q5_k", [2, 512], Some(Quant::Q5K)),
        ("q6_k", [3, 512], Some(Quant::Q6K)),
    ] {
        assert_eq!(ckpt.shape(name).unwrap(), shape, "{name}");
        assert_eq!(ckpt.encoding(name).unwrap(), quant.map(Stored::Quant), "{name}");
        let got = ckpt.f32(name, &shape).unwrap();
        let want = ckpt.f32(&format!("{name}.dequantized"), &shape).unwrap();
        assert_eq!(got, want, "{name} decodes as gguf-py decodes it");
        if let Some(q) = quant {
            // Mapped in place, and multiplied as the blocks are.
            let w = ckpt.matrix(name, shape[0], shape[1]).unwrap();
            assert!(matches!(w.data(), Data::Quant(got, Storage::Mapped { .. }) if *got == q));
            let x: Vec<f32> = (0..shape[1]).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let mut y = vec![0.0; shape[0]];
            gemv::gemv(Cpu::best(), &w.matrix(), &x, &mut y);
            for (r, y) in y.iter().enumerate() {
                let exact: f32 = want[r * shape[1]..][..shape[1]].iter().zip(&x).map(|(w, x)| w * x).sum();
                let scale: f32 = want[r * shape[1]..][..shape[1]].iter().map(|w| w.abs()).sum();
                assert!((y - exact).abs() < 0.01 * scale, "{name} row {r}: {y} vs {exact}");
            }
        }
    }
}

#[test]
fn a_directory_with_model_gguf_opens_and_damage_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture()).unwrap();
    std::fs::write(dir.path().join("model.gguf"), &bytes).unwrap();
    assert!(Checkpoint::open(dir.path()).unwrap().contains("q4_k"));
    for cut in [100, 900, bytes.len() - 10] {
        std::fs::write(dir.path().join("model.gguf"), &bytes[..cut]).unwrap();
        let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model.gguf") && e.contains("truncated"), "cut {cut}: {e}");
    }
}

/// A GGUF file compresses like a model directory: its block tensors are kept as they are,
/// the rest encoded by the codec.
#[test]
fn a_gguf_file_compresses_keeping_its_blocks() {
    use spiral_engine::codec::Codec;
    let out = tempfile::tempdir().unwrap();
    let report = spiral_engine::compress::compress(&fixture(), out.path(), Codec::Q8, |_, _, _| {}).unwrap();
    let q4k = report.iter().find(|t| t.name == "q4_k").unwrap();
    assert_eq!((q4k.stored, q4k.encoding), (Stored::Quant(Quant::Q4K), "stored"));
    let (src, back) = (Checkpoint::open(&fixture()).unwrap(), Checkpoint::open(out.path()).unwrap());
    assert_eq!(back.f32("q4_k", &[3, 512]).unwrap(), src.f32("q4_k", &[3, 512]).unwrap());
    // 40 columns are not whole q8_0 blocks: bf16.
    assert_eq!(back.stored("f32").unwrap().0, Stored::Bf16);
}
