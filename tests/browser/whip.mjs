// Publishes Chromium's fake camera and microphone over WebRTC (WHIP) and reports how it
// went, as JSON on stdout. Used by the end-to-end tests in tests/whip.rs.
//
//   node whip.mjs --url http://NODE/APP/KEY/whip --seconds N [--bearer KEY] [--leave delete|vanish]
//
// The page (served by this script from 127.0.0.1, so the offer is a cross-origin POST with
// its CORS preflight, as from any site) takes the fake devices (getUserMedia), offers them
// send-only with H.264 (packetization-mode 1) preferred, posts the offer (with
// `Authorization: Bearer KEY` when `--bearer` is given, as OBS sends its key), sets the
// answer and publishes for N seconds. Then it DELETEs the session's resource (`--leave
// delete`, the default), or vanishes: the browser closes without a word to the server.
//
// The report: the answer's status and Location, the camera's picture size, what the sender
// encoded (codec, frames, packets; the audio's packets), the connection's states, the
// DELETE's status, errors and the page's console.

import { launchChromium, parseArgs, servePage, tabWithConsole } from './common.mjs';

const args = parseArgs();
const url = args.url;
const seconds = Number(args.seconds ?? 10);
const leave = args.leave ?? 'delete';
const bearer = args.bearer ?? null;
if (!url) {
    console.error('usage: node whip.mjs --url http://NODE/APP/KEY/whip --seconds N [--bearer KEY]');
    process.exit(2);
}

const page = `<!doctype html>
<html><body>
<script>
const report = { status: null, location: null, connectionStates: [], errors: [] };
window.report = report;
async function publish() {
    const media = await navigator.mediaDevices.getUserMedia({
        video: { width: 640, height: 480, frameRate: 30 }, audio: true,
    });
    const settings = media.getVideoTracks()[0].getSettings();
    report.width = settings.width;
    report.height = settings.height;
    const pc = new RTCPeerConnection();
    window.pc = pc;
    pc.onconnectionstatechange = () => report.connectionStates.push(pc.connectionState);
    const video = pc.addTransceiver(media.getVideoTracks()[0], { direction: 'sendonly', streams: [media] });
    pc.addTransceiver(media.getAudioTracks()[0], { direction: 'sendonly', streams: [media] });
    // H.264 in packetization mode 1 first: what the server takes.
    const codecs = RTCRtpSender.getCapabilities('video').codecs;
    const h264 = codecs.filter(c => c.mimeType === 'video/H264'
        && (c.sdpFmtpLine ?? '').includes('packetization-mode=1'));
    report.h264Offered = h264.length;
    video.setCodecPreferences([...h264, ...codecs.filter(c => !h264.includes(c))]);
    // The camera's size on the wire, however busy the machine (the test checks it).
    const parameters = video.sender.getParameters();
    parameters.degradationPreference = 'maintain-resolution';
    await video.sender.setParameters(parameters).catch(e => report.errors.push('parameters: ' + e));
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const headers = { 'content-type': 'application/sdp' };
    if (${JSON.stringify(bearer)}) headers.authorization = 'Bearer ' + ${JSON.stringify(bearer)};
    // ICE-lite on the server: it needs none of our candidates, so no waiting for them.
    const answer = await fetch(${JSON.stringify(url)}, { method: 'POST', headers, body: offer.sdp });
    report.status = answer.status;
    report.location = answer.headers.get('location');
    const sdp = await answer.text();
    if (answer.status !== 201) { report.errors.push('answer: ' + sdp); return; }
    await pc.setRemoteDescription({ type: 'answer', sdp });
}
publish().catch(e => report.errors.push('whip: ' + e));
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

// The fake devices without a prompt; host candidates by address, not mDNS names, and
// loopback among them: the node under test answers on 127.0.0.1.
const browser = await launchChromium([
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
]);
const console_ = [];
try {
    const tab = await tabWithConsole(browser, console_);
    await tab.goto(pageUrl);
    await tab.waitForTimeout(seconds * 1000);
    const report = await tab.evaluate(async () => {
        const sent = { video: {}, audio: {} };
        const stats = window.pc ? await window.pc.getStats() : new Map();
        stats.forEach(s => {
            if (s.type !== 'outbound-rtp') return;
            const codec = s.codecId && stats.get(s.codecId);
            sent[s.kind] = {
                codec: codec ? codec.mimeType : null,
                packetsSent: s.packetsSent,
                framesEncoded: s.framesEncoded,
                keyFramesEncoded: s.keyFramesEncoded,
                pliCount: s.pliCount,
                nackCount: s.nackCount,
            };
        });
        return {
            ...window.report,
            sent,
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
