//! A routed SpeechSource: what a router decides is what the generator does. Frames hinted
//! Decode are the unrouted stream bit for bit, a skipped run is silence between crossfaded
//! margins, and the router hears every frame once, in order, as it was made.

use std::sync::{Arc, Mutex, OnceLock};

use spiral_engine::models::cuts::MARGIN;
use spiral_engine::models::vits::{PiperVoice, SpeechSource};
use spiral_engine::route::{Hint, Pending, Route, RouteCounts, Router};
use spiral_engine::{SampleRate, Source};

const TEXT: &str = "The birch canoe slid on the smooth planks.";

fn voice() -> Arc<PiperVoice> {
    static VOICE: OnceLock<Arc<PiperVoice>> = OnceLock::new();
    VOICE
        .get_or_init(|| {
            let voice = spiral_engine::voices::default_voice().expect("fetch the default voice");
            Arc::new(PiperVoice::load(&voice).expect("load the default voice"))
        })
        .clone()
}

/// Skips the frames at `skip` positions; records what it is told.
struct Scripted {
    skip: std::ops::Range<u64>,
    heard: Arc<Mutex<Vec<(u64, Route, Vec<f32>)>>>,
}

impl Router for Scripted {
    fn assign_route_hints(&mut self, frames: &[Pending<'_>]) -> Vec<Hint> {
        frames.iter().map(|f| if self.skip.contains(&f.position) { Hint::SKIP } else { Hint::DECODE }).collect()
    }

    fn played(&mut self, frame: &Pending<'_>, route: Route, audio: &[f32], _: SampleRate) {
        self.heard.lock().unwrap().push((frame.position, route, audio.to_vec()));
    }
}

fn speak(router: Option<Scripted>) -> (Vec<f32>, RouteCounts) {
    let source = SpeechSource::new(voice(), TEXT).with_seed(7);
    let mut source = match router {
        Some(r) => source.with_router(r),
        None => source,
    };
    let mut audio = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        audio.extend(frame.samples);
    }
    (audio, source.route_counts().unwrap())
}

#[test]
fn a_router_that_decodes_everything_changes_nothing_and_hears_every_frame() {
    let (plain, counts) = speak(None);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let (routed, routed_counts) = speak(Some(Scripted { skip: 0..0, heard: heard.clone() }));
    assert_eq!(routed, plain);
    let hop = voice().model().hop();
    let heard = heard.lock().unwrap();
    assert_eq!(heard.len() * hop, plain.len());
    for (i, (position, route, audio)) in heard.iter().enumerate() {
        assert_eq!((*position, *route), (i as u64, Route::Decode));
        assert_eq!(audio[..], plain[i * hop..(i + 1) * hop]);
    }
    assert_eq!((counts.frames_decoded, counts.frames_skipped), (heard.len() as u64, 0));
    assert_eq!(routed_counts.frames_decoded, counts.frames_decoded);
}

#[test]
fn a_skipped_run_is_silence_between_crossfades_and_counted() {
    let (plain, _) = speak(None);
    let hop = voice().model().hop();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let (run, fill) = (40..60u64, 40 + MARGIN..60 - MARGIN);
    let (routed, counts) = speak(Some(Scripted { skip: run.clone(), heard: heard.clone() }));
    assert_eq!(routed.len(), plain.len());
    assert!(routed[fill.start * hop..fill.end * hop].iter().all(|&x| x == 0.0));
    assert_eq!(counts.frames_skipped, fill.len() as u64);
    assert_eq!(counts.frames_decoded + counts.frames_skipped, (plain.len() / hop) as u64);
    assert!(counts.decode_ms_saved > 0.0);
    // Far from the cut, the generator computed the same values in the same order.
    let far = 16;
    assert_eq!(routed[..(40 - far) * hop], plain[..(40 - far) * hop]);
    assert_eq!(routed[(60 + far) * hop..], plain[(60 + far) * hop..]);
    for (position, route, _) in heard.lock().unwrap().iter() {
        let skipped = fill.contains(&(*position as usize));
        assert_eq!(*route, if skipped { Route::Skip } else { Route::Decode }, "frame {position}");
    }
}
