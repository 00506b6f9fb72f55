#!/usr/bin/env python3
"""What the frame graph's scheduler costs the default voice: LSD, SNR and WER of the
skip-enabled stream against the always-decode stream, and the decoding it saves.

spiral speaks each line of `--sentences` (by default the 20 Harvard sentences) once with
`--no-skip` (every latent frame decoded: the reference) and once per variant (`--variants`,
each `NAME=ARGS`; `default=` is the scheduler's defaults). The noise is seeded, so every run
has the same durations and the streams line up sample for sample: log-spectral distance
(1024-point Hann frames, hop 256, power floored 80 dB below the utterance's peak; RMS over
bins, mean over frames) and SNR are computed without alignment. Whisper (scripts/wer.py's
judge) gives each run's word error rate. The latency reports give frames per route and the
decoder time saved. Prints JSON.

Usage: python3 scripts/route_quality.py --spiral target/release/spiral [--variants 'default=;reuse=--reuse-max 0.05']
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from codec_quality import log_spectrum, read_wav
from reference_voice import REPO, fail, read_sentences
from wer import score, whisper_model

COUNTS = ("frames_skipped", "frames_reused", "frames_decoded", "decode_ms", "decode_ms_saved")


def speak(binary: Path, args: list[str], sentences: list[str], out_dir: Path) -> dict:
    """Speaks every sentence into out_dir/i.wav; returns the route counts summed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    totals = dict.fromkeys(COUNTS, 0.0)
    for i, text in enumerate(sentences):
        report = out_dir / f"{i}.json"
        cmd = [str(binary), "speak", text, "--wav", str(out_dir / f"{i}.wav"), "-q", "--latency-report", str(report)]
        run = subprocess.run(cmd + args, capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"spiral speak {' '.join(args)} failed on {text!r}: {run.stderr.strip()}")
        counts = json.loads(report.read_text())
        for key in COUNTS:
            totals[key] += counts[key]
    return totals


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    if len(reference) != len(candidate):
        fail(f"streams differ in length ({len(reference)} and {len(candidate)} samples): the runs did not line up")
    a, b = log_spectrum(reference), log_spectrum(candidate)
    lsd = float(np.mean(np.sqrt(np.mean((a - b) ** 2, axis=1))))
    noise = float(np.sum((reference - candidate) ** 2))
    snr = 10.0 * np.log10(float(np.sum(reference**2)) / max(noise, 1e-20))
    return {"lsd_db": lsd, "snr_db": float(snr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spiral", type=Path, required=True, help="the spiral binary (target/release/spiral)")
    parser.add_argument("--sentences", type=Path, default=REPO / "scripts" / "fixtures" / "harvard.txt")
    parser.add_argument("--variants", default="default=", help="';'-separated NAME=ARGS, each run against --no-skip")
    args = parser.parse_args()
    if not args.spiral.is_file():
        fail(f"{args.spiral}: no such binary; build it with cargo build --release")
    variants = {"no-skip": ["--no-skip"]}
    for item in filter(None, args.variants.split(";")):
        name, _, extra = item.partition("=")
        variants[name.strip()] = shlex.split(extra)
    sentences = read_sentences(args.sentences)
    model, model_name = whisper_model()
    report: dict = {"judge": model_name, "sentences": len(sentences), "variants": {}}
    with tempfile.TemporaryDirectory(prefix="route-quality-") as tmp:
        for name, extra in variants.items():
            counts = speak(args.spiral, extra, sentences, Path(tmp) / name)
            entry = {"args": " ".join(extra), "wer": score(model, sentences, Path(tmp) / name)["wer"], **counts}
            frames = counts["frames_skipped"] + counts["frames_reused"] + counts["frames_decoded"]
            entry["decode_saved"] = counts["decode_ms_saved"] / max(counts["decode_ms"] + counts["decode_ms_saved"], 1e-9)
            entry["frames_not_decoded"] = (counts["frames_skipped"] + counts["frames_reused"]) / max(frames, 1)
            if name != "no-skip":
                per = [
                    compare(read_wav(Path(tmp) / "no-skip" / f"{i}.wav"), read_wav(Path(tmp) / name / f"{i}.wav"))
                    for i in range(len(sentences))
                ]
                entry["mean_lsd_db"] = float(np.mean([p["lsd_db"] for p in per]))
                entry["max_lsd_db"] = float(max(p["lsd_db"] for p in per))
                entry["min_snr_db"] = float(min(p["snr_db"] for p in per))
                entry["mean_snr_db"] = float(np.mean([p["snr_db"] for p in per]))
            report["variants"][name] = entry
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
