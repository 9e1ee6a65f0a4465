// What the browser test scripts share: their `--name value` arguments, and Debian's
// Chromium started headless the way every test drives it.

import fs from 'node:fs';
import http from 'node:http';
import { chromium } from 'playwright-core';

/// The script's arguments, `--name value` pairs, as an object.
export function parseArgs() {
    return Object.fromEntries(
        process.argv.slice(2).reduce((pairs, arg, i, all) => {
            if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
            return pairs;
        }, []),
    );
}

/// Headless Chromium (`$CHROMIUM`, else Debian's), with nothing of its own on the network
/// and media allowed to play without a click; `extra` flags after those.
// WebRTC to a node on this machine: host candidates by address, not mDNS names (there is
// no multicast here), and loopback among them (the node answers on 127.0.0.1).
export const WEBRTC_ON_LOOPBACK = [
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
];

export function launchChromium(extra = []) {
    return chromium.launch({
        executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
        args: [
            '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
            '--autoplay-policy=no-user-gesture-required',
            ...extra,
        ],
    });
}

/// Serve `page` (HTML) at every path of a local server on 127.0.0.1, except `scripts`'
/// paths, each a JavaScript file to send: the page has an origin of its own, like a site
/// embedding a player. The server and the page's URL.
export async function servePage(page, scripts = {}) {
    const server = http.createServer((req, res) => {
        const file = scripts[req.url];
        if (file) {
            res.writeHead(200, { 'content-type': 'text/javascript' });
            fs.createReadStream(file).pipe(res);
        } else {
            res.writeHead(200, { 'content-type': 'text/html' });
            res.end(page);
        }
    });
    await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
    return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

/// A new tab whose console messages and page errors are kept in `lines`.
export async function tabWithConsole(browser, lines) {
    const tab = await browser.newPage();
    tab.on('console', message => lines.push(message.type() + ': ' + message.text()));
    tab.on('pageerror', error => lines.push('pageerror: ' + error.message));
    return tab;
}
