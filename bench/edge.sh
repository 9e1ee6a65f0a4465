#!/usr/bin/env bash
# bench/edge.sh: what an edge adds, measured with `ferrolive bench` on one machine.
#
# Starts redis-server, one origin and one edge (loopback), then:
#   1. N HTTP-FLV players of a stream on the origin itself: the baseline latency.
#   2. N HTTP-FLV players of the same kind of stream on the edge: time to first frame of a
#      stream the edge already pulls, latency through the edge hop, and the number of
#      upstream connections the origin sees (its viewer count, sampled during the run).
#   3. K times, one player of a stream the edge does not pull yet (it pulls on the miss):
#      time to first frame on a cache miss.
# Prints a markdown table (also OUTDIR/results.md).
#
# Usage: bench/edge.sh            (env: FERROLIVE, PLAYERS=500, DURATION=20, MISSES=20,
#                                  SOURCE=synthetic or an FLV file, OUTDIR)

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FERROLIVE=${FERROLIVE:-$REPO_ROOT/target/release/ferrolive}
PLAYERS=${PLAYERS:-500}
DURATION=${DURATION:-20}
MISSES=${MISSES:-20}
SOURCE=${SOURCE:-synthetic}
OUTDIR=${OUTDIR:-$(mktemp -d /tmp/ferrolive-edge-bench.XXXXXX)}

for tool in redis-server python3 curl; do
    command -v "$tool" >/dev/null || { echo "edge.sh: needs $tool" >&2; exit 1; }
done
[[ -x $FERROLIVE ]] || { echo "edge.sh: no $FERROLIVE (cargo build --release)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUTDIR"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_http() {
    for _ in $(seq 100); do
        curl -sf "http://$1/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "edge.sh: nothing answers on $1; logs in $OUTDIR" >&2
    exit 1
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --save '' --appendonly no >"$OUTDIR/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.3
CLUSTER=(--redis-url "redis://127.0.0.1:$REDIS_PORT" --advertise-host 127.0.0.1
    --allow-loopback-advertise --log warn)

ORIGIN_RTMP=127.0.0.1:$(free_port)
ORIGIN_HTTP=127.0.0.1:$(free_port)
"$FERROLIVE" origin "${CLUSTER[@]}" --node-id origin --rtmp-noauth \
    --rtmp-addr "$ORIGIN_RTMP" --http-addr "$ORIGIN_HTTP" >"$OUTDIR/origin.log" 2>&1 &
PIDS+=($!)
EDGE_RTMP=127.0.0.1:$(free_port)
EDGE_HTTP=127.0.0.1:$(free_port)
"$FERROLIVE" edge "${CLUSTER[@]}" --node-id edge --edge-idle-grace 1 \
    --rtmp-addr "$EDGE_RTMP" --http-addr "$EDGE_HTTP" >"$OUTDIR/edge.log" 2>&1 &
PIDS+=($!)
wait_http "$ORIGIN_HTTP"
wait_http "$EDGE_HTTP"

metric() { # metric HOST NAME
    curl -sf "http://$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

# One bench run: bench ROOM PLAY_HOST JSON [more bench args]
bench() {
    local room=$1 host=$2 json=$3
    shift 3
    "$FERROLIVE" bench --quiet --publish "rtmp://$ORIGIN_RTMP/live/$room" --source "$SOURCE" \
        --flv "$PLAYERS" --url-flv "http://$host/live/$room.flv" \
        --duration "$DURATION" --json "$json" "$@" >"$json.txt" 2>&1
}

echo "edge.sh: $PLAYERS players on the origin (baseline)..." >&2
bench direct "$ORIGIN_HTTP" "$OUTDIR/origin.json"

echo "edge.sh: $PLAYERS players on the edge..." >&2
bench viaedge "$EDGE_HTTP" "$OUTDIR/edge.json" &
BENCH=$!
# The origin's viewers of the room while the edge serves all the players: its upstreams.
UPSTREAMS=0
for _ in $(seq $((DURATION - 2))); do
    sleep 1
    n=$(curl -sf "http://$ORIGIN_HTTP/metrics" |
        awk '$1 == "ferrolive_stream_viewers{stream=\"live/viaedge\"}" { print $2 }')
    ((${n:-0} > UPSTREAMS)) && UPSTREAMS=${n:-0}
done
wait "$BENCH"

echo "edge.sh: $MISSES first viewers of a stream the edge does not pull..." >&2
"$FERROLIVE" bench --quiet --publish "rtmp://$ORIGIN_RTMP/live/miss" --source "$SOURCE" \
    --duration $((MISSES * 6 + 10)) >"$OUTDIR/miss-publisher.txt" 2>&1 &
PIDS+=($!)
sleep 2
MISS_JSONS=()
for i in $(seq "$MISSES"); do
    # Wait until the edge let the previous pull go (idle grace 1 s).
    for _ in $(seq 50); do
        [[ $(metric "$EDGE_HTTP" ferrolive_upstreams) == 0 ]] && break
        sleep 0.2
    done
    "$FERROLIVE" bench --quiet --flv 1 --url-flv "http://$EDGE_HTTP/live/miss.flv" \
        --duration 1 --json "$OUTDIR/miss-$i.json" >/dev/null 2>&1
    MISS_JSONS+=("$OUTDIR/miss-$i.json")
done

python3 - "$OUTDIR" "$PLAYERS" "$UPSTREAMS" "${MISS_JSONS[@]}" <<'EOF' | tee "$OUTDIR/results.md"
import json, sys
outdir, players, upstreams = sys.argv[1:4]
def load(name):
    with open(f"{outdir}/{name}") as f:
        return json.load(f)["overall"]
origin, edge = load("origin.json"), load("edge.json")
misses = sorted(json.load(open(p))["overall"]["ttff_ms"]["p99_ms"] for p in sys.argv[4:])
def pct(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
hop = edge["latency_ms"]["p99_ms"] - origin["latency_ms"]["p99_ms"]
print(f"| figure ({players} HTTP-FLV players) | value |")
print("|---|---|")
print(f"| first frame, stream already pulled, p50 / p99 | {edge['ttff_ms']['p50_ms']:.1f} / {edge['ttff_ms']['p99_ms']:.1f} ms |")
print(f"| first frame on a cache miss ({len(misses)} tries), p50 / p99 / max | {pct(misses, .5):.1f} / {pct(misses, .99):.1f} / {misses[-1]:.1f} ms |")
print(f"| latency p99 on the origin / through the edge | {origin['latency_ms']['p99_ms']:.1f} / {edge['latency_ms']['p99_ms']:.1f} ms |")
print(f"| latency added by the edge hop, p99 | {hop:.1f} ms |")
print(f"| upstream connections at the origin (most seen) | {upstreams} |")
print(f"| frames received through the edge | {edge['frames_received_pct']:.2f}%, {edge['stalls']} stalls |")
EOF
echo "edge.sh: upstream pulls the edge made in all: $(metric "$EDGE_HTTP" ferrolive_upstream_pulls_total); logs and JSON in $OUTDIR" >&2
