#!/usr/bin/env bash
# Installs what airsync-streamer needs from Debian 12's own packages. Idempotent: when every
# package is already installed it only runs dpkg-query and returns in well under a second.
#   scripts/setup.sh          runtime + build dependencies (GStreamer 1.22, plugins, libnice)
#   scripts/setup.sh --test   also what the test suite uses (coturn, chromium, systemd tools,
#                             pulseaudio, gcc)
set -euo pipefail

packages=(
  pkg-config
  libglib2.0-dev
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools
  gstreamer1.0-plugins-base   # opusenc, audiotestsrc, videotestsrc, videoconvert
  gstreamer1.0-plugins-good   # v4l2src, rtp payloaders, pulsesrc, rtpbin
  gstreamer1.0-plugins-bad    # webrtcbin, dtls, srtp, sctp
  gstreamer1.0-plugins-ugly   # x264enc
  gstreamer1.0-libav          # avdec_h264, for receivers and tests
  gstreamer1.0-nice           # nicesrc/nicesink, libnice ICE agent
  gstreamer1.0-alsa
  gstreamer1.0-pulseaudio
  ca-certificates             # system roots for wss:// certificate verification
)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(coturn chromium systemd procps iproute2 openssl time)   # systemd-analyze; time: scripts/bench.sh
  packages+=(pulseaudio pulseaudio-utils)   # tests/devices.rs: a private sound server, pactl
  packages+=(gcc libc6-dev)   # tests/camera.rs: compiles the emulated camera (tests/data/fake_v4l2.c)
fi

# Rust comes from rustup (Debian 12's rustc 1.63 is too old for the GStreamer bindings).
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust >= 1.92 with rustup (https://rustup.rs), then rerun" >&2
  exit 1
fi
rustc_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [[ "$rustc_minor" =~ ^[0-9]+$ ]] && ((rustc_minor < 92)); then
  echo "setup: $(rustc --version) is too old: run 'rustup update stable' (need >= 1.92)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# coturn's package starts a system-wide turnserver; tests run their own on loopback.
if [[ " ${missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  $sudo systemctl disable --now coturn >/dev/null 2>&1 || true
fi
