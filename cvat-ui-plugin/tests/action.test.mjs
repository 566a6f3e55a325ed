// The action through cvat-core's run/commit path (the core double) and the Python stand-in of
// CVAT's lambda endpoint, which calls our real tracker (random-weight SAM2, real redis-server).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
    info, keyframes, post, record, runAction, setting,
} from './helpers.mjs';

const KINDS = ['polygon', 'mask', 'rectangle'];

function tracked(job, frames) {
    // Each object's points on `frames`, in the order the objects were drawn (z_order): polygons
    // and rectangles became tracks, masks stay shapes (one per frame).
    return frames.map((frame) => KINDS.map((kind) => {
        const track = job.store.tracks.find((candidate) => candidate.shapes[0].type === kind);
        if (track) return track.shapes.find((shape) => shape.frame === frame).points;
        return job.store.shapes.find((shape) => shape.type === kind && shape.frame === frame).points;
    }));
}

/** The mask's shapes: one per frame, all in one group. */
function maskFrames(job) {
    const masks = job.store.shapes.filter((shape) => shape.type === 'mask');
    assert.equal(new Set(masks.map((mask) => mask.group)).size, 1, 'one object, one group');
    assert.notEqual(masks[0].group, 0);
    return masks.map((mask) => mask.frame).sort((a, b) => a - b);
}

test('forward: a polygon, a mask and a rectangle in one run, one request per frame', async () => {
    const { core, action, job } = await setting(0);
    const progress = await runAction(core, action, job, 0, 4);
    assert.deepEqual(job.store.tracks.map((track) => track.shapes[0].type).sort(), ['polygon', 'rectangle'], 'polygon and rectangle became tracks');
    for (const track of job.store.tracks) assert.deepEqual(keyframes(track), [0, 1, 2, 3, 4]);
    assert.deepEqual(maskFrames(job), [0, 1, 2, 3, 4], 'the mask stays shapes (no mask tracks in community CVAT)');
    assert.deepEqual((await info()).order, [0, 1, 2, 3, 4]);
    assert.ok(progress.some(([message]) => message.includes('frame 4 of 4')), JSON.stringify(progress));
    const { prompts } = await info();
    record('forward', { start: 0, frames: [1, 2, 3, 4], prompts: KINDS.map((kind) => ({ type: kind, points: prompts['0'][kind] })), tracked: tracked(job, [1, 2, 3, 4]) });
});

test('backward: a target before the current frame walks the frames in reverse', async () => {
    const { core, action, job } = await setting(4);
    await runAction(core, action, job, 4, 0);
    for (const track of job.store.tracks) {
        assert.deepEqual(keyframes(track), [0, 1, 2, 3, 4]);
        assert.equal(track.frame, 0, 'a track starts at its first keyframe');
    }
    assert.deepEqual(maskFrames(job), [0, 1, 2, 3, 4]);
    assert.deepEqual((await info()).order, [4, 3, 2, 1, 0], 'one request per frame, walking back');
    const { prompts } = await info();
    record('backward', { start: 4, frames: [3, 2, 1, 0], prompts: KINDS.map((kind) => ({ type: kind, points: prompts['4'][kind] })), tracked: tracked(job, [3, 2, 1, 0]) });
});

test('shapes stay shapes when asked: one shape per object and frame', async () => {
    const { core, action, job } = await setting(0);
    await runAction(core, action, job, 0, 2, { toTracks: false });
    assert.equal(job.store.tracks.length, 0);
    const frames = job.store.shapes.map((shape) => shape.frame).sort();
    assert.deepEqual(frames, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
});

test('cancelled mid-run: nothing changes', async () => {
    const { core, action, job } = await setting(0);
    const before = job.export();
    await runAction(core, action, job, 0, 6, { cancelAfter: 2 });
    assert.deepEqual(job.export(), before);
    assert.deepEqual((await info()).requests, { 0: 1, 1: 1, 2: 1 }, 'stopped between frames');
});

for (const [name, fault, expected] of [
    ['the function\'s 4xx (states it does not know)', { kind: 'forget' }, /frame 2; nothing was saved.*Run the action again from this frame.*CVAT answered 4\d\d/s],
    ['a 5xx', { kind: 'status', status: 503, message: 'Redis down' }, /frame 2; nothing was saved.*connection to Redis was lost, Redis down, out of GPU memory.*Run the action again from this frame; if it fails again, check the function.*CVAT answered 503/s],
    ['a dropped connection', { kind: 'drop' }, /frame 2; nothing was saved\. CVAT could not be reached/],
    ['a malformed answer', { kind: 'malformed' }, /frame 2; nothing was saved\. The function answered 2 shapes and 3 states/],
]) {
    test(`${name} mid-run stops with a message and writes nothing`, async () => {
        const { core, action, job } = await setting(0);
        const before = job.export();
        await post('faults', { 2: fault });
        await assert.rejects(runAction(core, action, job, 0, 4), (error) => {
            assert.match(error.message, expected);
            return true;
        });
        assert.deepEqual(job.export(), before);
        assert.equal((await info()).requests['3'], undefined, 'no request after the failure');
    });
}

test('a lost object is outside from that frame, not frozen', async () => {
    const { core, action, job } = await setting(0);
    await post('faults', { 2: { kind: 'outside', objects: [0] }, 3: { kind: 'outside', objects: [0] } });
    await runAction(core, action, job, 0, 4);
    const polygon = job.store.tracks.find((track) => track.shapes[0].type === 'polygon');
    assert.deepEqual(polygon.shapes.map((shape) => [shape.frame, shape.outside]), [[0, false], [1, false], [2, true], [3, true], [4, false]]);
    assert.deepEqual(maskFrames(job), [0, 1, 2, 3, 4], 'the mask is seen on every frame');

    const shapes = await setting(0);
    await post('faults', { 2: { kind: 'outside', objects: [0] } });
    await runAction(shapes.core, shapes.action, shapes.job, 0, 2, { toTracks: false });
    const polygons = shapes.job.store.shapes.filter((shape) => shape.type === 'polygon').map((shape) => shape.frame);
    assert.deepEqual(polygons.sort(), [0, 1], 'no polygon on the frame where it is lost');
});

test('a re-run after a correction replaces the keyframes after it, no duplicates', async () => {
    const { core, action, job } = await setting(0);
    await runAction(core, action, job, 0, 4);
    const before = structuredClone(job.store.tracks);
    // The user corrects the rectangle on frame 2 (its keyframe moved 5 px); the automatic
    // keyframes after it are marked, so that a replacement is seen whatever SAM2 answers.
    const rectangle = job.store.tracks.find((track) => track.shapes[0].type === 'rectangle');
    const corrected = rectangle.shapes.find((shape) => shape.frame === 2);
    job.correct(rectangle, corrected.points.map((value) => value + 5), 2);
    for (const track of job.store.tracks) {
        for (const shape of track.shapes.filter((s) => s.frame > 2)) shape.stale = true;
    }
    for (const shape of job.store.shapes.filter((s) => s.frame > 2)) shape.stale = true;
    await post('reset');
    await runAction(core, action, job, 2, 4);
    assert.equal(job.store.tracks.length, 2);
    for (const track of job.store.tracks) {
        assert.deepEqual(keyframes(track), [0, 1, 2, 3, 4]);
        assert.ok(track.shapes.every((shape) => !shape.stale), 'keyframes 3 and 4 replaced');
    }
    assert.deepEqual(maskFrames(job), [0, 1, 2, 3, 4], 'the mask\'s shapes on 3 and 4 replaced, not piled up');
    assert.ok(job.store.shapes.every((shape) => !shape.stale));
    const after = job.store.tracks.find((track) => track.shapes[0].type === 'rectangle');
    const old = before.find((track) => track.shapes[0].type === 'rectangle');
    assert.deepEqual(after.shapes.find((shape) => shape.frame === 2).points, corrected.points);
    assert.deepEqual(after.shapes.find((shape) => shape.frame === 1).points, old.shapes.find((shape) => shape.frame === 1).points);
    // Frame 0 first: the rectangle's first keyframe conditions the run from its correction.
    assert.deepEqual((await info()).order, [0, 2, 3, 4]);
});

test('deleted frames are skipped: no request, no keyframe', async () => {
    const { core, action, job } = await setting(0);
    job.frameMeta[2].deleted = true;
    await runAction(core, action, job, 0, 3);
    for (const track of job.store.tracks) assert.deepEqual(keyframes(track), [0, 1, 3]);
    assert.deepEqual((await info()).requests, { 0: 1, 1: 1, 3: 1 });
});

test('from an object\'s menu: only that object is tracked', async () => {
    const { core, action, job } = await setting(0);
    const [state] = (await job.annotations.get(0)).filter((s) => s.shapeType === 'mask');
    await core.actions.call(job, action, { Direction: 'forward', 'Target frame': '1' }, 0, [state], () => {}, () => false);
    assert.equal(job.store.tracks.length, 0, 'a mask stays shapes');
    assert.deepEqual(maskFrames(job), [0, 1]);
    assert.deepEqual(job.store.shapes.map((shape) => shape.type).sort(), ['mask', 'mask', 'polygon', 'rectangle']);
});

test('several functions: the run calls the one chosen', async () => {
    const models = [
        { id: 'cvat-sam2-tracker-gpu', kind: 'tracker', name: 'SAM2 tracker (cvat-sam2-tracker)' },
        { id: 'cvat-sam2-tracker', kind: 'tracker', name: 'SAM2 tracker (cvat-sam2-tracker)' },
    ];
    const { core, action, job } = await setting(0, { kinds: ['rectangle'], models });
    await assert.rejects(runAction(core, action, job, 0, 1, { fn: 'cvat-sam2-tracker-gpu' }), /CVAT answered 404/);
    await runAction(core, action, job, 0, 1, { fn: 'cvat-sam2-tracker' });
    assert.deepEqual(keyframes(job.store.tracks[0]), [0, 1]);
});
