#!/usr/bin/env python3
"""Speed of spiral's Qwen3-TTS against the reference (qwen-tts on PyTorch, CPU), on the same
synthetic real-shape checkpoint (the one `spiral bench qwen3 --synthetic 0.6b` writes once
into the cache), the same sentence and the same number of frames, runs alternating.

The reference generates with its CustomVoice `generate` (the talker's HF generate with the
code predictor inside each step) and then decodes all codes with its speech tokenizer; it
has no streaming API, so its time to first audio is its whole run. End-of-speech is made
impossible in both (random weights would otherwise stop at a random frame): spiral by
`ignore_eos`, the reference by naming a suppressed token as its eos_token_id (the real one
then falls in its suppressed range).

For spiral each repeat runs `spiral bench qwen3 --model DIR --frames N` and parses its line.
Prints JSON with both sides' medians and the ratios.

Usage: python3 scripts/bench_qwen3.py --spiral target/release/spiral [--frames 25] [--repeats 3]
                                      [--dir CHECKPOINT] [--threads 2] [--dtype bfloat16|float32]
Needs the qwen3_tts.py packages of scripts/fixtures/requirements.txt.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

FRAME_SECONDS = 0.08


def default_dir() -> Path:
    root = os.environ.get("SPIRAL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spiral"
    )
    return Path(root) / "synthetic" / "qwen3-tts-12hz-0.6b-customvoice"


def run_spiral(spiral: str, model: Path, frames: int) -> dict:
    out = subprocess.run(
        [spiral, "bench", "qwen3", "--model", str(model), "--frames", str(frames)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = out.strip().splitlines()[-1]
    return {k: float(v) for k, v in (field.split("=") for field in line.split())}


def load_reference(model: Path, dtype: str):
    import torch
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(model), dtype=getattr(torch, dtype))


def run_reference(tts, sentence: str, frames: int) -> dict:
    import torch

    config = tts.model.config.talker_config
    never = config.vocab_size - 1  # suppressed, so the real EOS (now suppressed too) never comes
    start = time.perf_counter()
    with torch.inference_mode():
        codes, _ = tts.model.generate(
            input_ids=tts._tokenize_texts([tts._build_assistant_text(sentence)]),
            languages=["english"],
            speakers=["ryan"],
            non_streaming_mode=True,
            max_new_tokens=frames + 1,
            eos_token_id=never,
            **{k: v for k, v in tts._merge_generate_kwargs().items() if k != "max_new_tokens"},
        )
        coded = time.perf_counter()
        wavs, _ = tts.model.speech_tokenizer.decode([{"audio_codes": c} for c in codes])
    end = time.perf_counter()
    n = codes[0].shape[0]
    return {
        "frames": n,
        "rtf": (end - start) / (n * FRAME_SECONDS),
        "ttfa_ms": (end - start) * 1e3,
        "codes_ms_per_frame": (coded - start) / n * 1e3,
        "decode_ms_per_frame": (end - coded) / n * 1e3,
        "samples": int(len(wavs[0])),
    }


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spiral", required=True, help="path of the spiral binary (a release build)")
    ap.add_argument("--dir", type=Path, default=default_dir(), help="synthetic checkpoint directory")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="reference weights")
    args = ap.parse_args()

    if not (args.dir / ".complete").is_file():
        print(f"making the synthetic checkpoint in {args.dir}", file=sys.stderr)
        subprocess.run([args.spiral, "bench", "qwen3", "--synthetic", "0.6b", "--frames", "1"], check=True)
    import torch

    torch.set_num_threads(args.threads)
    sentence = run_sentence(args.spiral)
    tts = load_reference(args.dir, args.dtype)
    run_reference(tts, sentence, 2)  # warm-up
    spiral_runs, reference_runs = [], []
    for i in range(args.repeats):
        spiral_runs.append(run_spiral(args.spiral, args.dir, args.frames))
        reference_runs.append(run_reference(tts, sentence, args.frames))
        print(f"repeat {i + 1}: spiral rtf {spiral_runs[-1]['rtf']:.3f}, reference rtf {reference_runs[-1]['rtf']:.3f}",
              file=sys.stderr)
    keys = ["rtf", "ttfa_ms", "codes_ms_per_frame", "decode_ms_per_frame"]
    spiral = {k: median(spiral_runs, k) for k in keys + ["floor_rtf", "peak_rss_mb", "bandwidth_gbs"]}
    reference = {k: median(reference_runs, k) for k in keys}
    print(json.dumps({
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "reference_dtype": args.dtype,
        "versions": {p: importlib.metadata.version(p) for p in ["qwen-tts", "torch", "transformers"]},
        "frames": args.frames,
        "spiral": spiral,
        "reference": reference,
        "speedup_rtf": reference["rtf"] / spiral["rtf"],
        "speedup_codes": reference["codes_ms_per_frame"] / spiral["codes_ms_per_frame"],
        "speedup_decode": reference["decode_ms_per_frame"] / spiral["decode_ms_per_frame"],
    }, indent=2))


def run_sentence(spiral: str) -> str:
    """The sentence spiral's benchmark speaks (src/bench.rs SENTENCE), so both say the same."""
    source = Path(__file__).resolve().parents[1] / "src" / "bench.rs"
    for line in source.read_text().splitlines():
        if line.startswith("pub const SENTENCE"):
            return line.split('"')[1]
    sys.exit(f"{source}: no SENTENCE")


if __name__ == "__main__":
    main()
