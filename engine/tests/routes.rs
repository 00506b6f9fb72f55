//! Routed sources: what a router decides is what the decoder does. Frames hinted Decode
//! are the unrouted stream bit for bit, a skipped run is silence between crossfades, and
//! the router hears every frame once, in order, as it was made. The VITS voice cuts its
//! generator with look-ahead margins; Qwen3-TTS, decoding each frame as it is generated,
//! fades out on the run's first frame and restarts its decoder after the run.

use std::sync::{Arc, Mutex, OnceLock};

use spiral_engine::models::cuts::{crossfade_frame, MARGIN};
use spiral_engine::models::qwen3::{Options, Qwen3Source, Qwen3Tts, Request};
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

/// Each frame the router was told of: its position, route and audio.
type Heard = Arc<Mutex<Vec<(u64, Route, Vec<f32>)>>>;

/// Skips the frames at `skip` positions; records what it is told.
struct Scripted {
    skip: std::ops::Range<u64>,
    heard: Heard,
}

impl Router for Scripted {
    fn assign_route_hints(&mut self, frames: &[Pending<'_>]) -> Vec<Hint> {
        frames.iter().map(|f| if self.skip.contains(&f.position) { Hint::SKIP } else { Hint::DECODE }).collect()
    }

    fn played(&mut self, frame: &Pending<'_>, route: Route, audio: &[f32], _: SampleRate) {
        self.heard.lock().unwrap().push((frame.position, route, audio.to_vec()));
    }
}

fn drain(mut source: impl Source) -> (Vec<f32>, RouteCounts) {
    let mut audio = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        audio.extend(frame.samples);
    }
    (audio, source.route_counts().unwrap())
}

fn speak(router: Option<Scripted>) -> (Vec<f32>, RouteCounts) {
    let source = SpeechSource::new(voice(), TEXT).with_seed(7);
    match router {
        Some(r) => drain(source.with_router(r)),
        None => drain(source),
    }
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

#[test]
fn qwen3_fades_out_into_a_skipped_run_and_restarts_after_it() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3/gqa4_dialect");
    let model = Arc::new(Qwen3Tts::load(&dir).unwrap());
    let source = || {
        let request = Request { text: "Hello there.".into(), speaker: Some("eric".into()), language: "chinese".into() };
        let mut options = Options::from_config(model.generation_config()).greedy();
        options.max_new_tokens = 12;
        Qwen3Source::new(model.clone(), request, options)
    };
    let (plain, plain_counts) = drain(source());
    let n = model.speech().samples_per_frame();
    assert_eq!(plain_counts.frames_decoded as usize * n, plain.len());
    assert!(plain.len() >= 10 * n, "the fixture speaks at least 10 frames");
    let heard = Arc::new(Mutex::new(Vec::new()));
    let (routed, counts) = drain(source().with_router(Scripted { skip: 3..7, heard: heard.clone() }));
    assert_eq!(routed.len(), plain.len());
    assert_eq!(routed[..3 * n], plain[..3 * n], "before the run: the same stream");
    let mut faded = plain[3 * n..4 * n].to_vec();
    crossfade_frame(&mut faded, None, false);
    assert_eq!(routed[3 * n..4 * n], faded[..], "the run's first frame is decoded and faded out");
    assert!(routed[4 * n..7 * n].iter().all(|&x| x == 0.0), "then silence, not decoded");
    assert!(routed[7 * n..].iter().all(|x| x.abs() <= 1.0) && routed[7 * n..] != plain[7 * n..]);
    let frames = (plain.len() / n) as u64;
    assert_eq!((counts.frames_skipped, counts.frames_decoded, counts.frames_warmed), (3, frames - 3, 1));
    let routes: Vec<Route> = heard.lock().unwrap().iter().map(|h| h.1).collect();
    assert_eq!(routes[2..8], [Route::Decode, Route::Decode, Route::Skip, Route::Skip, Route::Skip, Route::Decode]);
}

/// Records the positions of each group of frames it is asked about.
struct Asked(Arc<Mutex<Vec<std::ops::Range<u64>>>>);

impl Router for Asked {
    fn assign_route_hints(&mut self, frames: &[Pending<'_>]) -> Vec<Hint> {
        if let (Some(first), Some(last)) = (frames.first(), frames.last()) {
            self.0.lock().unwrap().push(first.position..last.position + 1);
        }
        vec![Hint::DECODE; frames.len()]
    }

    fn played(&mut self, _: &Pending<'_>, _: Route, _: &[f32], _: SampleRate) {}
}

/// The router is asked a window at a time, whatever the flow's calls were: they join the rest
/// of a sentence to the second window when the first call ran fast (a machine's speed, the
/// moment's load), and a router asked about the joined frames together would decide them
/// knowing less than when asked window by window, so one text spoke two ways.
#[test]
fn a_router_is_asked_window_by_window_however_fast_the_flow_ran() {
    use spiral_engine::models::vits::speech::WINDOWS;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (audio, _) = drain(SpeechSource::new(voice(), TEXT).with_seed(7).with_router(Asked(asked.clone())));
    let frames = (audio.len() / voice().model().hop()) as u64;
    assert!(frames > WINDOWS[1] as u64, "the sentence reaches past the second window");
    let (a, b) = (WINDOWS[0] as u64, WINDOWS[1] as u64);
    assert_eq!(*asked.lock().unwrap(), [0..a, a..b, b..frames]);
}
