// Opens a recorded file in headless Chromium's own <video>, seeks into it and reports how
// it went, as JSON on stdout. Used by tests/browser.rs.
//
//   node seek.mjs --url URL --to FRACTION
//
// The report: the duration the browser found, where the seek landed, whether playback
// went on from there, and the element's errors.

import { launchChromium, parseArgs, servePage } from './common.mjs';

const args = parseArgs();
const url = args.url;
const to = Number(args.to ?? 0.6);
if (!url) {
    console.error('usage: node seek.mjs --url URL --to FRACTION');
    process.exit(2);
}

const page = `<!doctype html>
<html><body>
<video id="v" muted playsinline preload="metadata" src=${JSON.stringify(url)}></video>
<script>
const video = document.getElementById('v');
const report = { duration: null, seekTarget: null, seekedAt: null, playedTo: null, errors: [] };
window.report = report;
video.addEventListener('error', () => report.errors.push('video: ' + (video.error && video.error.message)));
video.addEventListener('loadedmetadata', async () => {
    report.duration = video.duration;
    report.seekTarget = video.duration * ${to};
    video.addEventListener('seeked', async () => {
        report.seekedAt = video.currentTime;
        try { await video.play(); } catch (e) { report.errors.push('play: ' + e); }
        setTimeout(() => { report.playedTo = video.currentTime; window.done = true; }, 1500);
    }, { once: true });
    video.currentTime = report.seekTarget;
});
</script>
</body></html>`;

const { server, url: pageUrl } = await servePage(page);

const browser = await launchChromium();
try {
    const tab = await browser.newPage();
    // Which byte ranges the browser asked for, to show that it seeks by range.
    const ranges = [];
    tab.on('request', async request => {
        if (request.url() !== url) return;
        const range = (await request.allHeaders())['range'];
        if (range) ranges.push(range);
    });
    await tab.goto(pageUrl);
    await tab.waitForFunction(() => window.done || window.report.errors.length > 0, null, { timeout: 20000 })
        .catch(() => {});
    const report = await tab.evaluate(() => window.report);
    report.ranges = ranges;
    process.stdout.write(JSON.stringify(report) + '\n');
} finally {
    await browser.close();
    server.close();
}
