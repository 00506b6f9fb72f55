#!/usr/bin/env python3
"""What each weight codec costs the default voice, by ear: WER and log-spectral distance.

For every codec (none, bf16, q8, q4, auto, palette) spiral speaks each line of `--sentences` (by
default the first 20 Harvard sentences) into a WAV with the noise scales at 0
(deterministic) and `--precision f32`, so the codec is the only difference between runs.
Each codec's audio is judged against the uncompressed run by log-spectral distance and by
Whisper (scripts/wer.py's judge) for word error rate. Prints JSON.

The duration predictor is encoded too, so a phoneme may last a frame longer or shorter and
everything after it shifts: the log spectra (1024-point Hann frames, hop 256, power floored
80 dB below the utterance's peak) are aligned by dynamic time warping before the distance
(root mean square over bins, mean over aligned frame pairs), and the length change is
reported beside it.

Usage: python3 scripts/codec_quality.py --spiral target/release/spiral [--codecs none,q8,q4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from reference_voice import REPO, fail, read_sentences
from wer import score, whisper_model

CODECS = ["none", "bf16", "q8", "q4", "auto", "palette"]


def speak(binary: Path, codec: str, sentences: list[str], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(sentences):
        cmd = [str(binary), "speak", text, "--wav", str(out_dir / f"{i}.wav"), "-q"]
        cmd += ["--noise-scale", "0", "--noise-w", "0", "--precision", "f32"]
        if codec != "none":
            cmd += ["--codec", codec]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"spiral speak --codec {codec} failed on {text!r}: {run.stderr.strip()}")


def read_wav(path: Path) -> np.ndarray:
    """Mono samples of a RIFF WAV of 16-bit PCM or 32-bit float (spiral writes the latter)."""
    data = path.read_bytes()
    chunks, at = {}, 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        chunks[data[at : at + 4]] = data[at + 8 : at + 8 + size]
        at += 8 + size + (size & 1)
    fmt = chunks.get(b"fmt ")
    if fmt is None or b"data" not in chunks:
        fail(f"{path}: not a RIFF WAV")
    channels, bits = int.from_bytes(fmt[2:4], "little"), int.from_bytes(fmt[14:16], "little")
    dtype = {32: "<f4", 16: "<i2"}.get(bits) or fail(f"{path}: {bits}-bit samples")
    audio = np.frombuffer(chunks[b"data"], dtype=dtype).astype(np.float32)
    if bits == 16:
        audio /= 32768.0
    return audio.reshape(-1, channels).mean(axis=1)


def log_spectrum(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    window = np.hanning(n_fft).astype(np.float32)
    frames = [x[i : i + n_fft] * window for i in range(0, max(len(x) - n_fft, 0) + 1, hop)]
    power = np.abs(np.fft.rfft(np.array(frames), axis=1)) ** 2
    return 10.0 * np.log10(np.maximum(power, power.max() * 1e-8 + 1e-20))


def aligned_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame RMS distance along the cheapest monotonic alignment of a and b (DTW
    in a band around the diagonal wide enough for the length difference)."""
    squares = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2.0 * a @ b.T
    cost = np.sqrt(np.maximum(squares, 0.0) / a.shape[1])
    n, m = cost.shape
    band = abs(n - m) + 8
    total = np.full((n + 1, m + 1), np.inf)
    steps = np.zeros((n + 1, m + 1))
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        centre = i * m // n
        for j in range(max(1, centre - band), min(m, centre + band) + 1):
            options = ((total[i - 1, j - 1], steps[i - 1, j - 1]), (total[i - 1, j], steps[i - 1, j]), (total[i, j - 1], steps[i, j - 1]))
            best, count = min(options, key=lambda o: o[0])
            total[i, j], steps[i, j] = best + cost[i - 1, j - 1], count + 1
    return float(total[n, m] / steps[n, m])


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    lsd = aligned_distance(log_spectrum(reference), log_spectrum(candidate))
    return {"lsd_db": lsd, "length_change": (len(candidate) - len(reference)) / len(reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spiral", type=Path, required=True, help="the spiral binary (target/release/spiral)")
    parser.add_argument("--sentences", type=Path, default=REPO / "scripts" / "fixtures" / "harvard.txt")
    parser.add_argument("--codecs", default=",".join(CODECS), help="comma-separated; 'none' is the reference")
    args = parser.parse_args()
    if not args.spiral.is_file():
        fail(f"{args.spiral}: no such binary; build it with cargo build --release")
    codecs = args.codecs.split(",")
    if "none" not in codecs:
        codecs.insert(0, "none")
    sentences = read_sentences(args.sentences)
    model, model_name = whisper_model()
    report: dict = {"judge": model_name, "sentences": len(sentences), "codecs": {}}
    with tempfile.TemporaryDirectory(prefix="codec-quality-") as tmp:
        for codec in codecs:
            speak(args.spiral, codec, sentences, Path(tmp) / codec)
        for codec in codecs:
            wer = score(model, sentences, Path(tmp) / codec)
            entry = {"wer": wer["wer"]}
            if codec != "none":
                per = [
                    compare(read_wav(Path(tmp) / "none" / f"{i}.wav"), read_wav(Path(tmp) / codec / f"{i}.wav"))
                    for i in range(len(sentences))
                ]
                for key in ("lsd_db", "length_change"):
                    entry[f"mean_{key}"] = float(np.mean([p[key] for p in per]))
                entry["max_lsd_db"] = float(max(p["lsd_db"] for p in per))
            report["codecs"][codec] = entry
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
