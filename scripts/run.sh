#!/usr/bin/env bash
# The main command: installs what spiral needs, builds it, and plays through the speakers
# (on a headless machine, through PulseAudio's null sink, which setup.sh starts).
#
#   scripts/run.sh                    the demo phrase through the default output
#   scripts/run.sh play song.wav      any spiral command line
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
if (($# == 0)); then
  set -- play --tone 330 --seconds 3
fi
exec target/release/spiral "$@"
