// What the browser test scripts share: their `--name value` arguments, and Debian's
// Chromium started headless the way every test drives it.

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
