// Registration from core.lambda.list() and which objects the action applies to.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Job, makeCore } from './core-double.mjs';
import { ACTION_NAME, FUNCTION, TARGET_FRAME, TO_TRACKS, makeActionClass, setUp } from '../dist/plugin.mjs';
import { BASE_URL, quietly } from './helpers.mjs';

const SAM2 = { id: 'cvat-sam2-tracker', kind: 'tracker', name: 'SAM2 tracker (cvat-sam2-tracker)' };
const PROXY = { id: 'cvat-sam2-tracker-proxy', kind: 'tracker', name: 'SAM2 tracker (proxy)' };

function withFunctions(models) {
    const core = makeCore(BASE_URL);
    return { ...core, lambda: { ...core.lambda, list: async () => ({ models, count: models.length }) } };
}


test('registers one action for the SAM2 trackers CVAT lists (the stand-in\'s list)', async () => {
    const core = makeCore(BASE_URL);
    const { result: action } = await quietly(() => setUp(core));
    assert.equal(action.name, ACTION_NAME);
    assert.deepEqual((await core.actions.list()).map((a) => a.name), [ACTION_NAME]);
    assert.ok(action instanceof core.classes.BaseCollectionAction);
    assert.equal(action.parameters[FUNCTION], undefined, 'one function: nothing to choose');
});

test('no SAM2 function deployed: no action, and a console line saying why', async () => {
    const core = withFunctions([{ id: 'openvino-yolo', kind: 'detector', name: 'YOLO' }, { id: 'pth-siammask', kind: 'tracker', name: 'SiamMask' }]);
    const { result, lines } = await quietly(() => setUp(core));
    assert.equal(result, null);
    assert.deepEqual(await core.actions.list(), []);
    assert.match(lines.join('\n'), /no SAM2 tracker function .* is deployed/);
});

test('several SAM2 functions: one action, the function is a parameter', async () => {
    const core = withFunctions([SAM2, PROXY]);
    const { result: action } = await quietly(() => setUp(core));
    assert.equal((await core.actions.list()).length, 1);
    assert.deepEqual(action.parameters[FUNCTION].values, [SAM2.id, PROXY.id]);
    const job = new Job({ id: 7, taskId: 1, frames: Array.from({ length: 10 }, () => ({ width: 8, height: 8 })) });
    assert.equal(action.parameters[TARGET_FRAME].defaultValue({ instance: job }), '9', 'the job\'s last frame');
    assert.deepEqual(action.parameters[TARGET_FRAME].values({ instance: job }), ['0', '9', '1']);
    assert.equal(action.parameters[TO_TRACKS].type, 'checkbox');
});

test('applies to rectangles, polygons and masks, shapes and tracks; nothing else', () => {
    const Action = makeActionClass(makeCore(BASE_URL));
    const action = new Action([SAM2]);
    for (const objectType of ['shape', 'track']) {
        for (const shapeType of ['rectangle', 'polygon', 'mask']) {
            assert.ok(action.isApplicableForObject({ objectType, shapeType }), `${objectType} ${shapeType}`);
        }
        for (const shapeType of ['points', 'polyline', 'ellipse', 'cuboid', 'skeleton']) {
            assert.ok(!action.isApplicableForObject({ objectType, shapeType }), `${objectType} ${shapeType}`);
        }
    }
    assert.ok(!action.isApplicableForObject({ objectType: 'tag', shapeType: null }));
});

test('with nothing selected: the visible objects of those types on the current frame', () => {
    const Action = makeActionClass(makeCore(BASE_URL));
    const action = new Action([SAM2]);
    const shape = (type, frame) => ({ type, frame, points: [1, 2, 3, 4] });
    const track = (type, keys) => ({ shapes: keys.map(([frame, outside]) => ({ type, frame, outside, points: [] })) });
    const collection = {
        shapes: [shape('polygon', 3), shape('mask', 3), shape('rectangle', 3), shape('points', 3), shape('polygon', 4)],
        tags: [{ frame: 3 }],
        tracks: [track('rectangle', [[0, false]]), track('polygon', [[0, false], [2, true]]), track('mask', [[5, false]]), track('ellipse', [[0, false]])],
    };
    const filtered = action.applyFilter({ collection, frameData: { number: 3, width: 8, height: 8 } });
    assert.deepEqual(filtered.shapes.map((s) => s.type), ['polygon', 'mask', 'rectangle']);
    assert.deepEqual(filtered.tags, []);
    assert.deepEqual(filtered.tracks.map((t) => t.shapes[0].type), ['rectangle']);
});
