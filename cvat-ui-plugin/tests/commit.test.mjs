// What a run commits, against the cvat-core 2.73 double (job-double.mjs): copies without server
// ids or clientIDs (issue 24 D4), masks kept as shapes tied by their group, a re-run from a
// corrected mask replacing that object's automatic masks, and no half run when CVAT would refuse
// part of the result (issue 24 D3).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { info, keyframes, post, runAction, setting } from './helpers.mjs';

/** Every `id` and `clientID` anywhere in the objects a commit created. */
function ids(created) {
    const found = [];
    const visit = (value, where) => {
        if (Array.isArray(value)) value.forEach((item, index) => visit(item, `${where}[${index}]`));
        else if (value && typeof value === 'object') {
            for (const [key, item] of Object.entries(value)) {
                if (key === 'id' || key === 'clientID') found.push(`${where}.${key}`);
                visit(item, `${where}.${key}`);
            }
        }
    };
    visit(created, 'created');
    return found;
}

test('D4: saved shapes tracked as shapes: copies without server ids or clientIDs, and Save succeeds', async () => {
    const { core, action, job } = await setting(0, { saved: true });
    assert.ok(job.store.shapes.every((shape) => Number.isInteger(shape.id)), 'the originals carry server ids');
    await runAction(core, action, job, 0, 2, { toTracks: false });
    const [{ created, deleted }] = job.commits;
    // 6 tracked shapes, and the 3 originals again, now in a group each (their shapes' tie).
    assert.equal(created.shapes.length, 9);
    assert.equal(deleted.shapes.length, 3);
    assert.deepEqual(ids(created), []);
    const saved = await job.annotations.save();
    assert.deepEqual(saved, { created: 9, updated: 0 }, 'each copy is created, no original updated twice');
});

test('D4: a saved track re-run: the new track and its keyframes carry no server id', async () => {
    const { core, action, job } = await setting(0, { kinds: ['rectangle'], asTracks: true, saved: true });
    await runAction(core, action, job, 0, 2);
    await job.annotations.save();
    await post('reset');
    await runAction(core, action, job, 0, 3);
    assert.deepEqual(ids(job.commits[1].created), []);
    await job.annotations.save();
    assert.deepEqual(keyframes(job.store.tracks[0]), [0, 1, 2, 3]);
});

test('D3: a mask stays shapes even with "Convert shapes to tracks", one group for its shapes', async () => {
    const { core, action, job } = await setting(0, { kinds: ['mask'] });
    await runAction(core, action, job, 0, 3, { toTracks: true });
    assert.equal(job.store.tracks.length, 0);
    const masks = job.store.shapes;
    assert.deepEqual(masks.map((mask) => mask.frame).sort(), [0, 1, 2, 3]);
    assert.equal(new Set(masks.map((mask) => mask.group)).size, 1);
    assert.ok(masks[0].group > 0);
});

test('D3: a re-run from a corrected mask replaces that object\'s automatic masks in the range, keeps the user\'s, no pile-up', async () => {
    const { core, action, job } = await setting(0, { kinds: ['mask', 'polygon'] });
    await runAction(core, action, job, 0, 4, { toTracks: false });
    const { prompts } = await info();
    const onFrame = (frame, type) => job.store.shapes.filter((shape) => shape.frame === frame && shape.type === type);
    const [maskOn2] = onFrame(2, 'mask');
    job.correct(maskOn2, prompts['4'].mask); // the user's correction on frame 2
    job.correct(onFrame(4, 'mask')[0], prompts['0'].mask); // and one inside the range, to keep
    const other = onFrame(3, 'polygon')[0].points; // another object's shape, not to be touched
    await post('reset');
    await runAction(core, action, job, 2, 4, { toTracks: false, filters: [{ '==': [{ var: 'shape' }, 'mask'] }] });
    for (const frame of [0, 1, 2, 3, 4]) assert.equal(onFrame(frame, 'mask').length, 1, `one mask on frame ${frame}`);
    assert.deepEqual(onFrame(2, 'mask')[0].points, prompts['4'].mask, 'the correction stays');
    assert.deepEqual(onFrame(4, 'mask')[0].points, prompts['0'].mask, 'the user\'s mask inside the range stays');
    assert.deepEqual(onFrame(3, 'polygon')[0].points, other);
    // Frame 0 first: the user's mask there (the run's prompt, in the group) conditions the run.
    assert.deepEqual((await info()).order, [0, 2, 3, 4]);
});

test('D3: a result CVAT would refuse part-way (a 2-point polygon) is refused before the commit: no half run', async () => {
    const { core, action, job } = await setting(0);
    const { call } = core.lambda;
    core.lambda = {
        ...core.lambda,
        async call(taskID, model, args) {
            const answer = await call.call(core.lambda, taskID, model, args);
            if (args.frame === 2) answer.shapes[0] = { ...answer.shapes[0], points: [1, 1, 5, 5] }; // the polygon
            return answer;
        },
    };
    const before = job.export();
    await assert.rejects(runAction(core, action, job, 0, 3), /nothing was saved.*frame 2.*a polygon with 2 points/s);
    assert.deepEqual(job.export(), before, 'no mask shapes were imported before the failing track');
    assert.equal(job.commits.length, 0);
});

test('a re-run in another browser (nothing remembered) still replaces the automatic results of each type', async () => {
    const { core, action, job } = await setting(0);
    await runAction(core, action, job, 0, 4, { toTracks: true });
    const stale = (list) => list.forEach((shape) => { if (shape.frame > 2) shape.stale = true; });
    job.store.tracks.forEach((track) => stale(track.shapes));
    stale(job.store.shapes);
    job.reload(); // saved, then loaded as a fresh page or another annotator would
    const rectangle = job.store.tracks.find((track) => track.shapes[0].type === 'rectangle');
    const polygon = job.store.tracks.find((track) => track.shapes[0].type === 'polygon');
    const mask = job.store.shapes.find((shape) => shape.type === 'mask' && shape.frame === 2);
    const moved = (points) => points.map((value) => value + 3);
    for (const track of [rectangle, polygon]) job.correct(track, moved(track.shapes.find((shape) => shape.frame === 2).points), 2);
    const correction = [...mask.points];
    job.correct(mask, correction);
    await post('reset');
    await runAction(core, action, job, 2, 4);
    for (const track of job.store.tracks) {
        assert.deepEqual(keyframes(track), [0, 1, 2, 3, 4]);
        assert.deepEqual(track.shapes.filter((shape) => shape.stale).map((shape) => shape.frame), [], 'keyframes 3 and 4 replaced');
    }
    const masks = job.store.shapes.filter((shape) => shape.type === 'mask');
    assert.deepEqual(masks.map((shape) => shape.frame).sort(), [0, 1, 2, 3, 4], 'one mask a frame');
    assert.deepEqual(masks.filter((shape) => shape.stale).map((shape) => shape.frame), [], 'masks 3 and 4 replaced');
    assert.deepEqual(masks.find((shape) => shape.frame === 2).points, correction, 'the correction stays');
    assert.deepEqual((await info()).order, [0, 2, 3, 4], 'the first keyframes condition the run');
});
