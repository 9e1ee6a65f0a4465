// The node's console and player (served at / and /play/APP/ROOM by every node). Plain
// JavaScript, no build step: the pages are compiled into the binary. hls.js and mpegts.js
// come from a pinned CDN copy with subresource integrity, or from the node itself when it
// runs with --console-assets.
'use strict';

const Console = (() => {
    const PROTOCOLS = [
        ['http-flv', 'HTTP-FLV'],
        ['ws-flv', 'WebSocket-FLV'],
        ['hls', 'HLS'],
        ['ll-hls', 'LL-HLS'],
        ['http-fmp4', 'HTTP-fMP4'],
        ['webrtc', 'WebRTC'],
    ];
    const VIEWER_PROTOCOLS = ['rtmp', 'http-flv', 'ws-flv', 'hls', 'http-ts', 'http-fmp4', 'rtsp', 'webrtc'];
    let rtmpPort = 1935;
    let current = null;

    const $ = id => document.getElementById(id);
    const el = (tag, props = {}, ...children) => {
        const e = Object.assign(document.createElement(tag), props);
        e.append(...children);
        return e;
    };

    // A node with a play secret wants ?token= on every play: the page passes on its own.
    const token = new URLSearchParams(location.search).get('token');
    const withToken = url => token ? `${url}?token=${encodeURIComponent(token)}` : url;

    function urls(stream) {
        const http = location.origin + '/' + stream;
        const ws = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/' + stream;
        const all = {
            'http-flv': http + '.flv',
            'ws-flv': ws + '.flv',
            'hls': http + '.m3u8',
            'll-hls': http + '/index.m3u8',
            'http-fmp4': http + '.mp4',
            'http-ts': http + '.ts',
            'webrtc': http + '/whep',
            'rtmp': `rtmp://${location.hostname}:${rtmpPort}/${stream}`,
        };
        for (const name of Object.keys(all)) all[name] = withToken(all[name]);
        return all;
    }

    function stop(video) {
        if (current) current.destroy();
        current = null;
        video.srcObject = null;
        video.removeAttribute('src');
        video.load();
    }

    // Play `stream` over `protocol` in `video`.
    function play(video, stream, protocol) {
        stop(video);
        const url = urls(stream)[protocol];
        window.ferrolive = { stream, protocol, url, latency: null, errors: [] };
        const failed = why => window.ferrolive.errors.push(why);
        if (protocol === 'http-flv' || protocol === 'ws-flv') {
            if (!window.mpegts || !mpegts.isSupported()) return failed('mpegts.js is not available');
            const player = mpegts.createPlayer({ type: 'flv', isLive: true, url },
                { enableStashBuffer: false, liveBufferLatencyChasing: true });
            player.on(mpegts.Events.ERROR, (type, detail) => failed(type + ': ' + detail));
            player.attachMediaElement(video);
            player.load();
            current = { destroy: () => player.destroy() };
        } else if (protocol === 'hls' || protocol === 'll-hls') {
            if (window.Hls && Hls.isSupported()) {
                const hls = new Hls({ lowLatencyMode: protocol === 'll-hls' });
                hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) failed(data.details); });
                hls.loadSource(url);
                hls.attachMedia(video);
                current = { hls, destroy: () => hls.destroy() };
            } else {
                // Safari plays HLS itself.
                video.src = url;
            }
        } else if (protocol === 'webrtc') {
            current = whep(video, url, failed);
            return;
        } else {
            // Fragmented MP4 as it arrives: the browser's own player takes it.
            video.src = url;
        }
        video.play().catch(() => {});
    }

    // WebRTC (WHEP): post a receive-only offer to `url`, take the answer, show the tracks.
    // The node is ICE-lite: it needs none of the browser's candidates, so the offer goes at
    // once. Leaving DELETEs the session, so the node stops sending at once.
    function whep(video, url, failed) {
        const pc = new RTCPeerConnection();
        pc.addTransceiver('video', { direction: 'recvonly' });
        pc.addTransceiver('audio', { direction: 'recvonly' });
        const tracks = new MediaStream();
        pc.ontrack = event => {
            tracks.addTrack(event.track);
            if (video.srcObject !== tracks) video.srcObject = tracks;
            video.play().catch(() => {});
        };
        pc.onconnectionstatechange = () => {
            if (pc.connectionState === 'failed') failed('WebRTC connection failed');
        };
        const session = { pc, resource: null, latency: null };
        (async () => {
            await pc.setLocalDescription(await pc.createOffer());
            const answer = await fetch(url, {
                method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription.sdp,
            });
            const sdp = await answer.text();
            if (answer.status !== 201) return failed(`WHEP ${answer.status}: ${sdp.trim()}`);
            session.resource = new URL(answer.headers.get('location'), url);
            await pc.setRemoteDescription({ type: 'answer', sdp });
        })().catch(e => failed('WHEP: ' + e));
        const seen = {};
        const poll = setInterval(async () => { session.latency = await rtcLatency(pc, seen); }, 250);
        session.destroy = () => {
            clearInterval(poll);
            if (session.resource) fetch(session.resource, { method: 'DELETE' }).catch(() => {});
            pc.close();
        };
        return session;
    }

    // How far behind a WebRTC picture is, as the browser knows it: half the round trip to
    // the node, the time pictures waited in the jitter buffer lately, and decoding.
    async function rtcLatency(pc, last) {
        let video = null, path = null;
        (await pc.getStats()).forEach(s => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') video = s;
            if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') path = s;
        });
        if (!video || !video.framesDecoded) return null;
        const emitted = video.jitterBufferEmittedCount - (last.emitted || 0);
        const waited = video.jitterBufferDelay - (last.waited || 0);
        Object.assign(last, { emitted: video.jitterBufferEmittedCount, waited: video.jitterBufferDelay });
        if (emitted > 0) last.jitter = waited / emitted;
        const network = path && path.currentRoundTripTime ? path.currentRoundTripTime / 2 : 0;
        const decoding = video.totalDecodeTime / video.framesDecoded;
        return ['from the node to the screen', network + (last.jitter || 0) + decoding];
    }

    // How far behind live the picture is: by the stream's program dates where the player
    // knows them (LL-HLS), by WebRTC's statistics, else by what has arrived and not been
    // shown yet.
    function latency(video) {
        if (current && current.pc) return current.latency;
        const hls = current && current.hls;
        if (hls && hls.playingDate) return ['behind the origin\'s clock', (Date.now() - hls.playingDate.getTime()) / 1000];
        if (hls && hls.latency) return ['behind the live edge', hls.latency];
        const b = video.buffered;
        if (!b.length || video.currentTime === 0) return null;
        return ['behind what arrived', Math.max(0, b.end(b.length - 1) - video.currentTime)];
    }

    function showLatency(video) {
        setInterval(() => {
            const l = latency(video);
            $('latency').textContent = l ? `${l[1].toFixed(2)} s ${l[0]}` : 'starting…';
            if (window.ferrolive) window.ferrolive.latency = l && l[1];
        }, 250);
    }

    function kbps(bits, ms) { return ms > 0 ? Math.round(bits / ms) : 0; }

    function duration(ms) {
        const s = Math.floor(ms / 1000);
        const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
        return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + (s % 60) + 's';
    }

    function viewers(byProtocol) {
        const parts = VIEWER_PROTOCOLS.filter(p => byProtocol[p]).map(p => `${byProtocol[p]} ${p}`);
        return parts.length ? parts.join(', ') : '0';
    }

    function copyable(list, name, value) {
        const button = el('button', { textContent: 'copy' });
        button.onclick = () => navigator.clipboard && navigator.clipboard.writeText(value);
        list.append(el('dt', { textContent: name }), el('dd', { textContent: value }), button);
    }

    // Whether this browser decodes `codec` (as /api/streams names it) over WebRTC; the node
    // passes HEVC and AV1 through as they are.
    function webrtcDecodes(codec) {
        const mime = { h264: 'video/H264', h265: 'video/H265', av1: 'video/AV1' }[codec];
        if (!codec || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return true;
        if (!mime) return false;
        const offered = RTCRtpReceiver.getCapabilities('video').codecs;
        return offered.some(c => c.mimeType.toLowerCase() === mime.toLowerCase());
    }

    // The list of live streams with a player for the one chosen.
    function index() {
        document.addEventListener('DOMContentLoaded', () => {
            const video = $('video');
            const wanted = new URLSearchParams(location.search);
            let chosen = wanted.get('stream');
            let protocol = wanted.get('protocol') || 'll-hls';
            const last = new Map();
            // The last /api/streams answer's entries, by stream.
            let live = new Map();
            for (const host of document.querySelectorAll('.host')) host.textContent = location.hostname + ':' + rtmpPort;
            showLatency(video);

            // WebRTC of a stream this browser cannot show well: say why.
            function note() {
                const s = live.get(chosen);
                const webrtc = protocol === 'webrtc' && s;
                let why = '';
                if (webrtc && !webrtcDecodes(s.video)) {
                    why = `This stream's video is ${s.video.toUpperCase()}, which this browser cannot get ` +
                        'over WebRTC: you get the sound alone. Choose another protocol, or publish H.264.';
                } else if (webrtc && s.b_frames) {
                    why = 'This stream has B-frames, which browsers\' WebRTC decoders cannot take: expect ' +
                        'mostly keyframes. Publish without them (x264: bframes=0, ffmpeg: -bf 0) for WebRTC viewers.';
                }
                $('note').hidden = !why;
                $('note').textContent = why;
            }

            function choose(stream, how) {
                chosen = stream;
                protocol = how;
                const keep = token ? `&token=${encodeURIComponent(token)}` : '';
                history.replaceState(null, '', `/?stream=${encodeURIComponent(stream)}&protocol=${how}${keep}`);
                $('player').hidden = false;
                $('playing').textContent = stream;
                const switcher = $('protocols');
                switcher.replaceChildren(...PROTOCOLS.map(([id, name]) => {
                    const b = el('button', { textContent: name, className: id === how ? 'on' : '' });
                    b.dataset.protocol = id;
                    b.onclick = () => choose(stream, id);
                    return b;
                }));
                const u = urls(stream);
                const list = $('urls');
                list.replaceChildren();
                copyable(list, 'RTMP', u.rtmp);
                for (const [id, name] of PROTOCOLS) copyable(list, name, u[id]);
                copyable(list, 'HTTP-TS', u['http-ts']);
                const embed = `${location.origin}/play/${stream}?protocol=${how}` + (token ? `&token=${encodeURIComponent(token)}` : '');
                copyable(list, 'embed', `<iframe src="${embed}" allow="autoplay" width="640" height="360"></iframe>`);
                const [app] = stream.split('/');
                const obs = $('obs');
                obs.replaceChildren();
                copyable(obs, 'Server', `rtmp://${location.hostname}:${rtmpPort}/${app}`);
                copyable(obs, 'Stream key', 'the room\'s channel key (from the control API)');
                for (const row of document.querySelectorAll('#streams tbody tr')) {
                    row.classList.toggle('selected', row.dataset.stream === stream);
                }
                note();
                play(video, stream, how);
            }

            async function refresh() {
                let answer;
                try {
                    answer = await (await fetch('/api/streams', { cache: 'no-store' })).json();
                } catch (e) {
                    return;
                }
                rtmpPort = answer.rtmp_port;
                live = new Map(answer.streams.map(s => [s.stream, s]));
                note();
                $('node').textContent = `${answer.streams.length} live`;
                const now = performance.now();
                const rows = answer.streams.map(s => {
                    const before = last.get(s.stream);
                    last.set(s.stream, { bytes: s.bytes_in, at: now });
                    const rate = before ? kbps(8 * (s.bytes_in - before.bytes), now - before.at)
                        : kbps(8 * s.bytes_in, s.uptime_ms);
                    const size = s.width ? ` ${s.width}×${s.height}` : '';
                    const row = el('tr', {},
                        el('td', { textContent: s.stream }),
                        el('td', { textContent: (s.video || '-') + size }),
                        el('td', { textContent: s.audio || '-' }),
                        el('td', { textContent: rate + ' kbit/s' }),
                        el('td', { textContent: viewers(s.viewers) }),
                        el('td', { textContent: duration(s.uptime_ms) }));
                    row.dataset.stream = s.stream;
                    row.classList.toggle('selected', s.stream === chosen);
                    row.onclick = () => choose(s.stream, protocol);
                    return row;
                });
                $('streams').tBodies[0].replaceChildren(...rows);
                $('empty').hidden = rows.length > 0;
                if (chosen && !current && $('player').hidden) choose(chosen, protocol);
            }
            refresh();
            setInterval(refresh, 1000);
        });
    }

    // The bare player of /play/APP/ROOM (for an <iframe>): ?protocol= picks the protocol.
    function bare() {
        document.addEventListener('DOMContentLoaded', () => {
            const video = $('video');
            const stream = decodeURIComponent(location.pathname.replace(/^\/play\//, ''));
            const protocol = new URLSearchParams(location.search).get('protocol') || 'http-flv';
            showLatency(video);
            play(video, stream, protocol);
        });
    }

    return { index, bare };
})();
