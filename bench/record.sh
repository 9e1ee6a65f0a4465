#!/usr/bin/env bash
# bench/record.sh: many streams recorded at once.
#
# Starts `ferrolive standalone --record-dir`, publishes STREAMS copies of the test stream
# (720p30 H.264+AAC, ~2.7 Mbit/s) at once with `ferrolive bench --publish`, one process
# each, for DURATION seconds; then checks every recorded file with ffprobe: it must hold
# every video frame its publisher sent (packets counted, no decoding). Prints the server's
# CPU time and peak RSS over the run, what was written, and the frames missing.
#
# Usage: STREAMS=100 DURATION=30 FORMAT=mp4 bench/record.sh
# (FERROLIVE: the binary, default target/release/ferrolive; SOURCE: the FLV to publish,
# default the stream compare.sh generates; OUTDIR: where files and logs go; FORMAT=none
# runs the same streams without recording, for the cost of recording by difference.)

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FERROLIVE=${FERROLIVE:-$REPO_ROOT/target/release/ferrolive}
STREAMS=${STREAMS:-100}
DURATION=${DURATION:-30}
FORMAT=${FORMAT:-mp4}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrolive-bench}
SOURCE=${SOURCE:-$CACHE_DIR/testsrc2-720p30-h264-2500k-gop60-aac128k-60s.flv}
OUTDIR=${OUTDIR:-$(mktemp -d /var/tmp/ferrolive-record-bench.XXXXXX)}

die() { echo "record.sh: $*" >&2; exit 1; }
log() { echo "[record $(date +%H:%M:%S)] $*" >&2; }

[[ -x $FERROLIVE ]] || die "no binary at $FERROLIVE (cargo build --release)"
[[ -s $SOURCE ]] || die "no source stream $SOURCE: run bench/compare.sh once, or set SOURCE"
command -v ffprobe >/dev/null || die "ffprobe is needed (apt-get install ffmpeg)"
ulimit -n 65536 2>/dev/null || true

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# utime+stime (clock ticks) and VmHWM (kB) of one process.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
peak_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

rtmp=$(free_port) http=$(free_port) api=$(free_port)
mkdir -p "$OUTDIR/rec" "$OUTDIR/publishers"
record=(--record-dir "$OUTDIR/rec" --record-format "$FORMAT")
[[ $FORMAT == none ]] && record=()
"$FERROLIVE" standalone --rtmp-noauth --data-dir "$OUTDIR/data" \
    --rtmp-addr "127.0.0.1:$rtmp" --http-addr "127.0.0.1:$http" --api-addr "127.0.0.1:$api" \
    "${record[@]}" >"$OUTDIR/server.log" 2>&1 </dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$http/healthz" 2>/dev/null && break
    sleep 0.1
done

log "$STREAMS streams of $(basename "$SOURCE") for $DURATION s, recorded as $FORMAT under $OUTDIR/rec"
t0=$(ticks $server)
start=$(date +%s.%N)
pids=()
for i in $(seq "$STREAMS"); do
    "$FERROLIVE" bench --publish "rtmp://127.0.0.1:$rtmp/live/s$i" --source "$SOURCE" \
        --duration "$DURATION" --quiet --json "$OUTDIR/publishers/s$i.json" \
        >"$OUTDIR/publishers/s$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
# Recordings end once their streams do (after the reconnect grace).
for _ in $(seq 300); do
    n=$(curl -fsS "http://127.0.0.1:$http/metrics" | awk '/^ferrolive_recordings / { print $2 }')
    [[ $n == 0 ]] && break
    sleep 0.1
done
t1=$(ticks $server)
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
cpu=$(echo "scale=2; ($t1 - $t0) / $(getconf CLK_TCK)" | bc)
rss=$(($(peak_kb $server) / 1024))
errors=$(curl -fsS "http://127.0.0.1:$http/metrics" | awk '/^ferrolive_record_errors_total / { print $2 }')

missing=0 files=0 sent_total=0
for i in $(seq "$STREAMS"); do
    sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["frames_published"] or 0)' \
        "$OUTDIR/publishers/s$i.json" 2>/dev/null || echo 0)
    got=0
    for f in "$OUTDIR"/rec/live/s"$i"/*."$FORMAT"; do
        [[ -e $f ]] || continue
        files=$((files + 1))
        n=$(ffprobe -v error -count_packets -select_streams v \
            -show_entries stream=nb_read_packets -of csv=p=0 "$f")
        got=$((got + ${n:-0}))
    done
    sent_total=$((sent_total + sent))
    if [[ $FORMAT != none ]] && ((got != sent)); then
        echo "s$i: $sent video frames sent, $got in its files" >&2
        missing=$((missing + (sent > got ? sent - got : 0)))
    fi
done
written=$(du -sm "$OUTDIR/rec" | cut -f1)

printf '| streams | format | publishers failed | server CPU (s) | over (s) | peak RSS (MiB) | written (MiB) | files | video frames sent | missing | record errors |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
printf '| %s | %s | %s | %s | %.1f | %s | %s | %s | %s | %s | %s |\n' \
    "$STREAMS" "$FORMAT" "$failed" "$cpu" "$elapsed" "$rss" "$written" "$files" "$sent_total" "$missing" "${errors:-?}"
