// Plays one stream in headless Chromium with a real browser player and reports how it went,
// as JSON on stdout. Used by the end-to-end tests in tests/browser.rs.
//
//   node play.mjs --player hlsjs|hlsjs-segments|mpegts|native --url URL --seconds N
//
// hlsjs: hls.js on the HLS playlist (low-latency mode on, as hls.js defaults: it uses
// LL-HLS parts where the playlist has them); hlsjs-segments: hls.js in whole segments
// (low-latency mode off); mpegts: mpegts.js on HTTP-FLV (or WebSocket-FLV, ws://); native: Chromium's own
// HLS player (<video src=playlist>). The page is served from a local server of this script,
// with the players from node_modules (nothing is fetched from the internet).
//
// The report: whether playback started and when; stalls (hls.js bufferStalledError, the
// video element's `waiting`); the longest freeze (the playhead not moving while playing,
// sampled every 50 ms); how far behind live hls.js plays at the end, by its own estimate
// (`latency`) and, where the playlist has program dates, by the wall clock (`dateLatency`:
// now minus the date of the picture shown); decoded and dropped frames;
// the player's warnings and errors and the page's console.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium, parseArgs, servePage, tabWithConsole } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = parseArgs();
const player = args.player;
const url = args.url;
const seconds = Number(args.seconds ?? 10);
if (!['hlsjs', 'hlsjs-segments', 'mpegts', 'native'].includes(player) || !url) {
    console.error('usage: node play.mjs --player hlsjs|hlsjs-segments|mpegts|native --url URL --seconds N');
    process.exit(2);
}

const scripts = {
    '/hls.js': path.join(here, 'node_modules/hls.js/dist/hls.js'),
    '/mpegts.js': path.join(here, 'node_modules/mpegts.js/dist/mpegts.js'),
};

// The page: attaches the player, then samples the playhead.
const page = `<!doctype html>
<html><body>
<video id="v" muted playsinline autoplay></video>
<script src="/hls.js"></script>
<script src="/mpegts.js"></script>
<script>
const video = document.getElementById('v');
const report = {
    started: false, startupMs: null, stalls: 0, waitingEvents: 0, maxFreezeMs: 0,
    latencyAtStart: null, bufferAheadAtStart: null, warnings: [], errors: [],
};
window.report = report;
const t0 = performance.now();
const url = ${JSON.stringify(url)};
const player = ${JSON.stringify(player)};
if (player.startsWith('hlsjs')) {
    const hls = new Hls({ lowLatencyMode: player === 'hlsjs' });
    hls.on(Hls.Events.ERROR, (_, data) => {
        if (data.details === 'bufferStalledError') report.stalls += 1;
        else report.errors.push(data.details + (data.fatal ? ' (fatal)' : ''));
    });
    window.hls = hls;
    hls.loadSource(url);
    hls.attachMedia(video);
} else if (player === 'mpegts') {
    mpegts.LoggingControl.addLogListener((level, text) => {
        if (level === 'warn') report.warnings.push(text);
        if (level === 'error') report.errors.push(text);
    });
    const p = mpegts.createPlayer({ type: 'flv', isLive: true, url });
    p.on(mpegts.Events.ERROR, (type, detail) => report.errors.push(type + ': ' + detail));
    p.attachMediaElement(video);
    p.load();
} else {
    video.src = url;
}
video.addEventListener('error', () => report.errors.push('video: ' + (video.error && video.error.message)));
video.addEventListener('waiting', () => {
    if (!report.started) return;
    report.waitingEvents += 1;
    const b = video.buffered;
    const ranges = [];
    for (let i = 0; i < b.length; i++) ranges.push(b.start(i).toFixed(3) + '-' + b.end(i).toFixed(3));
    report.waitingAt = (report.waitingAt || []).concat([video.currentTime.toFixed(3) + ' buffered ' + ranges.join(',')]);
});
video.play().catch(e => report.errors.push('play: ' + e));
let last = { time: -1, at: 0 };
setInterval(() => {
    const now = performance.now();
    if (!report.started && video.currentTime > 0) {
        report.started = true;
        report.startupMs = Math.round(now - t0);
        const b = video.buffered;
        report.bufferAheadAtStart = b.length ? b.end(b.length - 1) - video.currentTime : 0;
        if (window.hls) report.latencyAtStart = window.hls.latency;
    }
    if (!report.started || video.paused) { last = { time: video.currentTime, at: now }; return; }
    if (video.currentTime !== last.time) {
        last = { time: video.currentTime, at: now };
    } else {
        report.maxFreezeMs = Math.max(report.maxFreezeMs, Math.round(now - last.at));
    }
}, 50);
</script>
</body></html>`;

const { server, url: pageUrl } = await servePage(page, scripts);

const browser = await launchChromium();
const console_ = [];
try {
    const tab = await tabWithConsole(browser, console_);
    await tab.goto(pageUrl);
    await tab.waitForTimeout(seconds * 1000);
    const report = await tab.evaluate(() => {
        const quality = document.getElementById('v').getVideoPlaybackQuality();
        return {
            ...window.report,
            decodedFrames: quality.totalVideoFrames,
            droppedFrames: quality.droppedVideoFrames,
            currentTime: document.getElementById('v').currentTime,
            // hls.js: how far behind the live edge playback is now (seconds).
            latency: window.hls ? window.hls.latency : null,
            dateLatency: window.hls && window.hls.playingDate
                ? (Date.now() - window.hls.playingDate.getTime()) / 1000 : null,
            lowLatencyPlaylist: !!(window.hls && window.hls.levels.length
                && window.hls.levels[0].details && window.hls.levels[0].details.partList),
        };
    });
    report.console = console_;
    process.stdout.write(JSON.stringify(report) + '\n');
} finally {
    await browser.close();
    server.close();
}
