//! The frame graph from an app: speak a text with the scheduler shared, then look at what
//! it holds — each frame's role and route, the cascade's work — search it, and save the
//! nodes in their wire format.
//!
//! ```text
//! cargo run --release --example frame_graph -- "Any text, with a pause." [--nodes OUT.span]
//! ```

use std::sync::{Arc, Mutex};

use spiral::engine::kernels::Cpu;
use spiral::engine::models::vits::{PiperVoice, SpeechSource};
use spiral::engine::route::Route;
use spiral::engine::voices::VoiceCache;
use spiral::graph::{node, CascadeConfig, Role, Scheduler, SchedulerConfig};
use spiral::Source;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text =
        args.first().map_or("Good morning. The quick brown fox, as usual, jumps over the lazy dog.", String::as_str);
    let save = args.iter().position(|a| a == "--nodes").and_then(|i| args.get(i + 1));

    let voice = Arc::new(PiperVoice::load(&VoiceCache::from_env()?.fetch_default()?.voice)?);
    voice.warm_up(Cpu::best())?;
    let dims = voice.model().latent_channels();
    let scheduler = Arc::new(Mutex::new(Scheduler::new(SchedulerConfig {
        cascade: CascadeConfig { dims, ..CascadeConfig::default() },
        ..SchedulerConfig::default()
    })));
    // Rendered as fast as it is made, without a device: the frames are what matter here.
    let mut source = SpeechSource::new(voice, text).with_router(scheduler.clone());
    let mut seconds = 0.0;
    while let Some(frame) = source.next_frame()? {
        seconds += frame.duration().as_secs_f64();
    }
    let counts = source.route_counts().expect("a speech source counts its routes");

    let mut scheduler = scheduler.lock().map_err(|_| "the scheduler panicked")?;
    let graph = scheduler.graph_mut();
    let nodes: Vec<node::AudioNode> = graph.graph().node_weights().copied().collect();
    let count = |role| nodes.iter().filter(|n| n.role() == Some(role)).count();
    println!(
        "{:.2} s of speech, {} nodes: {} silence, {} voiced, {} unvoiced, {} attack",
        seconds,
        nodes.len(),
        count(Role::Silence),
        count(Role::Voiced),
        count(Role::Unvoiced),
        count(Role::Attack)
    );
    let skipped = nodes.iter().filter(|n| n.route() == Route::Skip).count();
    println!(
        "routes: {skipped} skipped, {} decoded; {:.1} ms of decoding saved",
        counts.frames_decoded, counts.decode_ms_saved
    );
    // The frames nearest the last voiced one, through HEEL, HIP, TWIG and LEAF.
    if let Some(query) = nodes.iter().rev().find(|n| n.role() == Some(Role::Voiced)).copied() {
        let found = graph.cascade_search(&query, &[], 3);
        let positions: Vec<u32> =
            found.iter().filter_map(|m| graph.node(m.node)).map(|n| n.address.position()).collect();
        let [heel, hip, twig, leaf] = graph.stats().rejected();
        println!(
            "nearest to frame {}: frames {positions:?}; rejected by HEEL {:.0} %, HIP {:.0} %, TWIG {:.0} %, LEAF {:.0} %",
            query.address.position(),
            100.0 * heel,
            100.0 * hip,
            100.0 * twig,
            100.0 * leaf
        );
    }
    if let Some(path) = save {
        std::fs::write(path, node::serialize(&nodes))?;
        println!("wrote {} nodes to {path}", nodes.len());
    }
    Ok(())
}
