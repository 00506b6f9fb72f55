#!/usr/bin/env bash
# The test command: installs what the tests need, starts PulseAudio with the `spiral` null
# sink the capture tests record from, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo test --workspace "$@"
