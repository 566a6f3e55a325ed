// The review items of issue 24 against cvat-core 2.73 and its actions modal: an explicit
// direction (the modal keeps parameters between openings: annotations-actions-modal.tsx), NaN
// from prepareActionParameters (base-action.ts), the user's keyframes inside the range, rotation,
// locked objects, annotation filters, the job's frame list (frames.ts getJobFrameNumbers); and
// issue 25 item 7: a backward re-run replaces the old keyframes (the mutation `low = start`).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
    DIRECTION, Modal, TARGET_FRAME, info, keyframes, post, runAction, setting,
} from './helpers.mjs';

// A test's tag on keyframes that survives being kept (attributes are copied as they are).
const OLD = [{ spec_id: 9, value: 'old' }];
const marked = (track) => track.shapes.filter((shape) => shape.attributes.length).map((shape) => shape.frame);

test('a target kept from an earlier opening that contradicts the Direction is refused, nothing changes', async () => {
    const { core, action, job } = await setting(0, { kinds: ['rectangle'], asTracks: true });
    const modal = new Modal(core);
    modal.set(action, TARGET_FRAME, 3);
    await modal.run(job, action, 0); // forward 0 -> 3
    assert.deepEqual(keyframes(job.store.tracks[0]), [0, 1, 2, 3]);
    assert.equal(modal.kept[action.name][DIRECTION], 'forward');
    // The user moves on to frame 5 and opens the modal again: "Target frame" still shows 3.
    const before = job.export();
    await post('reset');
    await assert.rejects(modal.run(job, action, 3 + 2), /"Direction" is forward but "Target frame" 3 is before 5/);
    assert.deepEqual(job.export(), before, 'no silent backward run replacing keyframes 3-5');
    assert.deepEqual((await info()).requests, {});
});

test('a Target frame the modal did not send is NaN in cvat-core: refused with a message', async () => {
    const { core, action, job } = await setting(0, { kinds: ['rectangle'] });
    const before = job.export();
    await assert.rejects(core.actions.run(job, action, {}, 0, 0, [], () => {}, () => false), /"Target frame" is NaN, not a frame number/);
    assert.deepEqual(job.export(), before);
});

test('a re-run keeps the user\'s keyframes inside the range and replaces only the automatic ones', async () => {
    const { core, action, job } = await setting(0, { kinds: ['polygon'] });
    await runAction(core, action, job, 0, 4);
    const [track] = job.store.tracks;
    const manual = track.shapes.find((shape) => shape.frame === 3);
    job.correct(track, manual.points.map((value) => value + 4), 3); // the user's correction on frame 3
    const userPoints = [...manual.points];
    for (const shape of track.shapes.filter((s) => s.frame !== 3)) shape.attributes = OLD;
    await post('reset');
    await runAction(core, action, job, 1, 4);
    const [after] = job.store.tracks;
    assert.deepEqual(keyframes(after), [0, 1, 2, 3, 4]);
    assert.deepEqual(after.shapes.find((shape) => shape.frame === 3).points, userPoints, 'the user\'s keyframe stays');
    assert.deepEqual(marked(after), [0, 1], 'before the range and the start stay, 2 and 4 replaced');
});

test('issue 25 item 7: a backward re-run replaces the old automatic keyframes before the start', async () => {
    const { core, action, job } = await setting(4, { kinds: ['rectangle'] });
    await runAction(core, action, job, 4, 0);
    const [track] = job.store.tracks;
    assert.deepEqual(keyframes(track), [0, 1, 2, 3, 4]);
    for (const shape of track.shapes) shape.attributes = OLD;
    const corrected = track.shapes.find((shape) => shape.frame === 2);
    job.correct(track, corrected.points.map((value) => value - 3), 2);
    await post('reset');
    await runAction(core, action, job, 2, 0);
    const [after] = job.store.tracks;
    assert.deepEqual(keyframes(after), [0, 1, 2, 3, 4], 'one keyframe per frame');
    assert.deepEqual(marked(after), [2, 3, 4], 'frames 0 and 1 replaced');
    assert.deepEqual((await info()).order, [4, 2, 1, 0], 'the first keyframe (4) conditions the backward run');
});

test('rotation is kept on tracks and on shapes', async () => {
    for (const toTracks of [true, false]) {
        const { core, action, job } = await setting(0, { kinds: ['rectangle'] });
        job.store.shapes[0].rotation = 30;
        await runAction(core, action, job, 0, 2, { toTracks });
        const shapes = toTracks ? job.store.tracks[0].shapes : job.store.shapes;
        assert.deepEqual(shapes.map((shape) => shape.rotation), [30, 30, 30], `toTracks ${toTracks}`);
    }
});

test('locked objects are neither tracked nor changed', async () => {
    const { core, action, job } = await setting(0, { kinds: ['rectangle', 'polygon'] });
    job.locked.add(job.store.shapes.find((shape) => shape.type === 'polygon').clientID);
    const polygon = structuredClone(job.store.shapes.find((shape) => shape.type === 'polygon'));
    await runAction(core, action, job, 0, 2);
    assert.deepEqual(job.store.tracks.map((track) => track.shapes[0].type), ['rectangle']);
    assert.deepEqual(job.store.shapes, [polygon]);

    const [state] = (await job.annotations.get(0)).filter((candidate) => candidate.lock);
    await assert.rejects(core.actions.call(job, action, { Direction: 'forward', 'Target frame': '1' }, 0, [state], () => {}, () => false),
        /The object is locked: unlock it to track it/, 'from its menu: a message, not a silent nothing');
});

test('the user\'s annotation filters: only the objects they show are tracked', async () => {
    const { core, action, job } = await setting(0, { kinds: ['rectangle', 'polygon'] });
    await runAction(core, action, job, 0, 2, { filters: [{ '==': [{ var: 'shape' }, 'rectangle'] }] });
    assert.deepEqual(job.store.tracks.map((track) => track.shapes[0].type), ['rectangle']);
    assert.deepEqual(job.store.shapes.map((shape) => shape.type), ['polygon']);
});

test('the job\'s frame list: [] before CVAT loaded it is refused; a ground-truth job\'s frames are walked as listed', async () => {
    const empty = await setting(0, { kinds: ['rectangle'] });
    empty.job.segment = [];
    await assert.rejects(runAction(empty.core, empty.action, empty.job, 0, 3), /has not loaded this job's frame list/);
    assert.equal(empty.job.commits.length, 0);

    const { core, action, job } = await setting(0, { kinds: ['rectangle'] });
    job.segment = [0, 2, 5, 7];
    await post('reset');
    await runAction(core, action, job, 0, 6);
    assert.deepEqual(keyframes(job.store.tracks[0]), [0, 2, 5]);
    assert.deepEqual((await info()).order, [0, 2, 5]);
});
