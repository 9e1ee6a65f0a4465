// Plays one stream over WebRTC (WHEP) in headless Chromium and reports how it went, as
// JSON on stdout. Used by the end-to-end tests in tests/webrtc.rs.
//
//   node whep.mjs --url http://NODE/APP/ROOM/whep --seconds N [--leave delete|vanish]
//                 [--sessions K]
//
// The page (served by this script from 127.0.0.1, so the offer is a cross-origin POST with
// its CORS preflight, as from any site) posts a receive-only offer, sets the answer, shows
// the track in a <video> and counts the pictures it presents. At the end it DELETEs the
// session's resource (`--leave delete`, the default), or vanishes: the browser closes
// without a word to the server, which must notice the silence by itself.
//
// The report: the answer's status and Location, when the first picture was presented
// (ms after the POST), pictures presented (requestVideoFrameCallback) and decoded
// (getVideoPlaybackQuality, and the receiver's framesDecoded), the receiver's codec, losses,
// NACKs, PLIs and freezes (`video`), the picture's size, the audio received (packets, samples,
// codec) and heard (`heard`: the loudest RMS and its strongest frequency, through
// WebAudio), the connection's last state, the DELETE's status, errors and the page's
// console. With `--sessions K`, K-1 more sessions of the same stream
// play in the same page (no <video>), each reported under `others` with the frames and
// audio samples it decoded.

import { WEBRTC_ON_LOOPBACK, launchChromium, parseArgs, servePage, tabWithConsole } from './common.mjs';

const args = parseArgs();
const url = args.url;
const seconds = Number(args.seconds ?? 10);
const leave = args.leave ?? 'delete';
const sessions = Number(args.sessions ?? 1);
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
    connectionStates: [], errors: [], heard: { loudestRms: 0, peakHz: null },
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
        if (event.track.kind === 'audio') listen(event.track);
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
// What the sound is, through WebAudio (the receiver's audioLevel stays 0 in a headless
// browser whose element is muted): the loudest RMS over 100 ms windows, and the
// frequency of the strongest bin when it was loudest.
function listen(track) {
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 8192;
    context.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const wave = new Float32Array(analyser.fftSize);
    const spectrum = new Float32Array(analyser.frequencyBinCount);
    setInterval(() => {
        analyser.getFloatTimeDomainData(wave);
        const rms = Math.sqrt(wave.reduce((sum, v) => sum + v * v, 0) / wave.length);
        if (rms <= report.heard.loudestRms) return;
        report.heard.loudestRms = rms;
        analyser.getFloatFrequencyData(spectrum);
        let peak = 0;
        spectrum.forEach((db, bin) => { if (db > spectrum[peak]) peak = bin; });
        report.heard.peakHz = Math.round(peak * context.sampleRate / analyser.fftSize);
    }, 100);
}
play().catch(e => report.errors.push('whep: ' + e));
// More sessions of the same stream, each with its own connection.
window.others = [];
async function playAnother() {
    const pc = new RTCPeerConnection();
    const other = { pc, location: null };
    window.others.push(other);
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const answer = await fetch(${JSON.stringify(url)}, {
        method: 'POST', headers: { 'content-type': 'application/sdp' }, body: offer.sdp,
    });
    other.location = answer.headers.get('location');
    const sdp = await answer.text();
    if (answer.status !== 201) { report.errors.push('another answer: ' + sdp); return; }
    await pc.setRemoteDescription({ type: 'answer', sdp });
}
for (let i = 1; i < ${sessions}; i++) playAnother().catch(e => report.errors.push('another: ' + e));
window.stop = async () => {
    if (!report.location) return null;
    const resource = new URL(report.location, ${JSON.stringify(url)});
    const response = await fetch(resource, { method: 'DELETE' });
    window.pc.close();
    for (const other of window.others) {
        if (other.location) await fetch(new URL(other.location, ${JSON.stringify(url)}), { method: 'DELETE' });
        other.pc.close();
    }
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
        // What one connection received and decoded, from its inbound-rtp stats.
        const received = async pc => {
            const got = {
                framesDecoded: null, pliCount: 0,
                audio: { packetsReceived: 0, samplesReceived: 0, audioLevel: 0, totalAudioEnergy: 0, codec: null },
            };
            const stats = pc ? await pc.getStats() : new Map();
            stats.forEach(s => {
                if (s.type !== 'inbound-rtp') return;
                if (s.kind === 'video') {
                    got.framesDecoded = s.framesDecoded;
                    got.pliCount = s.pliCount;
                    got.video = {
                        packetsLost: s.packetsLost, nackCount: s.nackCount, pliCount: s.pliCount,
                        freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
                        keyFramesDecoded: s.keyFramesDecoded,
                        codec: (s.codecId && stats.get(s.codecId)?.mimeType) ?? null,
                    };
                }
                if (s.kind === 'audio') {
                    got.audio.packetsReceived = s.packetsReceived;
                    got.audio.samplesReceived = s.totalSamplesReceived;
                    got.audio.audioLevel = s.audioLevel ?? 0;
                    got.audio.totalAudioEnergy = s.totalAudioEnergy ?? 0;
                    const codec = s.codecId && stats.get(s.codecId);
                    got.audio.codec = codec ? codec.mimeType : null;
                }
            });
            return got;
        };
        const { framesDecoded, pliCount, video: receiver, audio } = await received(window.pc);
        const others = [];
        for (const other of window.others) {
            const got = await received(other.pc);
            others.push({ framesDecoded: got.framesDecoded, audioSamples: got.audio.samplesReceived });
        }
        const video = document.getElementById('v');
        return {
            ...window.report,
            decodedFrames: quality.totalVideoFrames,
            droppedFrames: quality.droppedVideoFrames,
            framesDecoded,
            pliCount,
            video: receiver,
            audio,
            others,
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
