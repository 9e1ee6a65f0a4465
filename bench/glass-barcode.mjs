// The glass-to-glass barcode (bench/glass.sh): how ffmpeg draws a time into the picture
// and how a reader gets it back from the decoded pixels. Both halves live here so they
// cannot drift apart: glass.sh takes the filter from `node glass-barcode.mjs filter`,
// glass.mjs's page gets `readBarcode` as source text, and `node glass-barcode.mjs check`
// reads raw RGBA frames that ffmpeg made with the filter (see glass.sh --self-test).
//
// The strip: BLOCKS square blocks of BLOCK pixels in a row at the picture's top left.
// Block 0 is white and block 1 black (a reader that does not see them is not looking at a
// strip: no reading); block 2 + i is bit i of the time in milliseconds modulo 2^24 (4.7
// hours), white for 1. Blocks of 32 pixels are two macroblocks wide and high: H.264 at any
// sane rate keeps them black or white, and a reader samples their middle.

export const BITS = 24;
export const BLOCK = 32;
export const BLOCKS = BITS + 2;
export const WRAP = 2 ** BITS;

/// The ffmpeg filter graph (for -filter_complex) that draws the time into input `[0:v]`
/// and outputs `[v]`. `timeMs` is a setpts expression of the time in ms with TB = 1/1000:
/// by default the wall clock when the frame goes through the filter (RTCTIME, in us).
/// The strip is computed by geq on a crop of the picture only (geq evaluates an expression
/// per pixel), then laid over it; the timestamps go back to one per frame at `fps`.
export function filter(fps, timeMs = 'RTCTIME/1000') {
    const w = BLOCKS * BLOCK;
    const bit = `mod(floor(mod(floor(T*1000+0.5),${WRAP})/pow(2,floor(X/${BLOCK})-2)),2)`;
    const lum = `if(lt(X,${BLOCK}),235,if(lt(X,${2 * BLOCK}),16,if(${bit},235,16)))`;
    return (
        `[0:v]settb=1/1000,setpts='${timeMs}',split[main][s];` +
        `[s]crop=${w}:${BLOCK}:0:0,geq=lum='${lum}':cb=128:cr=128[bar];` +
        `[main][bar]overlay=0:0,setpts=N/(${fps}*TB)[v]`
    );
}

/// The time (ms modulo 2^24) in an RGBA image `width` pixels wide whose top left holds
/// the strip (at least BLOCKS * BLOCK by BLOCK pixels), or null when there is no strip.
/// Self-contained (no outer names): glass.mjs sends its source text to the page.
export function readBarcode(rgba, width) {
    const block = 32, bits = 24;
    const white = b => {
        // The middle of block b, the luma of its pixel (RGB average is enough for grey).
        const x = b * block + block / 2, y = block / 2;
        const i = (y * width + x) * 4;
        return (rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3 > 128;
    };
    if (!white(0) || white(1)) return null;
    let ms = 0;
    for (let i = 0; i < bits; i++) if (white(2 + i)) ms += 2 ** i;
    return ms;
}

/// How long ago (ms) a strip reading `drawn` was drawn, at wall clock `nowMs`.
export function age(drawn, nowMs) {
    return (((nowMs % WRAP) - drawn) % WRAP + WRAP) % WRAP;
}

// As a program: `filter FPS [TIME_EXPR]` prints the filter; `check WIDTH HEIGHT FILE
// FIRST STEP` reads FILE's raw RGBA frames and checks frame n reads FIRST + n * STEP.
if (import.meta.url === `file://${process.argv[1]}`) {
    const [command, ...rest] = process.argv.slice(2);
    if (command === 'filter') {
        process.stdout.write(filter(Number(rest[0]), rest[1]) + '\n');
    } else if (command === 'check') {
        const fs = await import('node:fs');
        const [width, height, file, first, step] = rest;
        const data = fs.readFileSync(file);
        const size = Number(width) * Number(height) * 4;
        let bad = 0, frames = 0;
        for (let at = 0; at + size <= data.length; at += size, frames++) {
            const want = (Number(first) + frames * Number(step)) % WRAP;
            const got = readBarcode(data.subarray(at, at + size), Number(width));
            if (got !== want) {
                bad++;
                console.error(`frame ${frames}: read ${got}, drawn ${want}`);
            }
        }
        console.log(`${frames} frames, ${bad} misread`);
        process.exit(frames > 0 && bad === 0 ? 0 : 1);
    } else {
        console.error('usage: node glass-barcode.mjs filter FPS [TIME_EXPR] | check W H FILE FIRST STEP');
        process.exit(2);
    }
}
