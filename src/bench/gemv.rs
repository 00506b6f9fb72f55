//! `spiral bench gemv`: each weight format's matrix × vector product against the read
//! bandwidth measured beside it, pass for pass.
//!
//! This machine's bandwidth drifts by a third within minutes, so a roof measured once and a
//! product measured later can be read to say anything. Here every product pass sits between
//! two passes of the roof over as many bytes, split across the pool the same way; each
//! product's rate is read against the mean of its two neighbours, and the median of those
//! ratios is the answer. The matrices are 2048 columns wide (as the Qwen3-TTS projections)
//! and four times the last-level cache by default, so every byte comes from DRAM.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;
use spiral_engine::kernels::gemv::{gemv, Matrix, Weights};
use spiral_engine::kernels::quant::Quant;
use spiral_engine::kernels::{bf16, Cpu};

use super::median;

const COLS: usize = 2048;

/// One format's result.
#[derive(Clone, Debug)]
pub struct GemvBench {
    pub format: &'static str,
    /// Median over the passes of the product's encoded bytes per second, GB/s.
    pub gbs: f64,
    /// Median over the passes of the roof beside it, GB/s.
    pub roof_gbs: f64,
    /// Median, lowest and highest over the passes of product / mean of its two roofs.
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    pub passes: usize,
}

impl GemvBench {
    pub fn line(&self) -> String {
        format!(
            "gemv format={} gbs={:.1} roof_gbs={:.1} ratio={:.3} ratio_min={:.3} ratio_max={:.3} passes={}",
            self.format, self.gbs, self.roof_gbs, self.ratio, self.ratio_min, self.ratio_max, self.passes
        )
    }
}

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

/// Measures f32, bf16 and every block format in turn on `cpu`, each over about `mib` MiB of
/// encoded weights, `passes` product passes each; `report` gets each result as it is done.
pub fn run_gemv(cpu: Cpu, mib: usize, passes: usize, mut report: impl FnMut(&GemvBench)) -> Vec<GemvBench> {
    let bytes = mib << 20;
    let passes = passes.max(1);
    let stream = values(bytes / 4);
    let roof = || {
        let t = Instant::now();
        black_box(super::read_all(&stream));
        (stream.len() * 4) as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    let x = values(COLS);
    let mut results = Vec::new();
    let mut measure = |format: &'static str, m: &Matrix| {
        let mut y = vec![0.0; m.rows()];
        gemv(cpu, m, &x, &mut y); // first touch and page faults outside the timing
        let mut roofs = vec![roof()];
        let mut rates = Vec::with_capacity(passes);
        for _ in 0..passes {
            let t = Instant::now();
            gemv(cpu, m, black_box(&x), &mut y);
            rates.push(m.bytes() as f64 / t.elapsed().as_secs_f64() / 1e9);
            roofs.push(roof());
        }
        let mut ratios: Vec<f64> = rates.iter().zip(roofs.windows(2)).map(|(r, w)| r / ((w[0] + w[1]) / 2.0)).collect();
        let ratio = median(&mut ratios);
        let result = GemvBench {
            format,
            gbs: median(&mut rates),
            roof_gbs: median(&mut roofs),
            ratio,
            ratio_min: ratios[0],
            ratio_max: ratios[ratios.len() - 1],
            passes,
        };
        report(&result);
        results.push(result);
    };

    let w = values(bytes / 4);
    measure("f32", &Matrix::new(w.len() / COLS, COLS, Weights::F32(&w)).expect("whole rows"));
    drop(w);

    let mut wb = vec![0u16; bytes / 2];
    bf16::from_f32(&values(wb.len()), &mut wb);
    measure("bf16", &Matrix::new(wb.len() / COLS, COLS, Weights::Bf16(&wb)).expect("whole rows"));
    drop(wb);

    for q in Quant::ALL {
        let row = q.row_bytes(COLS);
        let rows = bytes / row;
        // 64 distinct rows, repeated: the speed does not depend on the values, and an f32
        // source for every row would be a gigabyte for the 4-bit formats.
        let source = values(COLS * 64);
        let mut distinct = vec![0u8; 64 * row];
        for (out, values) in distinct.chunks_mut(row).zip(source.chunks(COLS)) {
            q.encode_row(values, out);
        }
        let mut encoded = vec![0u8; rows * row];
        encoded.par_chunks_mut(distinct.len()).for_each(|out| out.copy_from_slice(&distinct[..out.len()]));
        measure(q.name(), &Matrix::new(rows, COLS, Weights::Quant(q, &encoded)).expect("whole rows"));
    }
    results
}
