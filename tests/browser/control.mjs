// Drives the control console (/console on the control API) in headless Chromium. Used by
// the end-to-end tests in tests/browser.rs. Prints one JSON line when it has the keys,
// then, once the room is live and listed with its play URLs, a second line.
//
//   node control.mjs --api http://HOST:PORT --token TOKEN --room ROOM --screenshots DIR
//
// It signs in with the admin token, creates the room (its first key), rotates the key
// (the second), and waits up to 30 s for the room to be live.

import path from 'node:path';
import fs from 'node:fs';
import { launchChromium, parseArgs } from './common.mjs';

const args = parseArgs();
const { api, token, room, screenshots } = args;
fs.mkdirSync(screenshots, { recursive: true });
const browser = await launchChromium();
const console_ = [];
try {
    const tab = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    tab.on('console', m => console_.push(m.type() + ': ' + m.text()));
    tab.on('pageerror', e => console_.push('pageerror: ' + e.message));
    await tab.goto(api + '/console');
    // Without the token the page says what it needs.
    await tab.waitForSelector('#error:not([hidden])');
    const refused = await tab.textContent('#error');
    await tab.fill('#token', token);
    await tab.click('#login button');
    await tab.fill('#room', room);
    await tab.click('#create button');
    await tab.waitForSelector(`#key[data-room="${room}"]`);
    const first = await tab.getAttribute('#key', 'data-key');
    await tab.waitForSelector(`#rooms tr[data-room="${room}"]`);
    const nodes = await tab.$$eval('#nodes tbody tr', rows => rows.map(r => r.textContent));
    await tab.click(`button[data-rotate="${room}"]`);
    await tab.waitForFunction(k => document.getElementById('key').dataset.key !== k, first);
    const second = await tab.getAttribute('#key', 'data-key');
    process.stdout.write(JSON.stringify({ refused, first, second, nodes, console: console_ }) + '\n');
    let live = [];
    try {
        await tab.waitForFunction(r => [...document.querySelectorAll('#live tbody tr')]
            .some(tr => tr.textContent.includes('/' + r)), room, { timeout: 30000 });
        live = await tab.$$eval('#live tbody tr', rows => rows.map(r => r.textContent));
    } catch (e) {
        console_.push('not live: ' + e.message);
    }
    await tab.screenshot({ path: path.join(screenshots, 'control.png'), fullPage: true });
    process.stdout.write(JSON.stringify({ live, console: console_ }) + '\n');
} finally {
    await browser.close();
}
