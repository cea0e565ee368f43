#!/usr/bin/env bash
# Writes link/hot-functions.txt: the functions of the release binary that a streaming session
# runs, in address order, for build.rs to place side by side (see there for why). Runs the box
# under valgrind's callgrind, which records every instruction executed, for two sessions of
# the test picture to examples/bench_peer on loopback: the shipped test description (with
# the scaler that lets congestion control step the picture down) and one without it, as the
# benchmark streams. The picture is 160x120 so valgrind keeps up; the box's own code runs the
# same at any size. Takes about 5 minutes. Rerun it after changing dependencies or much code,
# then compare the peak RSS of scripts/bench.sh.
#
# What runs varies a little from one profile to the next (a timer that fires or not, an error
# path), so the functions of the current list that the binary still has stay listed: each run
# adds to the list, and only drops what no longer exists. HOT_FRESH=1 starts from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

# Built apart: built with the examples, the binary would get the dev-dependencies' features,
# and its generic functions other names than in the binary `scripts/run.sh` builds.
cargo build --release --quiet --bin airsync-streamer
cargo build --release --quiet --example bench_peer
BIN=target/release/airsync-streamer
SESSION_SECONDS=${SESSION_SECONDS:-20}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

sed 's/width=640,height=480/width=160,height=120/g' pipelines/test.pipeline > "$WORK/scaled.pipeline"
sed -e '/videoscale/d' -e '/name=vcaps/d' "$WORK/scaled.pipeline" > "$WORK/plain.pipeline"

profile() { # name: one callgrind session, ended with SIGINT once the peer has decoded a while
  local name=$1 peer box
  AIRSYNC_RECEIVER_LATENCY_MS=20 target/release/examples/bench_peer > "$WORK/$name.peer" 2>/dev/null &
  peer=$!
  PIDS+=("$peer")
  for _ in $(seq 100); do grep -q '^URL ' "$WORK/$name.peer" && break; sleep 0.1; done
  valgrind --tool=callgrind --dump-instr=yes --demangle=no --callgrind-out-file="$WORK/$name.cg" \
    "$BIN" --url "$(sed -n 's/^URL //p' "$WORK/$name.peer")" --pipeline "$WORK/$name.pipeline" \
    --ice-address 127.0.0.1 --log-level warn > "$WORK/$name.log" 2>&1 &
  box=$!
  PIDS+=("$box")
  for _ in $(seq 240); do grep -q '^FIRST_FRAME' "$WORK/$name.peer" && break; sleep 0.5; done
  if ! grep -q '^FIRST_FRAME' "$WORK/$name.peer"; then
    echo "hot-functions: the $name session never reached the peer; valgrind's log:" >&2
    tail -20 "$WORK/$name.log" >&2
    return 1
  fi
  sleep "$SESSION_SECONDS"
  kill -INT "$box"
  wait "$box" || true
  kill "$peer" 2>/dev/null || true
}

echo "== profiling two sessions under callgrind, one after the other (a few minutes)"
profile scaled
profile plain

PREVIOUS=link/hot-functions.txt
if [[ ${HOT_FRESH:-0} == 1 ]]; then PREVIOUS=""; fi
# Every instruction address callgrind lists for the binary, mapped to the function holding it.
perl -e '
  my ($bin, $previous, @files) = @ARGV;
  my %seen;
  for my $file (@files) {
    open(my $in, "<", $file) or die "$file: $!";
    my (%objects, $inside, $pos) = ((), 0, 0);
    while (<$in>) {
      if (/^([0-9]|\+|-|\*)/) {
        my ($at) = split;
        if ($at =~ /^0x/) { $pos = hex($at) } elsif ($at =~ /^([+-])(\d+)/) { $pos += $1 eq "+" ? $2 : -$2 }
        $seen{$pos} = 1 if $inside;
      } elsif (/^(c?)ob=\((\d+)\)(?: (.*))?$/) {
        $objects{$2} = $3 if defined $3;
        $inside = $objects{$2} eq $bin if $1 eq "";
      }
    }
  }
  my @symbols;
  open(my $nm, "-|", "nm", "-S", "--defined-only", $bin) or die "nm: $!";
  while (<$nm>) {
    my ($addr, $size, $type, $name) = split;
    push @symbols, [hex($addr), hex($size), $name] if defined $name && $type =~ /^[tT]$/;
  }
  @symbols = sort { $a->[0] <=> $b->[0] } @symbols;
  my %hot;
  if ($previous ne "" && open(my $list, "<", $previous)) {
    my %listed = map { chomp; ($_ => 1) } <$list>;
    $listed{$_->[2]} and $hot{$_->[2]} = $_ for @symbols;
    printf STDERR "  kept from the current list: %d of its %d functions\n", scalar(keys %hot), scalar(keys %listed);
  }
  for my $at (keys %seen) {
    my ($lo, $hi) = (0, $#symbols);
    while ($lo < $hi) { my $mid = int(($lo + $hi + 1) / 2); if ($symbols[$mid][0] <= $at) { $lo = $mid } else { $hi = $mid - 1 } }
    my $s = $symbols[$lo];
    $hot{$s->[2]} = $s if $s->[0] <= $at && $at < $s->[0] + $s->[1];
  }
  my $bytes = 0;
  for my $s (sort { $a->[0] <=> $b->[0] } values %hot) { print "$s->[2]\n"; $bytes += $s->[1] }
  printf STDERR "  %d functions, %.0f KiB of code\n", scalar(keys %hot), $bytes / 1024;
' "$(readlink -f "$BIN")" "$PREVIOUS" "$WORK/scaled.cg" "$WORK/plain.cg" > "$WORK/hot-functions.txt"
mkdir -p link
mv "$WORK/hot-functions.txt" link/hot-functions.txt
echo "== wrote link/hot-functions.txt; the next release build links by it"
