// Drives the node console (/ and /play/APP/ROOM) in headless Chromium and reports, as JSON
// on stdout, how it went. Used by the end-to-end tests in tests/browser.rs.
//
//   node console.mjs --base http://HOST:PORT --stream APP/ROOM --screenshots DIR [--offline yes]
//       [--token TOKEN] [--protocols a,b,...] [--bare PROTOCOL]
//
// --protocols: the console's players to try in turn (default: all but WebRTC); --bare: the
// protocol of the bare page /play/APP/ROOM (default: LL-HLS, or HTTP-FLV when offline).
//
// The pages load hls.js and mpegts.js from a CDN; here those requests are answered with the
// copies npm installed (the same bytes, so the integrity hashes hold), and nothing goes to
// the internet. With --offline, CDN requests fail instead: the node must serve the
// libraries itself (--console-assets).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WEBRTC_ON_LOOPBACK, launchChromium, parseArgs } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = parseArgs();
const { base, stream, screenshots } = args;
const offline = args.offline === 'yes';
if (!base || !stream || !screenshots) {
    console.error('usage: node console.mjs --base URL --stream APP/ROOM --screenshots DIR [--offline yes]');
    process.exit(2);
}
fs.mkdirSync(screenshots, { recursive: true });
const cdnCopies = {
    'https://cdn.jsdelivr.net/npm/hls.js@1.7.4/dist/hls.min.js': 'node_modules/hls.js/dist/hls.min.js',
    'https://cdn.jsdelivr.net/npm/mpegts.js@1.8.2/dist/mpegts.js': 'node_modules/mpegts.js/dist/mpegts.js',
};
const protocols = (args.protocols ?? 'http-flv,ws-flv,hls,ll-hls,http-fmp4').split(',');
const bareProtocol = args.bare ?? (offline ? 'http-flv' : 'll-hls');

const browser = await launchChromium(WEBRTC_ON_LOOPBACK);
const report = { listedMs: null, protocols: {}, bare: null, console: [], cdnRequests: [] };

// How a player does over `seconds`: the playhead at a third and at the end, decoded
// frames, the latency the page shows, the errors it collected, the note it shows (why a
// stream plays badly over WebRTC here).
async function watch(tab, seconds) {
    const sample = () => tab.evaluate(() => {
        const video = document.getElementById('video');
        return {
            currentTime: video.currentTime,
            frames: video.getVideoPlaybackQuality().totalVideoFrames,
            latency: window.ferrolive ? window.ferrolive.latency : null,
            errors: window.ferrolive ? window.ferrolive.errors : ['no player'],
            latencyText: document.getElementById('latency').textContent,
            note: document.getElementById('note')?.hidden === false
                ? document.getElementById('note').textContent : '',
        };
    });
    await tab.waitForTimeout(seconds * 1000 / 3);
    const early = await sample();
    await tab.waitForTimeout(seconds * 2000 / 3);
    const late = await sample();
    return { early: early.currentTime, ...late };
}

try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.route('https://cdn.jsdelivr.net/**', route => {
        const url = route.request().url();
        report.cdnRequests.push(url);
        const copy = cdnCopies[url];
        if (offline || !copy) return route.abort();
        return route.fulfill({
            status: 200,
            headers: { 'content-type': 'text/javascript', 'access-control-allow-origin': '*' },
            body: fs.readFileSync(path.join(here, copy)),
        });
    });
    const tab = await context.newPage();
    tab.on('console', m => report.console.push(m.type() + ': ' + m.text()));
    tab.on('pageerror', e => report.console.push('pageerror: ' + e.message));

    if (!offline) {
        const opened = Date.now();
        await tab.goto(base + '/');
        await tab.waitForSelector(`tr[data-stream="${stream}"]`, { timeout: 10000 });
        report.listedMs = Date.now() - opened;
        await tab.screenshot({ path: path.join(screenshots, 'console.png') });
        await tab.click(`tr[data-stream="${stream}"]`);
        for (const protocol of protocols) {
            await tab.click(`#protocols button[data-protocol="${protocol}"]`);
            report.protocols[protocol] = await watch(tab, 7);
            await tab.screenshot({ path: path.join(screenshots, `console-${protocol}.png`) });
        }
        report.row = await tab.textContent(`tr[data-stream="${stream}"]`);
    }
    const token = args.token ? `&token=${args.token}` : '';
    await tab.goto(`${base}/play/${stream}?protocol=${bareProtocol}${token}`);
    report.bare = await watch(tab, 7);
    await tab.screenshot({ path: path.join(screenshots, offline ? 'play-offline.png' : 'play.png') });
    process.stdout.write(JSON.stringify(report) + '\n');
} finally {
    await browser.close();
}
