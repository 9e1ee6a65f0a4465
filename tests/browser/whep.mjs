// Plays one stream over WebRTC (WHEP) in headless Chromium and reports how it went, as
// JSON on stdout. Used by the end-to-end tests in tests/webrtc.rs.
//
//   node whep.mjs --url http://NODE/APP/ROOM/whep --seconds N [--leave delete|vanish]
//
// The page (served by this script from 127.0.0.1, so the offer is a cross-origin POST with
// its CORS preflight, as from any site) posts a receive-only offer, sets the answer, shows
// the track in a <video> and counts the pictures it presents. At the end it DELETEs the
// session's resource (`--leave delete`, the default), or vanishes: the browser closes
// without a word to the server, which must notice the silence by itself.
//
// The report: the answer's status and Location, when the first picture was presented
// (ms after the POST), pictures presented (requestVideoFrameCallback) and decoded
// (getVideoPlaybackQuality, and the receiver's framesDecoded), the receiver's losses, NACKs,
// PLIs and freezes, the picture's size, the audio
// received (packets, samples, codec), the connection's last state, the DELETE's status,
// errors and the page's console.

import { WEBRTC_ON_LOOPBACK, launchChromium, parseArgs, servePage, tabWithConsole } from './common.mjs';

const args = parseArgs();
const url = args.url;
const seconds = Number(args.seconds ?? 10);
const leave = args.leave ?? 'delete';
if (!url) {
    console.error('usage: node whep.mjs --url http://NODE/APP/ROOM/whep --seconds N');
    process.exit(2);
}

const page = `<!doctype html>
<html><body>
<video id="v" muted playsinline autoplay></video>
<script>
const video = document.getElementById('v');
const report = {
    status: null, location: null, firstFrameMs: null, presentedFrames: 0,
    connectionStates: [], errors: [],
};
window.report = report;
const t0 = performance.now();
const count = () => video.requestVideoFrameCallback(() => {
    if (report.firstFrameMs === null) report.firstFrameMs = Math.round(performance.now() - t0);
    report.presentedFrames += 1;
    count();
});
count();
async function play() {
    const pc = new RTCPeerConnection();
    window.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.onconnectionstatechange = () => report.connectionStates.push(pc.connectionState);
    // Both tracks in the element (muted: audio plays without a click), as a player would.
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
    // ICE-lite on the server: it needs none of our candidates, so no waiting for them.
    const answer = await fetch(${JSON.stringify(url)}, {
        method: 'POST', headers: { 'content-type': 'application/sdp' }, body: offer.sdp,
    });
    report.status = answer.status;
    report.location = answer.headers.get('location');
    const sdp = await answer.text();
    if (answer.status !== 201) { report.errors.push('answer: ' + sdp); return; }
    await pc.setRemoteDescription({ type: 'answer', sdp });
}
play().catch(e => report.errors.push('whep: ' + e));
window.stop = async () => {
    if (!report.location) return null;
    const resource = new URL(report.location, ${JSON.stringify(url)});
    const response = await fetch(resource, { method: 'DELETE' });
    window.pc.close();
    return response.status;
};
</script>
</body></html>`;

const { server, url: pageUrl } = await servePage(page);

const browser = await launchChromium(WEBRTC_ON_LOOPBACK);
const console_ = [];
try {
    const tab = await tabWithConsole(browser, console_);
    await tab.goto(pageUrl);
    await tab.waitForTimeout(seconds * 1000);
    const report = await tab.evaluate(async () => {
        const quality = document.getElementById('v').getVideoPlaybackQuality();
        let framesDecoded = null, receiver = null;
        const audio = { packetsReceived: 0, samplesReceived: 0, codec: null };
        const stats = window.pc ? await window.pc.getStats() : new Map();
        stats.forEach(s => {
            if (s.type !== 'inbound-rtp') return;
            if (s.kind === 'video') {
                framesDecoded = s.framesDecoded;
                receiver = {
                    packetsLost: s.packetsLost, nackCount: s.nackCount, pliCount: s.pliCount,
                    freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
                    keyFramesDecoded: s.keyFramesDecoded,
                };
            }
            if (s.kind === 'audio') {
                audio.packetsReceived = s.packetsReceived;
                audio.samplesReceived = s.totalSamplesReceived;
                const codec = s.codecId && stats.get(s.codecId);
                audio.codec = codec ? codec.mimeType : null;
            }
        });
        const video = document.getElementById('v');
        return {
            ...window.report,
            decodedFrames: quality.totalVideoFrames,
            droppedFrames: quality.droppedVideoFrames,
            framesDecoded,
            video: receiver,
            audio,
            width: video.videoWidth,
            height: video.videoHeight,
            connectionState: window.pc ? window.pc.connectionState : null,
        };
    });
    if (leave === 'delete') report.deleteStatus = await tab.evaluate(() => window.stop());
    report.console = console_;
    process.stdout.write(JSON.stringify(report) + '\n');
} finally {
    await browser.close();
    server.close();
}
