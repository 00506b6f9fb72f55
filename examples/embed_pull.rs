//! An app that owns its audio callback: it opens its own cpal stream, plays its own signal
//! (a quiet 110 Hz hum) and mixes in spiral's audio by pulling it from spiral's ring inside
//! the callback. Nothing in the callback allocates, locks or blocks.
//!
//! ```text
//! cargo run --example embed_pull
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use spiral::{demo_phrase, pull, OutputFormat, PlayOptions, SampleRate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = cpal::default_host().default_output_device().ok_or("no output device (run scripts/setup.sh)")?;
    let config = device.default_output_config()?;
    if config.sample_format() != cpal::SampleFormat::F32 {
        return Err(format!("this example mixes in f32; the device wants {}", config.sample_format()).into());
    }
    let format = OutputFormat { sample_rate: SampleRate(config.sample_rate()), channels: config.channels() };
    let (mut reader, playback) = pull(demo_phrase(SampleRate(24_000), 440.0, 1.0)?, format, PlayOptions::default())?;

    let channels = usize::from(format.channels);
    let rate = f64::from(format.sample_rate.hz());
    let mut spiral_buf = vec![0.0f32; 16_384 * channels]; // allocated here, never in the callback
    let mut phase = 0.0f64;
    let finished = Arc::new(AtomicBool::new(false));
    let finished_in_callback = finished.clone();
    let stream = device.build_output_stream(
        config.into(),
        move |out: &mut [f32], _: &cpal::OutputCallbackInfo| {
            for chunk in out.chunks_mut(spiral_buf.len()) {
                let spiral_audio = &mut spiral_buf[..chunk.len()];
                reader.fill(spiral_audio);
                for (frame, voice) in chunk.chunks_mut(channels).zip(spiral_audio.chunks(channels)) {
                    let hum = (0.05 * (phase * std::f64::consts::TAU).sin()) as f32;
                    phase = (phase + 110.0 / rate) % 1.0;
                    frame.iter_mut().zip(voice).for_each(|(o, v)| *o = 0.8 * v + hum);
                }
            }
            finished_in_callback.store(reader.is_finished(), Ordering::Relaxed);
        },
        |e| eprintln!("stream error: {e}"),
        None,
    )?;
    stream.play()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !finished.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream); // drops the reader with the callback, which ends the playback
    let report = playback.wait()?;
    println!(
        "mixed {} frames of spiral audio into the app's stream ({} callbacks, {} underruns)",
        report.frames, report.callbacks, report.run.underruns
    );
    Ok(())
}
