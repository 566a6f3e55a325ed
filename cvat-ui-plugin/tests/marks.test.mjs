// How the plugin tells its own results from the user's in what CVAT's server keeps
// (src/ts/automatic.ts): marked points for polygons and rectangles (track keyframes have no
// source of their own), `source: 'auto'` for masks (a user's edit makes it 'semi-auto').
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AUTOMATIC_SOURCE, isAutomatic, marked } from '../dist/plugin.mjs';

const POLYGON = [10.4, 20.2, 60, 22.75, 35.123, 70.9];
const RECTANGLE = [3, 4.5, 120.25, 88];

/** A small deterministic generator (a fixed sequence: the test cannot flake). */
function numbers(seed) {
    let state = seed >>> 0;
    return () => {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
        return state / 2 ** 32;
    };
}

test('marked points stay within 1/16 px and are known as the plugin\'s on their frame only', () => {
    for (const [type, points] of [['polygon', POLYGON], ['rectangle', RECTANGLE]]) {
        const written = marked(type, 7, points);
        assert.equal(written.length, points.length);
        written.forEach((value, index) => assert.ok(Math.abs(value - points[index]) <= 1 / 16, `${value} vs ${points[index]}`));
        assert.ok(isAutomatic({ type, frame: 7, points: written }));
        assert.ok(!isAutomatic({ type, frame: 8, points: written }), 'a copy on another frame (Propagate) is the user\'s');
        assert.ok(!isAutomatic({ type, frame: 7, points }), 'the unmarked points are not');
        const moved = [...written];
        moved[written.length - 1] += 0.5;
        assert.ok(!isAutomatic({ type, frame: 7, points: moved }), 'a moved vertex is the user\'s');
        const stored = written.map((value) => parseFloat(String(value))); // the server's str(float), read back
        assert.ok(isAutomatic({ type, frame: 7, points: JSON.parse(JSON.stringify(stored)) }));
    }
});

test('points drawn or imported by users are not taken for the plugin\'s', () => {
    const random = numbers(24);
    let taken = 0;
    for (let index = 0; index < 5000; index += 1) {
        const integers = Array.from({ length: 4 }, () => Math.floor(random() * 1000)); // an imported rectangle
        const drawn = Array.from({ length: 8 }, () => random() * 1000); // a polygon drawn on the canvas
        const eighths = Array.from({ length: 4 }, () => Math.floor(random() * 8000) / 8);
        if (isAutomatic({ type: 'rectangle', frame: index % 10, points: integers })) taken += 1;
        if (isAutomatic({ type: 'polygon', frame: index % 10, points: drawn })) taken += 1;
        if (isAutomatic({ type: 'rectangle', frame: index % 10, points: eighths })) taken += 1;
    }
    assert.equal(taken, 0);
});

test('masks are the plugin\'s by their source alone, as CVAT keeps it', () => {
    const mask = { type: 'mask', frame: 3, points: [5, 2, 4, 10, 10, 13, 13] };
    assert.ok(isAutomatic({ ...mask, source: AUTOMATIC_SOURCE }));
    for (const source of ['semi-auto', 'manual', 'file', undefined]) assert.ok(!isAutomatic({ ...mask, source }), source);
    assert.deepEqual(marked('mask', 3, mask.points), mask.points, 'a mask\'s points are written as they are');
});
