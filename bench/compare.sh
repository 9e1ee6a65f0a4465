#!/usr/bin/env bash
# bench/compare.sh: one scenario against ferrolive and nginx-rtmp in the same run.
#
# For every player count N, starts each server fresh, has `ferrolive bench` publish a
# 720p30 H.264+AAC file (~2.7 Mbit/s, 2 s GOP) and play it back with N players, and
# measures the server's CPU time (utime+stime of all its processes, from /proc) over the
# bench and its peak RSS (VmHWM). Prints a markdown table, also saved as OUTDIR/results.md.
#
# Run `bench/compare.sh --help` for options; see bench/README.md for how to read the table.

set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]

Options (each also settable through the environment variable in brackets):
  --ferrolive PATH    ferrolive binary                [FERROLIVE, default: target/release/ferrolive]
  --players "LIST"    player counts                   [PLAYERS, default: "250 500 1000 2000"]
  --protocols "LIST"  player protocols: rtmp, http-flv, ws-flv, http-ts, hls, ll-hls, rtsp,
                      webrtc  [PROTOCOLS, default: "rtmp http-flv"]
                      (all but rtmp run against ferrolive only: nginx-rtmp serves none;
                      rtsp plays RTP interleaved over TCP from ferrolive's --rtsp-addr;
                      webrtc: WHEP viewers, DTLS-SRTP over ferrolive's --webrtc-udp-addr)
  --servers "LIST"    nginx and/or ferrolive          [SERVERS, default: "nginx ferrolive"]
  --duration SECS     measurement per run             [DURATION, default: 20]
  --out DIR           output directory                [OUTDIR, default: a new mktemp dir]
  --source FILE       FLV to publish instead of the generated test stream [SOURCE]
  --cache-dir DIR     where the generated stream is kept [CACHE_DIR, default: ~/.cache/ferrolive-bench]
  --ramp N            players started per second      [RAMP, default: 200]
  --threads N         bench runtime threads           [BENCH_THREADS, default: 1]
  --floor             also measure the write floor at each N (see bench/README.md)
                      [FLOOR=1; needs: cargo build --release -p bench --example write_floor]
  --install           apt-get install nginx and libnginx-mod-rtmp if missing (root only)
  -h, --help          this text

Other environment: NGINX (nginx binary, default: nginx), RTMP_MODULE (default:
/usr/lib/nginx/modules/ngx_rtmp_module.so), FERROLIVE_LOG (ferrolive --log, default: info),
FERROLIVE_ARGS (more ferrolive flags, e.g. "--merge-window-ms 0"),
SETTLE (seconds of idle between runs, default: 2).

Example (small, quick): PLAYERS="50 100" DURATION=8 bench/compare.sh
EOF
}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

FERROLIVE=${FERROLIVE:-$REPO_ROOT/target/release/ferrolive}
PLAYERS=${PLAYERS:-"250 500 1000 2000"}
PROTOCOLS=${PROTOCOLS:-"rtmp http-flv"}
SERVERS=${SERVERS:-"nginx ferrolive"}
DURATION=${DURATION:-20}
OUTDIR=${OUTDIR:-}
SOURCE=${SOURCE:-}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrolive-bench}
RAMP=${RAMP:-200}
BENCH_THREADS=${BENCH_THREADS:-1}
NGINX=${NGINX:-nginx}
RTMP_MODULE=${RTMP_MODULE:-/usr/lib/nginx/modules/ngx_rtmp_module.so}
FERROLIVE_LOG=${FERROLIVE_LOG:-info}
SETTLE=${SETTLE:-2}
FLOOR=${FLOOR:-0}
WRITE_FLOOR=${WRITE_FLOOR:-$REPO_ROOT/target/release/examples/write_floor}
INSTALL=0

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }

while (($#)); do
    case $1 in
        --ferrolive) FERROLIVE=${2:?}; shift ;;
        --players) PLAYERS=${2:?}; shift ;;
        --protocols) PROTOCOLS=${2:?}; shift ;;
        --servers) SERVERS=${2:?}; shift ;;
        --duration) DURATION=${2:?}; shift ;;
        --out) OUTDIR=${2:?}; shift ;;
        --source) SOURCE=${2:?}; shift ;;
        --cache-dir) CACHE_DIR=${2:?}; shift ;;
        --ramp) RAMP=${2:?}; shift ;;
        --threads) BENCH_THREADS=${2:?}; shift ;;
        --floor) FLOOR=1 ;;
        --install) INSTALL=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

for n in $PLAYERS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "player count is not a positive integer: $n"
done
for p in $PROTOCOLS; do
    [[ $p =~ ^(rtmp|http-flv|ws-flv|http-ts|hls|ll-hls|rtsp|webrtc)$ ]] ||
        die "unknown protocol: $p (rtmp, http-flv, ws-flv, http-ts, hls, ll-hls, rtsp, webrtc)"
done
for s in $SERVERS; do
    [[ $s == nginx || $s == ferrolive ]] || die "unknown server: $s (nginx, ferrolive)"
done
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--duration is not a number: $DURATION"
has_server() { [[ " $SERVERS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- prerequisites

command -v python3 >/dev/null || die "python3 is needed (sudo apt-get install -y python3)"
[[ -x $FERROLIVE ]] || die "no ferrolive binary at $FERROLIVE
  build it first: (cd $REPO_ROOT && cargo build --release), or pass --ferrolive PATH"

if ((FLOOR)); then
    [[ -x $WRITE_FLOOR ]] || die "no write_floor at $WRITE_FLOOR
  build it first: (cd $REPO_ROOT && cargo build --release -p bench --example write_floor)"
fi

if has_server nginx; then
    if ! command -v "$NGINX" >/dev/null || [[ ! -f $RTMP_MODULE ]]; then
        if ((INSTALL)) && ((EUID == 0)); then
            log "installing nginx and libnginx-mod-rtmp"
            apt-get update
            DEBIAN_FRONTEND=noninteractive apt-get install -y nginx libnginx-mod-rtmp
        else
            echo "compare.sh: nginx with the RTMP module is missing. Install it with" >&2
            echo "  sudo apt-get install -y nginx libnginx-mod-rtmp" >&2
            echo "or run this script as root with --install." >&2
            exit 1
        fi
    fi
    [[ -f $RTMP_MODULE ]] || die "no RTMP module at $RTMP_MODULE (set RTMP_MODULE)"
fi

# Every player is a socket on the bench side and on the server side; the default 1024 is
# far too low for 2000 players. Take 65536 or as much as the hard limit allows.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || ((hard >= 65536)); then
    ulimit -n 65536
else
    ulimit -n "$hard"
fi
NOFILE=$(ulimit -n)
max_n=0
for n in $PLAYERS; do if ((n > max_n)); then max_n=$n; fi; done
((NOFILE > max_n + 256)) || die "open files limit $NOFILE is too low for $max_n players"

CLK_TCK=$(getconf CLK_TCK)

if [[ -z $OUTDIR ]]; then
    OUTDIR=$(mktemp -d "${TMPDIR:-/tmp}/ferrolive-compare.XXXXXX")
fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

# ---------------------------------------------------------------- /proc helpers

# The process and all its descendants (nginx: master + workers).
proc_tree() {
    local child
    echo "$1"
    for child in $(pgrep -P "$1" || true); do
        proc_tree "$child"
    done
}

# utime+stime in clock ticks, summed over the tree. Fields 14 and 15 of /proc/PID/stat,
# counted after the ")" that closes the command name (which may contain spaces). A
# process's stat already includes all of its threads.
tree_ticks() {
    local pid stat total=0
    local -a f
    for pid in $(proc_tree "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a f <<<"${stat##*") "}"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# VmHWM (peak resident set, kB) summed over the tree. Pages shared between nginx's master
# and worker (forked) count twice, so this slightly overstates nginx.
tree_hwm_kb() {
    local pid kb total=0
    for pid in $(proc_tree "$1"); do
        kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# Free TCP ports on loopback, all distinct (the sockets stay open until every port is
# picked). Fixed ports collide on a shared machine.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# A free UDP port on loopback (ferrolive's WebRTC socket).
free_udp_port() {
    python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- servers

SERVER_PID=
BENCH_PID=
PARTIAL=

all_open() {
    local port
    for port; do port_open "$port" || return 1; done
}

# Waits until every given port accepts connections and the server is still alive a moment
# later (ferrolive opens its RTMP port before the control API, which can still fail).
wait_ready() {
    local name=$1 dir=$2
    shift 2
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        if all_open "$@"; then
            sleep 0.3
            kill -0 "$SERVER_PID" 2>/dev/null && return 0
            break
        fi
        sleep 0.1
    done
    echo "compare.sh: $name did not come up; its logs in $dir:" >&2
    tail -n 20 "$dir"/*.log >&2 || true
    return 1
}

# Sets SERVER_PID, PUBLISH_URL and the PLAY_* URLs.
start_ferrolive() {
    local dir=$1 rtmp http api rtsp udp
    read -r rtmp http api rtsp <<<"$(free_ports 4)"
    udp=$(free_udp_port)
    mkdir -p "$dir/data"
    local extra
    read -r -a extra <<<"${FERROLIVE_ARGS:-}"
    "$FERROLIVE" standalone --rtmp-noauth \
        --rtmp-addr "127.0.0.1:$rtmp" --http-addr "127.0.0.1:$http" \
        --api-addr "127.0.0.1:$api" --rtsp-addr "127.0.0.1:$rtsp" \
        --webrtc-udp-addr "127.0.0.1:$udp" \
        --data-dir "$dir/data" --log "$FERROLIVE_LOG" \
        "${extra[@]}" >"$dir/server.log" 2>&1 </dev/null &
    SERVER_PID=$!
    PUBLISH_URL=rtmp://127.0.0.1:$rtmp/live/bench
    PLAY_RTMP=$PUBLISH_URL
    PLAY_FLV=http://127.0.0.1:$http/live/bench.flv
    PLAY_WS=ws://127.0.0.1:$http/live/bench.flv
    PLAY_TS=http://127.0.0.1:$http/live/bench.ts
    PLAY_HLS=http://127.0.0.1:$http/live/bench.m3u8
    PLAY_LLHLS=http://127.0.0.1:$http/live/bench/index.m3u8
    PLAY_RTSP=rtsp://127.0.0.1:$rtsp/live/bench
    PLAY_WHEP=http://127.0.0.1:$http/live/bench/whep
    wait_ready ferrolive "$dir" "$rtmp" "$http" "$api" "$rtsp"
}

start_nginx() {
    local dir=$1 port
    port=$(free_ports 1)
    # One worker: nginx-rtmp's live module only shares a stream between workers with
    # rtmp_auto_push, so one worker is how nginx-rtmp is normally run for this.
    # The access log goes to the run dir, not the distribution's /var/log/nginx.
    cat >"$dir/nginx.conf" <<EOF
load_module $RTMP_MODULE;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 8192;
}
rtmp {
    access_log $dir/access.log;
    server {
        listen 127.0.0.1:$port;
        chunk_size 4096;
        application live {
            live on;
        }
    }
}
EOF
    # -e: nginx opens its built-in error log before reading the config; point it here too.
    "$NGINX" -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf" \
        >"$dir/server.log" 2>&1 </dev/null &
    SERVER_PID=$!
    PUBLISH_URL=rtmp://127.0.0.1:$port/live/bench
    PLAY_RTMP=$PUBLISH_URL
    PLAY_FLV=
    wait_ready nginx "$dir" "$port"
}

# TERM, then KILL whatever of the tree is left after 10 s (a KILLed nginx master would
# leave its worker behind, so the tree is listed first).
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    local pids
    pids=$(proc_tree "$SERVER_PID")
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086 # word splitting of the pid list is intended
    kill -KILL $pids 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cleanup() {
    if [[ -n $BENCH_PID ]]; then
        # The subshell and the bench under it (which ignores SIGINT as a background job).
        # shellcheck disable=SC2046 # word splitting of the pid list is intended
        kill -TERM $(proc_tree "$BENCH_PID") 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_server
    if [[ -n $PARTIAL ]]; then rm -f "$PARTIAL"; fi
}
trap cleanup EXIT
# Background jobs of a script ignore SIGINT, so Ctrl-C must reach the servers through
# the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- source stream

# A real x264 stream rather than the bench's synthetic one: the servers then parse and
# forward the same NAL/AAC structure a broadcaster would send. Generated once and cached,
# since encoding 60 s of 720p takes a while on a small machine.
if [[ -n $SOURCE ]]; then
    [[ -s $SOURCE ]] || die "no such source file: $SOURCE"
    SRC=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
else
    SRC=$CACHE_DIR/testsrc2-720p30-h264-2500k-gop60-aac128k-60s.flv
    if [[ ! -s $SRC ]]; then
        command -v ffmpeg >/dev/null || die "ffmpeg is needed to generate the source stream
  (sudo apt-get install -y ffmpeg), or pass --source FILE.flv"
        mkdir -p "$CACHE_DIR"
        log "generating $SRC (60 s of 720p30, once)"
        PARTIAL=$SRC.partial.$$.flv
        # -sc_threshold 0 with -g/-keyint_min 60: a keyframe exactly every 2 s, as an
        # encoder configured for live streaming would send; nginx-rtmp's time to first
        # frame depends on it. maxrate/bufsize keep the rate near-constant.
        ffmpeg -hide_banner -loglevel error -nostdin -y \
            -f lavfi -i testsrc2=size=1280x720:rate=30 \
            -f lavfi -i sine=frequency=440:sample_rate=44100 \
            -t 60 \
            -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p \
            -b:v 2500k -maxrate 2500k -bufsize 5000k \
            -g 60 -keyint_min 60 -sc_threshold 0 -bf 0 \
            -c:a aac -b:a 128k -ar 44100 -ac 2 \
            -f flv "$PARTIAL"
        mv "$PARTIAL" "$SRC"
        PARTIAL=
    fi
fi
[[ $(head -c 3 "$SRC") == FLV ]] || die "not an FLV file: $SRC"
if command -v ffprobe >/dev/null; then
    rate=$(ffprobe -v error -show_entries format=bit_rate -of default=nw=1:nk=1 "$SRC" || true)
    log "source $SRC (${rate:-?} bit/s)"
fi

# ---------------------------------------------------------------- one run

RESULTS=$OUTDIR/results.tsv
printf 'server\tprotocol\tplayers\tstatus\tcpu_s\twall_s\trss_kb\tbench_cpu_s\tjson\n' >"$RESULTS"

run_one() {
    local server=$1 proto=$2 n=$3
    local dir=$OUTDIR/runs/$server-$proto-$n
    mkdir -p "$dir"
    log "$server $proto $n players (${DURATION} s) -> $dir"

    if ! "start_$server" "$dir"; then
        stop_server
        printf '%s\t%s\t%s\t%s\t\t\t\t\t\n' "$server" "$proto" "$n" "server did not start" >>"$RESULTS"
        return
    fi

    local -a args=(bench --publish "$PUBLISH_URL" --source "$SRC" --duration "$DURATION"
        --ramp-per-sec "$RAMP" --threads "$BENCH_THREADS" --json "$dir/bench.json")
    case $proto in
        rtmp) args+=(--rtmp "$n" --url-rtmp "$PLAY_RTMP") ;;
        http-flv) args+=(--flv "$n" --url-flv "$PLAY_FLV") ;;
        ws-flv) args+=(--ws "$n" --url-ws "$PLAY_WS") ;;
        http-ts) args+=(--ts "$n" --url-ts "$PLAY_TS") ;;
        hls) args+=(--hls "$n" --url-hls "$PLAY_HLS") ;;
        ll-hls) args+=(--llhls "$n" --url-llhls "$PLAY_LLHLS") ;;
        rtsp) args+=(--rtsp "$n" --url-rtsp "$PLAY_RTSP") ;;
        webrtc) args+=(--whep "$n" --url-whep "$PLAY_WHEP") ;;
    esac
    echo "$FERROLIVE ${args[*]}" >"$dir/bench.cmd"

    local pids_before pids_after t0 t1 w0 w1 status=ok rss
    pids_before=$(proc_tree "$SERVER_PID" | sort | tr '\n' ' ')
    echo "$pids_before" >"$dir/server.pids"
    t0=$(tree_ticks "$SERVER_PID")
    w0=$(date +%s.%N)
    # In the background so the INT/TERM traps can run (and stop it) at once; the bench's
    # own CPU comes from bash's `time`, to tell when the load generator was the bottleneck.
    (
        TIMEFORMAT='%3U %3S'
        time "$FERROLIVE" "${args[@]}" >"$dir/bench.txt" 2>"$dir/bench.log" </dev/null
    ) 2>"$dir/bench.time" &
    BENCH_PID=$!
    wait "$BENCH_PID" || status="bench failed (exit $?)"
    BENCH_PID=
    t1=$(tree_ticks "$SERVER_PID")
    w1=$(date +%s.%N)
    # Peak RSS now: the workers are still alive, and the players gone.
    rss=$(tree_hwm_kb "$SERVER_PID")
    pids_after=$(proc_tree "$SERVER_PID" | sort | tr '\n' ' ')
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        status="server died"
    elif [[ $pids_before != "$pids_after" ]]; then
        # A worker that died mid-run took its CPU time with it: the number is too low.
        status="server processes changed ($pids_before-> $pids_after)"
    fi
    stop_server

    local cpu wall bench_cpu
    cpu=$(python3 -c "print(f'{($t1 - $t0) / $CLK_TCK:.2f}')")
    wall=$(python3 -c "print(f'{$w1 - $w0:.2f}')")
    bench_cpu=$(awk 'NF == 2 { printf "%.2f", $1 + $2 }' "$dir/bench.time" 2>/dev/null || true)
    if [[ ! -s $dir/bench.json && $status == ok ]]; then
        status="no bench JSON"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$proto" "$n" "$status" \
        "$cpu" "$wall" "$rss" "$bench_cpu" "$dir/bench.json" >>"$RESULTS"
    if [[ $status == ok ]]; then
        log "  server CPU ${cpu} s over ${wall} s, peak RSS $((rss / 1024)) MiB, bench CPU ${bench_cpu} s"
    else
        log "  $status; see $dir"
        # The error itself, without a RUST_BACKTRACE backtrace after it.
        awk '/^Error/ { p = 1 } /^Stack backtrace/ { p = 0 } p' "$dir/bench.log" |
            head -n 8 >&2 || true
    fi
}

# The CPU the kernel alone needs to write the stream to N loopback sockets, one write per
# viewer every two pictures (a 40 ms merge window at 30 fps): 15 writes a second of a
# 2.67 Mbit/s stream's 22 KB.
run_floor() {
    local n=$1 dir=$OUTDIR/runs/floor-$n
    mkdir -p "$dir"
    log "write floor, $n viewers"
    local cpu=""
    if "$WRITE_FLOOR" "$n" 22000 15 "${DURATION%.*}" >"$dir/floor.log" 2>&1; then
        cpu=$(sed -n 's/.*writer CPU \([0-9.]*\) s.*/\1/p' "$dir/floor.log")
    fi
    local status=ok
    [[ -n $cpu ]] || status="write_floor failed"
    printf '%s\t%s\t%s\t%s\t%s\t\t\t\t\n' floor - "$n" "$status" "$cpu" >>"$RESULTS"
}

# ---------------------------------------------------------------- all runs

for n in $PLAYERS; do
    python3 -c "import sys; sys.exit(0 if $n / $RAMP < $DURATION else 1)" ||
        log "warning: $n players at --ramp $RAMP/s take longer than ${DURATION} s to start; some will not"
done

log "output in $OUTDIR (open files limit $NOFILE, $(nproc) CPUs)"
for n in $PLAYERS; do
    # nginx first at each N: it is the reference the relative CPU column divides by.
    for server in nginx ferrolive; do
        has_server "$server" || continue
        for proto in $PROTOCOLS; do
            [[ $server == nginx && $proto != rtmp ]] && continue
            run_one "$server" "$proto" "$n"
            sleep "$SETTLE"
        done
    done
    if ((FLOOR)); then
        run_floor "$n"
        sleep "$SETTLE"
    fi
done

# ---------------------------------------------------------------- table

python3 - "$RESULTS" "$OUTDIR/results.md" "$DURATION" "$BENCH_THREADS" "$SRC" <<'PY'
import csv, json, os, sys

results, out, duration, threads, src = sys.argv[1:6]
threads = int(threads)
rows = list(csv.DictReader(open(results), delimiter="\t"))

def num(v):
    return float(v) if v not in (None, "") else None

# The reference for the relative column: nginx-rtmp over RTMP at the same player count.
ref = {
    r["players"]: num(r["cpu_s"])
    for r in rows
    if r["server"] == "nginx" and r["protocol"] == "rtmp" and r["status"] == "ok"
}

def fmt(v, spec, unit=""):
    return "-" if v is None else format(v, spec) + unit

lines = [
    f"Each run: {duration} s, one publisher ({os.path.basename(src)}), "
    f"bench with {threads} thread(s), {os.cpu_count()} CPUs.",
    "",
    "| server | protocol | players | ok / failed | server CPU s | vs nginx-rtmp RTMP | "
    "peak RSS MiB | frames % | stalls | TTFF p99 ms | latency p99 ms | bench CPU % |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
]
notes = []
saturated = False
floor = False
for r in rows:
    name = {"nginx": "nginx-rtmp", "floor": "write floor"}.get(r["server"], r["server"])
    head = f"| {name} | {r['protocol']} | {r['players']} "
    if r["status"] != "ok":
        lines.append(head + f"| {r['status']} |" + " - |" * 8)
        continue
    if r["server"] == "floor":
        floor = True
        cpu, base = num(r["cpu_s"]), ref.get(r["players"])
        rel = f"{cpu / base:.2f}x" if base else "-"
        lines.append(head + f"| - | {cpu:.2f} | {rel} |" + " - |" * 6)
        continue
    rep = json.load(open(r["json"]))
    p = next((x for x in rep["protocols"] if x["protocol"] == r["protocol"]), rep["overall"])
    cpu, wall = num(r["cpu_s"]), num(r["wall_s"])
    base = ref.get(r["players"])
    rel = f"{cpu / base:.2f}x" if base else "-"
    bench_pct = None
    if num(r["bench_cpu_s"]) is not None and wall:
        bench_pct = 100 * num(r["bench_cpu_s"]) / wall
        saturated |= bench_pct >= 90 * threads
    ttff = (p.get("ttff_ms") or {}).get("p99_ms")
    lat = (p.get("latency_ms") or {}).get("p99_ms")
    lines.append(
        head
        + f"| {p['connected']} / {p['failed']} "
        + f"| {cpu:.2f} | {rel} "
        + f"| {int(r['rss_kb']) / 1024:.1f} "
        + f"| {fmt(p.get('frames_received_pct'), '.2f')} | {p['stalls']} "
        + f"| {fmt(ttff, '.1f')} | {fmt(lat, '.1f')} | {fmt(bench_pct, '.0f')} |"
    )
    if p.get("latency_ms") and r["protocol"] in ("hls", "ll-hls"):
        q = p["latency_ms"]
        notes.append(
            f"{name} {r['protocol']} {r['players']}: latency p50/p99/max "
            f"{q['p50_ms']:.0f}/{q['p99_ms']:.0f}/{q['max_ms']:.0f} ms"
        )
    if r["protocol"] == "ll-hls":
        spread = p.get("llhls_reload_spread_ms")
        spread = (
            f"{spread['p50_ms']:.1f}/{spread['p99_ms']:.1f}/{spread['max_ms']:.1f} ms "
            f"over {spread['samples']} answers" if spread else "-"
        )
        notes.append(
            f"{name} ll-hls {r['players']}: {p['llhls_parts']} parts delivered, "
            f"{p['llhls_parts_missing']} missing, {p['llhls_reload_timeouts']} reloads "
            f"answered 503; blocking reload answer spread p50/p99/max {spread}"
        )
    if r["protocol"] == "rtsp":
        q = p.get("latency_ms")
        latency = f"{q['p50_ms']:.1f}/{q['p99_ms']:.1f} ms" if q else "-"
        notes.append(
            f"{name} rtsp {r['players']}: {p['rtp_video_packets']} video and "
            f"{p['rtp_audio_packets']} audio RTP packets, {p['rtp_packets_lost']} missing "
            f"(gaps in sequence numbers); latency p50/p99 {latency}"
        )
    if r["protocol"] == "webrtc":
        notes.append(
            f"{name} webrtc {r['players']}: {p['whep_viewers_not_decoding']} of "
            f"{p['connected']} viewers not decoding ({p['whep_first_not_key']} without a "
            f"keyframe first, {p['whep_frames_not_contiguous']} frames after a gap); video "
            f"frames per viewer mean/min {p['frames_per_player_mean']}/"
            f"{p['frames_per_player_min']}; TTFF p50 {(p.get('ttff_ms') or {}).get('p50_ms')} ms; "
            f"{p['udp_receive_buffer_errors']} datagrams dropped for full UDP receive buffers"
        )
    if rep.get("publisher_error"):
        notes.append(f"{name} {r['protocol']} {r['players']}: publisher error: {rep['publisher_error']}")
    for err, count in p.get("errors", {}).items():
        notes.append(f"{name} {r['protocol']} {r['players']}: {count} players: {err}")

lines += [
    "",
    "Server CPU: utime+stime of all the server's processes from just before the bench "
    "starts to just after it ends. Peak RSS: VmHWM summed over those processes.",
]
if floor:
    lines.append(
        "Write floor: the CPU of a program that only writes 22 KB to each of N loopback "
        "sockets 15 times a second (one write per viewer every two pictures, what the "
        "default 40 ms merge window gives at 30 fps), measured for the writing thread "
        "alone, with every viewer connected throughout. A server that writes that often, "
        "copying each write into the socket, cannot use less."
    )
if saturated:
    lines.append(
        "**Warning:** the bench used about all of its threads' CPU in some runs: there the "
        "load generator, not the server, may limit the numbers (try --threads 2)."
    )
if notes:
    lines += ["", "Notes:"] + [f"- {n}" for n in notes]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text, end="")
PY
log "table saved to $OUTDIR/results.md; per-run logs and JSON under $OUTDIR/runs"
