#!/usr/bin/env bash
# The test command: installs what the end-to-end tests drive when it is missing (ffmpeg,
# redis-server, GStreamer, Chromium, the browser players' npm packages, OpenSSL's and
# libopus's headers for the build), then runs every unit, property and end-to-end test in
# the workspace.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v redis-server >/dev/null || missing+=(redis-server)
# GStreamer publishes like OBS's and many encoders' muxers do (tests/interop.rs), and
# plays and publishes RTSP (tests/rtsp.rs).
gst_ok() {
    command -v gst-launch-1.0 >/dev/null &&
        for element in rtmp2sink flvmux x264enc avenc_aac rtspsrc rtspclientsink avdec_h264; do
            gst-inspect-1.0 "$element" >/dev/null 2>&1 || return 1
        done
}
gst_ok || missing+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# nginx-rtmp: a peer the relays forward to and pull from (tests/relay.rs).
command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] ||
    missing+=(nginx libnginx-mod-rtmp)
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
# nghttp (nghttp2's client): HTTP/2 cleartext (h2c) on the player port (tests/llhls.rs).
command -v nghttp >/dev/null || missing+=(nghttp2-client)
# curl: HTTPS with a test CA, HTTP/2 by ALPN (tests/tls.rs).
command -v curl >/dev/null || missing+=(curl)
# WebRTC's DTLS and SRTP (str0m's OpenSSL backend) link the system's OpenSSL.
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
# AAC to Opus and back for WebRTC (the audio crate) links the system's libopus.
pkg-config --exists opus 2>/dev/null || missing+=(libopus-dev)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The browser players (hls.js, mpegts.js) and Playwright, pinned by the lock file.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

exec cargo test --workspace --locked "$@"
