#!/usr/bin/env bash
# bench/relay.sh: what forwarding costs the forwarding node.
#
# Publishes the test stream (720p30 H.264+AAC, ~2.7 Mbit/s) to a ferrolive for DURATION
# seconds three times and measures that node's CPU time each time: with nobody watching,
# with N forwards (rules to N rooms of a second ferrolive on loopback), and with N
# HTTP-FLV viewers instead. The issue's target: N forwards cost less than N viewers.
#
# Usage: N=50 DURATION=20 REPEAT=3 bench/relay.sh
# (FERROLIVE: the binary, default target/release/ferrolive; SOURCE: the FLV to publish,
# default the stream compare.sh generates.)

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FERROLIVE=${FERROLIVE:-$REPO_ROOT/target/release/ferrolive}
N=${N:-50}
DURATION=${DURATION:-20}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrolive-bench}
SOURCE=${SOURCE:-$CACHE_DIR/testsrc2-720p30-h264-2500k-gop60-aac128k-60s.flv}
OUTDIR=${OUTDIR:-$(mktemp -d /tmp/ferrolive-relay-bench.XXXXXX)}

die() { echo "relay.sh: $*" >&2; exit 1; }
[[ -x $FERROLIVE ]] || die "no binary at $FERROLIVE (cargo build --release)"
[[ -s $SOURCE ]] || die "no source stream $SOURCE: run bench/compare.sh once, or set SOURCE"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Starts a standalone node with extra flags; sets NODE_PID, NODE_RTMP, NODE_HTTP.
start_node() {
    local name=$1
    shift
    NODE_RTMP=$(free_port) NODE_HTTP=$(free_port)
    "$FERROLIVE" standalone --rtmp-noauth --data-dir "$OUTDIR/$name" \
        --rtmp-addr "127.0.0.1:$NODE_RTMP" --http-addr "127.0.0.1:$NODE_HTTP" \
        --api-addr "127.0.0.1:$(free_port)" "$@" >"$OUTDIR/$name.log" 2>&1 </dev/null &
    NODE_PID=$!
    for _ in $(seq 50); do
        curl -fsS -o /dev/null "http://127.0.0.1:$NODE_HTTP/healthz" 2>/dev/null && return
        sleep 0.1
    done
    die "$name did not start"
}

start_node destination
dest_pid=$NODE_PID dest_rtmp=$NODE_RTMP
trap 'kill $dest_pid 2>/dev/null || true' EXIT

# One run: the node's CPU seconds over the bench.
run() {
    local name=$1 viewers=$2
    shift 2
    start_node "$name" "$@"
    local pid=$NODE_PID t0 t1
    local -a play=()
    ((viewers > 0)) && play=(--flv "$viewers" --url-flv "http://127.0.0.1:$NODE_HTTP/live/b.flv")
    t0=$(ticks "$pid")
    "$FERROLIVE" bench --publish "rtmp://127.0.0.1:$NODE_RTMP/live/b" --source "$SOURCE" \
        --duration "$DURATION" --quiet "${play[@]}" --json "$OUTDIR/$name.json" >/dev/null 2>&1
    t1=$(ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "scale=2; ($t1 - $t0) / $(getconf CLK_TCK)" | bc
}

rules=()
for i in $(seq "$N"); do
    rules+=(--relay-push "live/*=rtmp://127.0.0.1:$dest_rtmp/live/{room}-$i")
done

# Runs alternate (alone, forwarding, watched) REPEAT times; the table gives each run and
# the medians: the machine's noise is about a tenth of what is measured.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf '| run | node CPU (s) | over what it costs alone |\n|---|---|---|\n'
alones=() forwards=() viewers=()
for r in $(seq "${REPEAT:-1}"); do
    alone=$(run alone 0)
    forwarding=$(run forwarding 0 "${rules[@]}")
    forwarded=$(grep -c "forwarding" "$OUTDIR/forwarding.log" || true)
    watched=$(run watched "$N")
    alones+=("$alone") forwards+=("$(echo "$forwarding - $alone" | bc)") viewers+=("$(echo "$watched - $alone" | bc)")
    printf '| %s: publisher only | %s | |\n' "$r" "$alone"
    printf '| %s: %s forwards (%s started) | %s | %s s |\n' "$r" "$N" "$forwarded" "$forwarding" "${forwards[-1]}"
    printf '| %s: %s HTTP-FLV viewers | %s | %s s |\n' "$r" "$N" "$watched" "${viewers[-1]}"
done
printf '| median: %s forwards | | %s s |\n' "$N" "$(median "${forwards[@]}")"
printf '| median: %s HTTP-FLV viewers | | %s s |\n' "$N" "$(median "${viewers[@]}")"
