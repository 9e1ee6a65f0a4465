#!/usr/bin/env bash
# bench/glass.sh: glass-to-glass latency of WebRTC (WHEP) playback in Chromium, from an
# origin and through an edge, on one machine. A measurement, never a timed CI test.
#
# Starts redis-server, one origin and one edge (loopback, free ports), and ffmpeg
# publishing over RTMP to the origin: testsrc2 1280x720 at 30 fps with, drawn into every
# picture before it is encoded, the wall-clock time in ms (a strip of black and white
# blocks at the top left: bench/glass-barcode.mjs), libx264 veryfast/zerolatency, no
# B-frames, a keyframe every second, in real time (-re). Then headless Chromium
# (bench/glass.mjs) plays the stream over WHEP from the origin, then from the edge, and for
# every picture it presents reads the time back: now - drawn is one sample. The edge is
# asked only once the origin's run is over, so its pull starts with its viewer.
#
# Prints a markdown table (p50/p90/p99/max ms per protocol and node, also
# OUTDIR/results.md); each run's JSON report is OUTDIR/PROTOCOL-NODE.json, the servers' and
# ffmpeg's logs are beside them.
#
# Usage: bench/glass.sh            (env: FERROLIVE, SECONDS_EACH=30 (measured, after a
#                                   WARMUP=5 s), PROTOCOLS="webrtc" (add http-flv for
#                                   mpegts.js on HTTP-FLV in the same harness), OUTDIR)
#        bench/glass.sh --self-test  (draw known times with the same filter, encode with
#                                   x264, decode, read them back: no server, no browser)
#
# Needs: ffmpeg with libx264, node and tests/browser/node_modules (the README's test
# command installs them), Debian's chromium (or $CHROMIUM), redis-server, curl, python3.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FERROLIVE=${FERROLIVE:-$REPO_ROOT/target/release/ferrolive}
SECONDS_EACH=${SECONDS_EACH:-30}
WARMUP=${WARMUP:-5}
PROTOCOLS=${PROTOCOLS:-webrtc}
OUTDIR=${OUTDIR:-$(mktemp -d /tmp/ferrolive-glass.XXXXXX)}
FPS=30
BARCODE=$REPO_ROOT/bench/glass-barcode.mjs

die() { echo "glass.sh: $*" >&2; exit 1; }
mkdir -p "$OUTDIR"

# The barcode's round trip: 60 pictures with known times (12345678 ms, then 33 ms more
# each), through x264 at the run's settings and back to RGBA, read by the reader the page
# uses.
if [[ ${1:-} == --self-test ]]; then
    command -v ffmpeg >/dev/null && command -v node >/dev/null || die "needs ffmpeg and node"
    ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i "testsrc2=size=1280x720:rate=$FPS" \
        -t 2 -filter_complex "$(node "$BARCODE" filter $FPS '12345678+N*33')" -map '[v]' \
        -c:v libx264 -preset veryfast -tune zerolatency -b:v 2500k -g $FPS -bf 0 \
        -f h264 "$OUTDIR/self-test.h264"
    ffmpeg -hide_banner -loglevel error -nostdin -y -i "$OUTDIR/self-test.h264" \
        -f rawvideo -pix_fmt rgba "$OUTDIR/self-test.rgba"
    node "$BARCODE" check 1280 720 "$OUTDIR/self-test.rgba" 12345678 33
    rm -f "$OUTDIR/self-test.rgba"
    exit 0
fi

for tool in ffmpeg node redis-server curl python3; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
[[ -x $FERROLIVE ]] || die "no $FERROLIVE (cargo build --release)"
[[ -d $REPO_ROOT/tests/browser/node_modules/playwright-core ]] ||
    die "no tests/browser/node_modules: (cd tests/browser && npm ci)"
for p in $PROTOCOLS; do
    [[ $p == webrtc || $p == http-flv ]] || die "unknown protocol $p (webrtc, http-flv)"
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# A UDP port nobody holds, for a node's WebRTC socket.
free_udp_port() {
    python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_http() {
    for _ in $(seq 100); do
        curl -sf "http://$1/healthz" >/dev/null && return 0
        sleep 0.1
    done
    die "nothing answers on $1; logs in $OUTDIR"
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --save '' --appendonly no >"$OUTDIR/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.3
CLUSTER=(--redis-url "redis://127.0.0.1:$REDIS_PORT" --advertise-host 127.0.0.1
    --allow-loopback-advertise --log info)

ORIGIN_RTMP=127.0.0.1:$(free_port)
ORIGIN_HTTP=127.0.0.1:$(free_port)
"$FERROLIVE" origin "${CLUSTER[@]}" --node-id origin --rtmp-noauth \
    --rtmp-addr "$ORIGIN_RTMP" --http-addr "$ORIGIN_HTTP" --rtsp-addr "127.0.0.1:$(free_port)" \
    --webrtc-udp-addr "127.0.0.1:$(free_udp_port)" >"$OUTDIR/origin.log" 2>&1 &
PIDS+=($!)
EDGE_HTTP=127.0.0.1:$(free_port)
"$FERROLIVE" edge "${CLUSTER[@]}" --node-id edge \
    --rtmp-addr "127.0.0.1:$(free_port)" --http-addr "$EDGE_HTTP" --rtsp-addr "127.0.0.1:$(free_port)" \
    --webrtc-udp-addr "127.0.0.1:$(free_udp_port)" >"$OUTDIR/edge.log" 2>&1 &
PIDS+=($!)
wait_http "$ORIGIN_HTTP"
wait_http "$EDGE_HTTP"

# Long enough for every run; ffmpeg stops by itself should the script be killed hard.
TOTAL=$(( (SECONDS_EACH + WARMUP + 20) * 2 * $(wc -w <<<"$PROTOCOLS") + 30 ))
ffmpeg -hide_banner -loglevel warning -nostdin -re \
    -f lavfi -i "testsrc2=size=1280x720:rate=$FPS" \
    -f lavfi -i "sine=frequency=440:sample_rate=44100" -t "$TOTAL" \
    -filter_complex "$(node "$BARCODE" filter $FPS)" -map '[v]' -map 1:a \
    -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p \
    -b:v 2500k -maxrate 2500k -bufsize 2500k -g $FPS -keyint_min $FPS -sc_threshold 0 -bf 0 \
    -c:a aac -b:a 128k -ar 44100 \
    -f flv "rtmp://$ORIGIN_RTMP/live/glass" >"$OUTDIR/ffmpeg.log" 2>&1 &
PIDS+=($!)
# Live once the origin lists it as published (an FLV request would never end: it is live).
for _ in $(seq 100); do
    curl -sf --max-time 1 "http://$ORIGIN_HTTP/api/streams" | grep -q '"stream":"live/glass","app":"live","room":"glass","publishing":true' && break
    sleep 0.2
done
sleep 2 # a GOP or two in the origin's cache

RESULTS=$OUTDIR/results.tsv
: >"$RESULTS"
for proto in $PROTOCOLS; do
    for node in origin edge; do
        host=$ORIGIN_HTTP
        [[ $node == edge ]] && host=$EDGE_HTTP
        if [[ $proto == webrtc ]]; then
            play=(--url "http://$host/live/glass/whep")
        else
            play=(--flv "http://$host/live/glass.flv")
        fi
        json=$OUTDIR/$proto-$node.json
        echo "[glass $(date +%H:%M:%S)] $proto from the $node, ${SECONDS_EACH} s after ${WARMUP} s" >&2
        node "$REPO_ROOT/bench/glass.mjs" "${play[@]}" --seconds "$SECONDS_EACH" \
            --warmup "$WARMUP" >"$json" || die "glass.mjs failed; see $OUTDIR"
        printf '%s\t%s\t%s\n' "$proto" "$node" "$json" >>"$RESULTS"
    done
done

python3 - "$RESULTS" "$OUTDIR/results.md" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
out = [
    "| protocol | from | pictures timed | p50 ms | p90 ms | p99 ms | max ms | misread | first picture ms |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|",
]
for proto, node, path in rows:
    r = json.load(open(path))
    out.append(
        f"| {proto} | {node} | {r['samples']} | {r['p50_ms']} | {r['p90_ms']} | "
        f"{r['p99_ms']} | {r['max_ms']} | {r['misread']} | {r['first_frame_ms']} |"
    )
    for e in r["errors"]:
        out.append(f"\n{proto} {node}: error: {e}")
text = "\n".join(out) + "\n"
open(sys.argv[2], "w").write(text)
print(text, end="")
PY
echo "[glass] results in $OUTDIR" >&2
