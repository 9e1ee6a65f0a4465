// Glass to glass in headless Chromium: plays a stream whose pictures carry the wall-clock
// time they were captured at (the barcode of glass-barcode.mjs, drawn by ffmpeg before
// encoding; see glass.sh), and for every picture the page presents, reads the time back
// and takes it from the page's own clock. One JSON report on stdout.
//
//   node bench/glass.mjs --url http://NODE/APP/ROOM/whep --seconds 30 [--warmup 5]
//   node bench/glass.mjs --flv http://NODE/APP/ROOM.flv --seconds 30     (mpegts.js)
//
// WebRTC: the page posts a receive-only offer (WHEP) and shows the track in a <video>, as
// tests/browser/whep.mjs does. HTTP-FLV: mpegts.js on the same <video>, its live latency
// chasing on, for comparison. Per presented picture (requestVideoFrameCallback), the strip
// is drawn into a canvas, read, and `Date.now() - drawn` is one sample; pictures in the
// first --warmup seconds after the first one are left out (a new viewer starts with the
// GOP cache's older pictures, which say nothing of the live path).
//
// Publisher and browser share the machine's clock, so the difference is the whole path:
// the filter to the encoder, x264, RTMP, the node (and the edge), WebRTC or FLV, Chromium's
// jitter buffer, decoder and compositor, up to the frame callback, which runs as the
// picture is handed to the compositor.
//
// Report: samples, p50/p90/p99/min/max (ms), pictures presented, pictures whose strip did
// not read (misread), time to the first picture, the page's errors.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
    launchChromium, parseArgs, servePage, tabWithConsole, WEBRTC_ON_LOOPBACK,
} from '../tests/browser/common.mjs';
import { readBarcode, age, BLOCK, BLOCKS } from './glass-barcode.mjs';

const args = parseArgs();
const whep = args.url;
const flv = args.flv;
const seconds = Number(args.seconds ?? 30);
const warmup = Number(args.warmup ?? 5);
if (!whep === !flv) {
    console.error('usage: node glass.mjs (--url WHEP_URL | --flv FLV_URL) [--seconds 30] [--warmup 5]');
    process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const scripts = {
    '/mpegts.js': path.join(here, '../tests/browser/node_modules/mpegts.js/dist/mpegts.js'),
};

const page = `<!doctype html>
<html><body>
${flv ? '<script src="/mpegts.js"></script>' : ''}
<video id="v" muted playsinline autoplay></video>
<script>
const readBarcode = ${readBarcode.toString()};
const age = ${age.toString()};
const WRAP = 2 ** 24;
const video = document.getElementById('v');
const canvas = document.createElement('canvas');
canvas.width = ${BLOCKS * BLOCK};
canvas.height = ${BLOCK};
const context = canvas.getContext('2d', { willReadFrequently: true });
const report = { samples: [], presented: 0, misread: 0, firstFrameMs: null, errors: [] };
window.report = report;
const t0 = performance.now();
let first = null;
const onFrame = () => {
    const now = Date.now();
    report.presented += 1;
    if (first === null) {
        first = now;
        report.firstFrameMs = Math.round(performance.now() - t0);
    }
    // The strip at the picture's own scale: the top-left corner of the decoded picture.
    context.drawImage(video, 0, 0, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
    const drawn = readBarcode(context.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width);
    if (drawn === null) report.misread += 1;
    else if (now - first >= ${warmup * 1000}) report.samples.push(age(drawn, now));
    video.requestVideoFrameCallback(onFrame);
};
video.requestVideoFrameCallback(onFrame);
async function playWhep(url) {
    const pc = new RTCPeerConnection();
    window.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const stream = new MediaStream();
    pc.ontrack = event => {
        stream.addTrack(event.track);
        if (video.srcObject !== stream) {
            video.srcObject = stream;
            video.play().catch(e => report.errors.push('play: ' + e));
        }
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const answer = await fetch(url, {
        method: 'POST', headers: { 'content-type': 'application/sdp' }, body: offer.sdp,
    });
    const sdp = await answer.text();
    if (answer.status !== 201) { report.errors.push('answer ' + answer.status + ': ' + sdp); return; }
    await pc.setRemoteDescription({ type: 'answer', sdp });
}
function playFlv(url) {
    const player = mpegts.createPlayer({ type: 'flv', isLive: true, url }, {
        enableStashBuffer: false, liveBufferLatencyChasing: true,
    });
    player.on(mpegts.Events.ERROR, (type, detail) => report.errors.push(type + ': ' + detail));
    player.attachMediaElement(video);
    player.load();
    video.play().catch(e => report.errors.push('play: ' + e));
}
${whep ? `playWhep(${JSON.stringify(whep)}).catch(e => report.errors.push('whep: ' + e));`
        : `playFlv(${JSON.stringify(flv)});`}
</script>
</body></html>`;

const { server, url: pageUrl } = await servePage(page, scripts);
const browser = await launchChromium(WEBRTC_ON_LOOPBACK);
const console_ = [];
try {
    const tab = await tabWithConsole(browser, console_);
    await tab.goto(pageUrl);
    await tab.waitForTimeout((seconds + warmup) * 1000);
    const got = await tab.evaluate(() => window.report);
    const sorted = [...got.samples].sort((a, b) => a - b);
    const q = p => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
    const report = {
        url: whep ?? flv,
        protocol: whep ? 'webrtc' : 'http-flv',
        samples: sorted.length,
        p50_ms: q(0.5), p90_ms: q(0.9), p99_ms: q(0.99),
        min_ms: sorted[0] ?? null, max_ms: sorted[sorted.length - 1] ?? null,
        presented: got.presented, misread: got.misread, first_frame_ms: got.firstFrameMs,
        errors: got.errors, console: console_.slice(0, 20),
    };
    process.stdout.write(JSON.stringify(report) + '\n');
} finally {
    await browser.close();
    server.close();
}
