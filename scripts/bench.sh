#!/usr/bin/env bash
# Performance figures, measured side by side in one run (README "Performance").
# Prints figures with their targets; asserts nothing. Usage: scripts/bench.sh [seconds]
# (BENCH_ROUNDS, BENCH_WARMUP, BENCH_ALSO: see where each is read).
#   1. CPU-seconds and peak RSS: the box streaming 1280x720@30 test video + Opus to a receiving
#      peer in another process, against the bare encode pipeline (same encoders into fakesink);
#      the box with congestion control off beside it.
#   2. Time from the offer, and from the answer, to the first decoded frame (5 sessions).
#   3. Glass-to-glass latency (capture time stamped into the picture, read after decoding).
#   4. The bottleneck scenarios (tests/bottleneck.rs, tests/retransmission_bound.rs) with their figures: a simple scene, a scene turning simple, a start above the link and a handshake slowed by lost DTLS among them.
#   5. Key frame on request: PLI at the box's encoder -> key frame out (tests/recovery.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-20}
WORK=$(mktemp -d)
PEER_PID=
cleanup() {
  if [ -n "$PEER_PID" ]; then kill "$PEER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

VIDEO_ENC='x264enc name=venc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=60 bitrate=1500'
AUDIO_ENC='opusenc name=aenc inband-fec=true bitrate=64000'
VIDEO_SRC='videotestsrc name=vsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1'
AUDIO_SRC='audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audio/x-raw,format=S16LE,rate=48000,channels=2'

cat > "$WORK/bench720.pipeline" <<P
webrtcbin name=webrtc
$AUDIO_SRC
  ! $AUDIO_ENC
  ! rtpopuspay pt=111
  ! webrtc.sink_0
$VIDEO_SRC
  ! $VIDEO_ENC
  ! video/x-h264,profile=constrained-baseline
  ! rtph264pay pt=106 config-interval=-1 aggregate-mode=zero-latency
  ! webrtc.sink_1
P
BARE="$VIDEO_SRC ! $VIDEO_ENC ! video/x-h264,profile=constrained-baseline ! fakesink $AUDIO_SRC ! $AUDIO_ENC ! fakesink"

echo "== building (release)"
# The box apart from the examples: built with them, it would get the dev-dependencies' features
# and be another binary than the one `scripts/run.sh` builds (build.rs's function order, too,
# names the functions of that one).
cargo build --release --quiet --bin airsync-streamer
cargo build --release --quiet --example bench_peer --example glass
BIN=target/release/airsync-streamer
# A stale list (dependencies updated, code renamed) shows as names missing here and as a higher
# peak RSS below: rerun scripts/hot-functions.sh.
# That they are found is not enough: the span they occupy shows whether the linker was given
# the list at all (when it was not, they lie scattered over the whole 4 MB of code).
if [ -f link/hot-functions.txt ]; then
  nm -S --defined-only "$BIN" | perl -e '
    open my $list, "<", "link/hot-functions.txt" or die "link/hot-functions.txt: $!";
    my %hot = map { chomp; ($_ => 1) } <$list>;
    my ($n, $code, $lo, $hi) = (0, 0);
    while (<STDIN>) {
      my ($addr, $size, $type, $name) = split;
      next unless defined $name && delete $hot{$name};
      my ($a, $s) = (hex $addr, hex $size);
      $n++; $code += $s;
      $lo = $a if !defined $lo || $a < $lo;
      $hi = $a + $s if !defined $hi || $a + $s > $hi;
    }
    my $listed = $n + keys %hot;
    my $span = $n ? ($hi - $lo) / 1024 : 0;
    printf "  hot functions placed together (build.rs): %d of the %d listed in link/hot-functions.txt are in the binary, within %.0f KiB of code (their own: %.0f KiB)\n",
      $n, $listed, $span, $code / 1024;
    print "  WARNING: they are NOT placed together: the release build did not pass the list to the linker (see build.rs)\n"
      if $n && $span > 2 * $code / 1024;'
fi

echo "== machine"
echo "  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -m | awk '/Mem:/{print $2}') MiB RAM, $(gst-launch-1.0 --version | sed -n 2p)"

# webrtcbin holds the first packet for its jitter-buffer latency (default 200 ms); a browser
# on loopback starts playing almost at once, so the peer runs with 20 ms.
AIRSYNC_RECEIVER_LATENCY_MS=${AIRSYNC_RECEIVER_LATENCY_MS:-20} target/release/examples/bench_peer > "$WORK/peer.log" 2>"$WORK/peer.err" &
PEER_PID=$!
for _ in $(seq 100); do grep -q '^URL ' "$WORK/peer.log" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^URL //p' "$WORK/peer.log")
BOX_ARGS=(--url "$URL" --pipeline "$WORK/bench720.pipeline" --ice-address 127.0.0.1
          --video-start-bitrate 1500 --video-max-bitrate 1500 --log-level warn)

WARMUP=${BENCH_WARMUP:-5}
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
thread_ns() { # pid: "tid name cpu_ns" per thread (schedstat: exact run time, not ticks)
  local t
  for t in /proc/"$1"/task/*; do
    echo "${t##*/} $(tr ' ' _ < "$t/comm") $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null || echo 0)"
  done
}
measure() { # command...: prints "steady_cpu_s total_cpu_s peak_rss_kib"
  # Steady state: CPU over SECONDS_RUN once WARMUP seconds have passed (start-up excluded:
  # plugin loading, and for the box its one-time 2048-bit RSA DTLS key and the negotiation).
  # Total: everything from exec to the end of the run. Peak RSS: the process's high-water mark.
  "$@" >/dev/null 2>&1 &
  local pid=$! hz
  hz=$(getconf CLK_TCK)
  sleep "$WARMUP"
  local c0 c1 hwm
  c0=$(cpu_ticks "$pid")
  thread_ns "$pid" > "$WORK/threads0"
  sleep "$SECONDS_RUN"
  c1=$(cpu_ticks "$pid")
  thread_ns "$pid" > "$WORK/threads1"
  hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  awk -v a="$c0" -v b="$c1" -v hz="$hz" -v m="$hwm" 'BEGIN { printf "%.2f %.2f %d\n", (b - a) / hz, b / hz, m }'
}

by_role() { # the last measured process's CPU over the run, by thread role, in seconds
  # Thread names are GStreamer's "element:pad" for streaming threads. The bench description
  # has no queue of its own, so queue0 is webrtcbin's receive queue.
  join <(sort "$WORK/threads0") <(sort "$WORK/threads1") | awk '
    { d = ($5 - $3) / 1e9; n = $2
      if (n ~ /^rtpgccbwe/) r["pacing"] += d
      else if (n ~ /^(queue|nicesrc|dtls|srtp)/) r["receive"] += d
      else if (n ~ /^(SCTP|sctp|appsrc|webrtc:|tokio|rtpsession|rtprtxsend|GstSystemClock|airsync|pool)/) r["other"] += d
      else r["streaming"] += d }
    END { printf "%.3f %.3f %.3f %.3f\n", r["streaming"], r["pacing"], r["receive"], r["other"] }'
}

ROUNDS=${BENCH_ROUNDS:-5}
echo "== 1. CPU and memory, ${SECONDS_RUN} s of 1280x720@30 + Opus after ${WARMUP} s of warm-up, ${ROUNDS} rounds (bare and box alternating)"
# One round is noisy on a shared 2-core machine (±10 % between identical runs): the rounds
# alternate so both see the same background, and the median ratio is the figure.
: > "$WORK/rounds"
: > "$WORK/roles"
# BENCH_ALSO="bin ..." measures other builds of the box too (an older commit, another link),
# each round after the bare pipeline in turn with this one, the order rotating from round to
# round; their ratios follow this build's.
read -r -a ALSO <<< "${BENCH_ALSO:-}"
# Always measured beside them: this build with congestion control off (no estimator, no pacing
# thread: each packet leaves from its streaming thread), so each run shows how much of the
# ratio is the box's congestion control and how much the webrtcbin path and the host beneath.
printf '[video]\ncongestion_control = false\n' > "$WORK/no-cc.toml"
printf '#!/bin/sh\nAIRSYNC_CONFIG="%s" exec "%s" "$@"\n' "$WORK/no-cc.toml" "$PWD/$BIN" > "$WORK/box-without-congestion-control"
chmod +x "$WORK/box-without-congestion-control"
ALSO=("$WORK/box-without-congestion-control" "${ALSO[@]}")
: > "$WORK/also"
for round in $(seq "$ROUNDS"); do
  read -r BARE_CPU BARE_TOTAL BARE_RSS < <(measure gst-launch-1.0 -q $BARE)
  BOXES=("$BIN" "${ALSO[@]}")
  for k in $(seq 0 $((${#BOXES[@]} - 1))); do
    box=${BOXES[$(((k + round) % ${#BOXES[@]}))]}
    if [ "$box" = "$BIN" ]; then
      read -r BOX_CPU BOX_TOTAL BOX_RSS < <(measure "$BIN" "${BOX_ARGS[@]}")
      by_role >> "$WORK/roles"
    else
      read -r X_CPU _ X_RSS < <(measure "$box" "${BOX_ARGS[@]}")
      echo "$box $X_CPU $X_RSS $BARE_CPU" >> "$WORK/also"
    fi
  done
  echo "$BARE_CPU $BARE_RSS $BOX_CPU $BOX_RSS $BARE_TOTAL $BOX_TOTAL" >> "$WORK/rounds"
  NO_CC_CPU=$(awk -v b="$WORK/box-without-congestion-control" '$1 == b { c = $2 } END { print c }' "$WORK/also")
  awk -v r="$round" -v bc="$BARE_CPU" -v br="$BARE_RSS" -v xc="$BOX_CPU" -v xr="$BOX_RSS" -v bt="$BARE_TOTAL" -v xt="$BOX_TOTAL" -v nc="$NO_CC_CPU" 'BEGIN {
    printf "  round %d: bare %.2f s CPU (%.2f s with start-up), peak RSS %.1f MiB; box %.2f s CPU (%.2f s), peak RSS %.1f MiB; ratio %.2fx (%.2fx); congestion control off %.2f s, %.2fx\n", r, bc, bt, br/1024, xc, xt, xr/1024, xc/bc, xt/bt, nc, nc/bc }'
done
median_ratio() { # numerator column, denominator column
  awk -v n="$1" -v d="$2" '{ printf "%.4f\n", $n / $d }' "$WORK/rounds" | sort -n | awk '
    { r[NR] = $1 } END { printf "%.2fx [%.2f-%.2f]", r[int((NR + 1) / 2)], r[1], r[NR] }'
}
echo "  CPU ratio, steady state: median $(median_ratio 3 1) over $ROUNDS rounds (target <= 1.10x)"
echo "  CPU ratio, start-up included: median $(median_ratio 6 5)"
for box in "${ALSO[@]}"; do
  awk -v b="$box" '$1 == b { printf "%.4f %.1f\n", $2 / $4, $3 / 1024 }' "$WORK/also" | sort -n | awk -v b="$box" '
    { r[NR] = $1; if ($2 > peak) peak = $2 }
    END { printf "  also %s: CPU ratio median %.2fx [%.2f-%.2f], peak RSS %.1f MiB\n", b, r[int((NR + 1) / 2)], r[1], r[NR], peak }' \
    | sed "s|$WORK/box-without-congestion-control|this build with congestion control off|"
done
# Where the box's CPU goes, next to the bare pipeline's (medians over the rounds):
# "streaming" is the description's own threads (sources, encoders, and in the box also the
# payloaders, webrtcbin's elements, and the sending of what the pacer's budget allows at once:
# RTP session, SRTP, sendmsg); "pacing" is rtpgccbwe's thread, which sends only what had to wait
# for budget; "receive" is the peer's RTCP and TWCC feedback.
col_median() { # file column: the median of that column
  cut -d' ' -f"$2" "$1" | sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }'
}
echo "  box CPU by thread, medians per ${SECONDS_RUN} s: streaming $(col_median "$WORK/roles" 1) s (the bare pipeline, all threads: $(col_median "$WORK/rounds" 1) s), pacing $(col_median "$WORK/roles" 2) s, receive $(col_median "$WORK/roles" 3) s, other $(col_median "$WORK/roles" 4) s"
awk '{ if ($4 > peak) peak = $4; if ($2 > bare) bare = $2 } END {
  printf "  peak RSS %.1f MiB, highest of the rounds (target <= 50 MiB); bare pipeline %.1f MiB (gst-launch, with transparent huge pages as the system sets them; the box turns them off for itself)\n", peak/1024, bare/1024 }' "$WORK/rounds"
echo "  peak RSS ratio, box/bare: median $(median_ratio 4 2) over $ROUNDS rounds (the target is the 50 MiB above, not a ratio)"

echo "== 2. offer/answer -> first decoded frame (5 sessions, loopback)"
# Each run is a new process, so each pays the start-up too: plugin loading, the DTLS
# certificate (generated while the box connects), the first pipeline.
: > "$WORK/starts"
for i in 1 2 3 4 5; do
  date +%s%3N >> "$WORK/starts"
  timeout -s INT 4 "$BIN" "${BOX_ARGS[@]}" >/dev/null 2>&1 || true
done
sleep 0.5
grep '^FIRST_FRAME' "$WORK/peer.log" | sed 's/^/  /'
# The CPU rounds' sessions came first; the last five are the start-up runs.
STARTS=$(grep '^FIRST_FRAME' "$WORK/peer.log" | tail -n 5)
median() { sort -n | awk '{v[NR] = $1} END { if (NR) printf "%.1f", v[int((NR + 1) / 2)]; else printf "?" }'; }
FROM_OFFER=$(echo "$STARTS" | grep -o 'from_offer_ms=[0-9.]*' | cut -d= -f2 | median)
FROM_ANSWER=$(echo "$STARTS" | grep -o 'from_answer_ms=[0-9.]*' | cut -d= -f2 | median)
FROM_START=$(echo "$STARTS" | grep -o 'at_unix_ms=[0-9]*' | cut -d= -f2 | paste -d' ' "$WORK/starts" - \
  | awk 'NF == 2 { print $2 - $1 }' | median)
echo "  median from offer ${FROM_OFFER} ms (target <= 100 ms), from answer ${FROM_ANSWER} ms, over 5 sessions"
echo "  median from the box's process start ${FROM_START} ms (a new process each: plugins, DTLS certificate, pipeline, connecting)"

echo "== 3. glass-to-glass, 1280x720@30 on loopback"
target/release/examples/glass "$WORK/bench720.pipeline" 10 2>/dev/null | { grep "^GLASS" || true; } | awk '{
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "  median %s ms, p95 %s ms, max %s ms over %s frames (target median <= 50 ms = 1.5 frame intervals)\n", v["median_ms"], v["p95_ms"], v["max_ms"], v["frames"] }'

echo "== 4. bottleneck scenarios (tests/bottleneck.rs, tests/retransmission_bound.rs)"
cargo test --release --quiet --test bottleneck --test retransmission_bound -- --test-threads=1 --nocapture 2>&1 \
  | grep -E '^(bottleneck|simple scene|scene turning simple|start above|handshake|5 %|  |test result)' || true

echo "== 5. key frame on request (tests/recovery.rs, 640x480@30, no periodic key frames)"
cargo test --release --quiet --test recovery -- --nocapture 2>&1 \
  | grep -E '^(key frame request|request at the box|test result)' | sed 's/^/  /' || true
