//! Where the default voice's time goes: each stage's time per second of audio on the 10
//! fixture sentences, in this process, warm, minimum and median over repeats. The flow is
//! fed as the speech source feeds it (the first window, the second, then the rest) and the
//! generator the first window, then `CHUNK` frames at a time, so the numbers add up to what
//! `spiral speak` spends.
//!
//! ```text
//! cargo run --release -p spiral-engine --example vits_stages [REPEATS]
//! SPIRAL_ISA=avx2 RAYON_NUM_THREADS=1 cargo run --release -p spiral-engine --example vits_stages
//! ```

use std::time::Instant;

use rand::SeedableRng;
use spiral_engine::kernels::Cpu;
use spiral_engine::models::vits::speech::{flow_call_end, joined_rest, CHUNK, JOINED_REST, WINDOWS};
use spiral_engine::models::vits::PiperVoice;
use spiral_engine::voices::VoiceCache;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `spiral` binary does, so the stages cost what they cost there.
    spiral_engine::allocator::keep_freed_memory();
    let repeats: usize = std::env::args().nth(1).map_or(Ok(7), |r| r.parse())?;
    let cpu = Cpu::from_env()?;
    let voice = std::sync::Arc::new(PiperVoice::load(&VoiceCache::from_env()?.fetch_default()?.voice)?);
    spiral_engine::allocator::release_free_memory();
    voice.warm_up(cpu)?;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fixtures/sentences.txt"))?;
    let mut sentences = Vec::new();
    voice.sentences(&text, |s| sentences.push(s.ids))?;
    let (model, scales) = (voice.model(), voice.scales());

    // [encoder + durations + prior, flow, generator] per audio second, one entry per repeat.
    let mut stages: [Vec<f64>; 3] = Default::default();
    // Like the speech source: on a pool thread, the pool kept awake (see `pool::busy`).
    spiral_engine::pool::busy(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for _ in 0..repeats {
            let (mut spent, mut audio) = ([0.0; 3], 0usize);
            for ids in &sentences {
                let mut rng = rand::rngs::StdRng::seed_from_u64(0);
                let start = Instant::now();
                let encoded = model.encoder().forward(cpu, ids)?;
                let durations = model.durations(cpu, &encoded, scales, &mut rng)?;
                let prior = model.prior(&encoded, &durations, scales, &mut rng)?;
                let flow_start = Instant::now();
                let (mut flow, mut latents, mut next) = (model.flow().stream(), Vec::new(), 0);
                let mut joined = JOINED_REST;
                while next < prior.frames {
                    let to = flow_call_end(next, prior.frames, model.flow().look_ahead(), joined);
                    let z = prior.columns(next, to - next);
                    let call = Instant::now();
                    latents.push(if to == prior.frames {
                        flow.finish(cpu, &z, to - next)?
                    } else {
                        flow.push(cpu, &z, to - next)?
                    });
                    // As the speech source: the first call's rate sets how much rest joins.
                    if next == 0 {
                        joined = joined_rest(call.elapsed(), to);
                    }
                    next = to;
                }
                let generator_start = Instant::now();
                let mut generator = model.generator().stream();
                // The first step takes the flow's first window, then CHUNK frames a step.
                let mut step = WINDOWS[0];
                for latent in &latents {
                    let mut from = 0;
                    while from < latent.frames {
                        let n = step.min(latent.frames - from);
                        audio += generator.push(cpu, &latent.columns(from, n), n)?.len();
                        (from, step) = (from + n, CHUNK);
                    }
                }
                audio += generator.finish(cpu, &[], 0)?.len();
                let end = Instant::now();
                spent[0] += (flow_start - start).as_secs_f64();
                spent[1] += (generator_start - flow_start).as_secs_f64();
                spent[2] += (end - generator_start).as_secs_f64();
            }
            let seconds = audio as f64 / f64::from(voice.sample_rate().0);
            for (stage, s) in stages.iter_mut().zip(spent) {
                stage.push(s / seconds);
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;

    let summary = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        format!("min {:.4} median {:.4}", v[0], v[v.len() / 2])
    };
    let total: Vec<f64> = (0..repeats).map(|i| stages.iter().map(|s| s[i]).sum()).collect();
    println!("seconds per second of audio, {} sentences, {repeats} repeats, {}:", sentences.len(), cpu.isa());
    for (name, v) in ["text encoder + durations", "flow", "generator"].iter().zip(&stages) {
        println!("  {name:<26} {}", summary(v));
    }
    println!("  {:<26} {}", "total", summary(&total));
    Ok(())
}
