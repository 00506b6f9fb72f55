//! Where Qwen3-TTS's time goes per frame: the prompt's prefill once, then per 80 ms frame the
//! code predictor (15 passes), the talker step and the speech decoder, as medians over the
//! frames after the first three. Run on a checkpoint directory, e.g. the synthetic 0.6B one
//! `spiral bench qwen3 --synthetic 0.6b` writes into the cache.
//!
//! ```text
//! cargo run --release -p spiral-engine --example qwen3_stages DIR [FRAMES] [--stream-text] [--codec q8]
//! RAYON_NUM_THREADS=1 cargo run --release -p spiral-engine --example qwen3_stages DIR
//! TEXT="Another sentence." cargo run --release -p spiral-engine --example qwen3_stages DIR
//! ```

use std::sync::Arc;
use std::time::Instant;

use spiral_engine::codec::Codec;
use spiral_engine::kernels::Cpu;
use spiral_engine::models::qwen3::{Options, Qwen3Tts, Request};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    // As the `spiral` binary does, so the stages cost what they cost there.
    spiral_engine::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("give a Qwen3-TTS checkpoint directory")?;
    let frames: usize = args.get(1).filter(|a| !a.starts_with("--")).map_or(Ok(30), |f| f.parse())?;
    let cpu = Cpu::from_env()?;
    let codec = args.iter().position(|a| a == "--codec").and_then(|i| args.get(i + 1)).map(|n| Codec::parse(n));
    let codec = codec.map(|c| c.ok_or("unknown codec")).transpose()?;
    let model = Arc::new(Qwen3Tts::load_with(dir.as_ref(), codec)?);
    let mut options = Options::from_config(model.generation_config());
    options.max_new_tokens = frames + 1;
    options.ignore_eos = true;
    options.stream_text = args.iter().any(|a| a == "--stream-text");
    let speaker = model.config().talker_config.spk_id.keys().next().cloned();
    let text = std::env::var("TEXT").unwrap_or("Hello there, my friend.".into());
    let request = Request { text, speaker, language: "auto".into() };
    // On a pool thread, as the speech source runs it.
    rayon::scope(|_| -> Result<(), Error> {
        let start = Instant::now();
        let mut generation = model.generate(cpu, &request, &options)?;
        let prefill = start.elapsed().as_secs_f64();
        let mut decoder = model.speech().stream();
        let (mut predictor, mut talker, mut decode) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let t0 = Instant::now();
            let mut predicted = t0;
            let Some(codes) = generation.next_frame_observed(&mut |_, _| predicted = Instant::now()) else { break };
            let t1 = Instant::now();
            decoder.push(cpu, &codes, 1)?;
            let t2 = Instant::now();
            predictor.push((predicted - t0).as_secs_f64());
            talker.push((t1 - predicted).as_secs_f64());
            decode.push((t2 - t1).as_secs_f64());
        }
        let skip = |v: Vec<f64>| median(v.into_iter().skip(3).collect()) * 1e3;
        println!(
            "prefill {:.1} ms ({} rows); per frame: predictor {:.1} ms, talker {:.1} ms, decoder {:.1} ms ({} frames, {})",
            prefill * 1e3,
            generation.prompt().rows,
            skip(predictor),
            skip(talker),
            skip(decode),
            generation.frames(),
            cpu.isa().name(),
        );
        Ok(())
    })
}
