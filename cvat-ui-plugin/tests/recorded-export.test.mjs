// The action run on what cvat-core 2.73's export handed it in a live CVAT 2.73.0
// (tests/fixtures/cvat-2.73/action-export-*.json, recorded from the real cvat-ui): saved objects
// with server ids (`id`), tracks with keyframes carrying theirs, a mask drawn as a shape. What the
// plugin commits must carry neither a server id nor a clientID (annotations-saver.ts would send an
// object with a known id as an update of the original: CVAT's 400 duplicate key), and masks stay
// shapes tied by one group (community cvat-core has no mask tracks).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { Job, makeCore } from './core-double.mjs';
import { setUp } from '../dist/plugin.mjs';
import {
    BASE_URL, info, post, quietly, runAction,
} from './helpers.mjs';

const FIXTURES = new URL('../../tests/fixtures/cvat-2.73/', import.meta.url);

function recorded(file, key = null) {
    const data = JSON.parse(readFileSync(new URL(file, FIXTURES), 'utf8'));
    return key ? data[key] : data;
}

/** A job holding the recorded export as CVAT loaded it: saved, with the recorded ids. */
async function jobOf(exported) {
    const core = makeCore(BASE_URL);
    const action = await setUp(core);
    const { frames, width, height, taskId, jobId } = await info();
    const job = new Job({ id: jobId, taskId, frames: Array.from({ length: frames }, () => ({ width, height })) });
    job.store = { shapes: structuredClone(exported.shapes), tracks: structuredClone(exported.tracks) };
    const objects = [...job.store.shapes, ...job.store.tracks];
    assert.ok(objects.every((object) => Number.isInteger(object.id)), 'the recorded objects are saved ones');
    job.nextID = Math.max(...objects.map((object) => object.clientID)) + 1;
    job.initial = new Map(objects.map((object) => [object.id, structuredClone(object)]));
    await post('reset');
    return { core, action, job };
}

/** Every key path under `value` named `id` or `clientID`. */
function identities(value, where = 'created') {
    if (Array.isArray(value)) return value.flatMap((item, index) => identities(item, `${where}[${index}]`));
    if (!value || typeof value !== 'object') return [];
    return Object.entries(value).flatMap(([key, inner]) => (
        ['id', 'clientID'].includes(key) ? [`${where}.${key}`] : identities(inner, `${where}.${key}`)));
}

const RUNS = [
    ['forward polygon', recorded('action-export-forward-polygon.json'), 4, 'polygon'],
    ['backward rectangle', recorded('action-export-backward-mask.json', 'backward'), 2, 'rectangle'],
    ['forward mask', recorded('action-export-backward-mask.json', 'mask'), 3, 'mask'],
];

for (const [name, flow, target, type] of RUNS) {
    test(`recorded 2.73 export, ${name}: nothing created carries a server id or a clientID`, async () => {
        const { core, action, job } = await jobOf(flow.exported[0]);
        const { frame } = flow.run[0];
        const [started] = [...flow.run[0].collection.shapes, ...flow.run[0].collection.tracks];
        const filters = [{ '==': [{ var: 'objectID' }, started.clientID] }];
        await quietly(() => runAction(core, action, job, frame, target, { filters }));
        const { created, deleted } = job.commits.at(-1);
        const made = [...created.shapes, ...created.tracks];
        assert.ok(made.length > 0, 'the run created objects');
        assert.deepEqual(identities(created), [], 'created objects are copies without ids');
        assert.ok(created.tracks.every((track) => track.shapes[0].type !== 'mask'), 'no mask tracks');
        if (type === 'mask') {
            const masks = created.shapes.filter((shape) => shape.type === 'mask');
            const span = Math.abs(target - frame) + 1;
            assert.equal(masks.length, span, 'one mask a frame, the start frame included');
            assert.equal(new Set(masks.map((mask) => mask.group)).size, 1, 'one object, one group');
            assert.notEqual(masks[0].group, 0, 'the group ties the masks');
            assert.ok(deleted.shapes.some((shape) => shape.clientID === started.clientID), 'the start mask is replaced');
        } else {
            assert.equal(created.tracks.length, 1);
            assert.equal(created.tracks[0].shapes[0].type, type);
        }
        const saved = job.save(); // annotations-saver.ts: an id it knows is an update
        assert.ok(saved.created >= made.length, JSON.stringify(saved));
        const others = [...flow.exported[0].shapes, ...flow.exported[0].tracks].filter((object) => object.clientID !== started.clientID);
        for (const other of others) {
            assert.ok([...job.store.shapes, ...job.store.tracks].some((object) => object.id === other.id), `saved object ${other.id} kept`);
        }
    });
}
