// Conditioning on earlier keyframes (issue 26): a run from the user's keyframe first sends the
// object's earlier manual keyframes (one request per frame, the objects prompted there), then
// prompts it again on the start frame beside its state, then walks with states only. Through the
// core double and the stand-in of CVAT's lambda endpoint (our real tracker behind it).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
    info, keyframes, post, record, runAction, setting,
} from './helpers.mjs';
import { Job } from './core-double.mjs';
import { EARLIER_KEYFRAMES } from '../dist/plugin.mjs';

/** A request as the stand-in noted it: frame, each shape's frame (null: none), states sent. */
function asked({ frame, shapes, states }) {
    return { frame, shapes: shapes.map((shape) => (shape === null ? null : shape.frame)), states };
}

const steps = (frames, count = 1) => frames.map((frame) => ({
    frame, shapes: Array(count).fill(null), states: Array(count).fill(true),
}));

/** A polygon (or `kind`) track with the user's keyframes on `frames`, points from `from`. */
async function trackOn(frames, { kind = 'polygon', from = null } = {}) {
    const { core, action } = await setting(0, { kinds: [] });
    const { frames: count, width, height, prompts, taskId, jobId } = await info();
    const job = new Job({ id: jobId, taskId, frames: Array.from({ length: count }, () => ({ width, height })) });
    const points = (frame) => prompts[String(from ?? (frame in prompts ? frame : 0))][kind];
    const shapes = frames.map((frame) => ({
        type: kind, frame, occluded: false, outside: false, z_order: 0, rotation: 0, points: points(frame), attributes: [],
    }));
    job.add({ label_id: 1, group: 0, source: 'manual', attributes: [], elements: [], frame: frames[0], shapes });
    return { core, action, job, prompts };
}

/** Track 0 -> 8, correct the keyframe on frame 4 (the user's change), clear the stand-in's log. */
async function correctedOn4() {
    const { core, action, job, prompts } = await trackOn([0]);
    await runAction(core, action, job, 0, 8);
    const [track] = job.store.tracks;
    job.correct(track, prompts['4'].polygon, 4);
    await post('reset');
    return { core, action, job, prompts };
}

test('a track corrected on frame 4 and re-run to 8 sends the frame-0 keyframe first and conditions on both', async () => {
    const { core, action, job, prompts } = await correctedOn4();
    const progress = await runAction(core, action, job, 4, 8);
    const { calls } = await info();
    assert.deepEqual(calls.map(asked), [
        { frame: 0, shapes: [0], states: [false] }, // the earlier keyframe starts the object
        { frame: 4, shapes: [4], states: [true] }, // the correction prompts it again
        ...steps([5, 6, 7, 8]),
    ]);
    assert.equal(calls[0].shapes[0].type, 'polygon');
    assert.ok(progress.some(([message]) => message.includes('conditioning on earlier keyframes: frame 0 (1 of 1, 1 object(s))')),
        JSON.stringify(progress));
    const [track] = job.store.tracks;
    assert.deepEqual(keyframes(track), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(track.shapes.find((shape) => shape.frame === 0).points, prompts['0'].polygon, 'the first keyframe stays');
    assert.deepEqual(track.shapes.find((shape) => shape.frame === 4).points, prompts['4'].polygon, 'the correction stays');
    record('conditioned', {
        earlier: [{ frame: 0, shapes: [{ type: 'polygon', points: prompts['0'].polygon, frame: 0 }] }],
        start: 4,
        prompts: [{ type: 'polygon', points: prompts['4'].polygon, frame: 4 }],
        frames: [5, 6, 7, 8],
        tracked: [5, 6, 7, 8].map((frame) => [track.shapes.find((shape) => shape.frame === frame).points]),
    });
});

test('"Condition on earlier keyframes" off: the correction restarts the object, as before', async () => {
    const { core, action, job } = await correctedOn4();
    await runAction(core, action, job, 4, 8, { condition: false });
    assert.deepEqual((await info()).calls.map(asked), [{ frame: 4, shapes: [4], states: [false] }, ...steps([5, 6, 7, 8])]);
    assert.deepEqual(keyframes(job.store.tracks[0]), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
});

test('no earlier manual keyframe, or a start on the plugin\'s own keyframe: a plain start', async () => {
    const { core, action, job } = await trackOn([0]);
    await runAction(core, action, job, 0, 3);
    assert.deepEqual((await info()).calls.map(asked), [{ frame: 0, shapes: [0], states: [false] }, ...steps([1, 2, 3])]);
    await post('reset');
    await runAction(core, action, job, 2, 4); // frame 2 is an automatic keyframe: nothing to condition on
    assert.deepEqual((await info()).calls.map(asked), [{ frame: 2, shapes: [2], states: [false] }, ...steps([3, 4])]);
});

test('backward: the keyframes after the start are the earlier ones, farthest first', async () => {
    const { core, action, job } = await trackOn([4, 8]);
    await runAction(core, action, job, 4, 2);
    assert.deepEqual((await info()).calls.map(asked), [
        { frame: 8, shapes: [8], states: [false] }, { frame: 4, shapes: [4], states: [true] }, ...steps([3, 2]),
    ]);
    assert.deepEqual(keyframes(job.store.tracks[0]), [2, 3, 4, 8]);
});

test(`at most ${EARLIER_KEYFRAMES} earlier keyframes, the nearest; outside keyframes and deleted frames are none`, async () => {
    const { core, action, job } = await trackOn([0, 1, 2, 3, 4, 5, 6]);
    const [track] = job.store.tracks;
    track.shapes.find((shape) => shape.frame === 4).outside = true;
    job.frameMeta[3].deleted = true;
    await runAction(core, action, job, 6, 7);
    assert.deepEqual((await info()).calls.map(asked), [
        ...[1, 2, 5].map((frame, index) => ({ frame, shapes: [frame], states: [index > 0] })),
        { frame: 6, shapes: [6], states: [true] }, ...steps([7]),
    ]);
});

test('several objects: one request per earlier frame with the objects prompted there', async () => {
    const { core, action, job, prompts } = await trackOn([0, 4]);
    const common = { label_id: 1, source: 'manual', attributes: [], elements: [] };
    job.add({ ...common, group: 0, frame: 4, shapes: [{ type: 'rectangle', frame: 4, occluded: false, outside: false, z_order: 1, rotation: 0, points: prompts['4'].rectangle, attributes: [] }] });
    for (const frame of [0, 4]) { // one mask object: the user's masks on 0 and 4, tied by group 5
        job.add({ ...common, group: 5, type: 'mask', frame, occluded: false, outside: false, z_order: 2, rotation: 0, points: prompts[String(frame)].mask });
    }
    job.add({ ...common, group: 6, type: 'mask', frame: 0, occluded: false, outside: false, z_order: 3, rotation: 0, points: prompts['0'].mask });
    await runAction(core, action, job, 4, 5);
    const calls = (await info()).calls.map(asked);
    assert.deepEqual(calls, [
        { frame: 0, shapes: [0, 0], states: [false, false] }, // the mask of group 5 and the polygon track
        { frame: 4, shapes: [4, 4, 4], states: [true, true, false] }, // shapes come first, then tracks
        ...steps([5], 3),
    ]);
    assert.deepEqual((await info()).calls[0].shapes.map((shape) => shape.type).sort(), ['mask', 'polygon']);
});

test('a group with two masks on one frame is no single object there: not a prompt', async () => {
    const { core, action, job } = await setting(4, { kinds: ['mask'] });
    const { prompts } = await info();
    const [mask] = job.store.shapes;
    mask.group = 9;
    for (let copy = 0; copy < 2; copy += 1) {
        job.add({ label_id: 1, group: 9, source: 'manual', attributes: [], elements: [], type: 'mask', frame: 0, occluded: false, outside: false, z_order: 1, rotation: 0, points: prompts['0'].mask });
    }
    await runAction(core, action, job, 4, 5);
    assert.deepEqual((await info()).calls.map(asked), [{ frame: 4, shapes: [4], states: [false] }, ...steps([5])]);
});

test('cancelled while conditioning: nothing changes, no further request', async () => {
    const { core, action, job } = await trackOn([0, 2, 4]);
    const before = job.export();
    await runAction(core, action, job, 4, 6, { cancelWhen: (message) => message.includes('(1 of 2') });
    assert.deepEqual(job.export(), before);
    assert.deepEqual((await info()).calls.map(({ frame }) => frame), [0], 'stopped after the first earlier frame');
});
