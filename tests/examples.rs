//! Every example builds and runs headless.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/examples-<hash>; examples sit beside deps/.
    // A full `cargo test` has built them; a filtered run builds them here.
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--examples", "--quiet"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "the examples do not build");
    });
    profile_dir.join("examples").join(name)
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name)).args(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed: {stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn speak_runs_headless() {
    // The default voice, as the CLI tests get it (fetched once into the cache).
    let out = run("speak", &["--sink", "null", "Hello from the example."]);
    let seconds: f64 = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    assert!(out.starts_with("spoke") && seconds > 0.8, "{out}");
}

#[test]
fn embed_pull_mixes_into_its_own_stream() {
    let out = run("embed_pull", &[]);
    assert!(out.contains("mixed 13 frames"), "{out}");
}

#[test]
fn latency_prints_the_summary() {
    let out = run("latency", &[]);
    assert!(out.contains("time to first audio") && out.contains("handed"), "{out}");
}

#[test]
fn frame_graph_files_every_frame_and_saves_the_nodes() {
    let dir = std::env::temp_dir().join(format!("spiral-frame-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nodes.span");
    let out = run("frame_graph", &["Good morning. Wait, the fox is here.", "--nodes", path.to_str().unwrap()]);
    let bytes = std::fs::read(&path).unwrap();
    let nodes = spiral::graph::node::deserialize(&bytes).unwrap();
    assert!(nodes.len() > 100 && out.contains(&format!("{} nodes", nodes.len())), "{out}");
    assert!(!out.contains("routes: 0 skipped"), "the pauses were not skipped: {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
