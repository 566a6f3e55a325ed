// Headless Chromium (Debian's, via puppeteer-core: no browser download) loads the built plugin
// into tests/browser/page.html, served by the Python stand-in, runs the action and saves a
// screenshot of the tracked shapes drawn on the frames. Exits non-zero on any failure.
import assert from 'node:assert/strict';
import puppeteer from 'puppeteer-core';

const base = process.env.STANDIN_URL;
const screenshot = process.env.SCREENSHOT;
assert.ok(base && screenshot, 'STANDIN_URL and SCREENSHOT must be set (run through python -m pytest)');
const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    page.on('console', (message) => console.log(`[page] ${message.text()}`));
    await page.setViewport({ width: 1000, height: 600 });
    await page.goto(`${base}/page/tests/browser/page.html?target=5`);
    const result = await page.evaluate(() => window.result);
    assert.equal(result.error, undefined, result.error);
    assert.deepEqual(errors, []);
    assert.deepEqual(result.plugins, ['SAM2 tracker (cvat-sam2-tracker)']);
    assert.equal(result.action, 'Segment Anything 2: Tracker');
    assert.deepEqual(result.tracks.map((t) => t.type).sort(), ['polygon', 'rectangle']);
    for (const track of result.tracks) assert.deepEqual(track.frames, [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(result.shapes.filter((s) => s.type === 'mask').map((s) => s.frame).sort(), [0, 1, 2, 3, 4, 5], 'masks stay shapes');
    assert.ok(result.progress.some((m) => m.includes('frame 5 of 5')), result.progress.join('; '));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`screenshot: ${screenshot}`);
} finally {
    await browser.close();
}
