// Registration across sign-in and later deployments (issue 24 D2). cvat-ui fires `plugins.ready`
// once, before the login page (cvat-ui/src/components/plugins-entrypoint.tsx), when CVAT answers
// the function list with 401; it then calls each plugin's `globalStateDidUpdate(state)` on every
// store update (cvat-ui/src/cvat-store.ts). The double answers 401 until `core.signIn()`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ArgumentError, ServerError, makeCore } from './core-double.mjs';
import { ACTION_NAME, FUNCTION, builder, Registration } from '../dist/plugin.mjs';
import { BASE_URL, quietly } from './helpers.mjs';

const SAM2 = { id: 'cvat-sam2-tracker', kind: 'tracker', name: 'SAM2 tracker (cvat-sam2-tracker)' };
const GPU = { id: 'cvat-sam2-tracker-gpu', kind: 'tracker', name: 'SAM2 tracker (cvat-sam2-tracker)' };

/** A core double whose function list is `deployed` (changed by the test), 401 before sign-in. */
function withDeployed(deployed, options) {
    const core = makeCore(BASE_URL, options);
    const { list } = core.lambda;
    const calls = { count: 0 };
    core.lambda = {
        ...core.lambda,
        async list() {
            calls.count += 1;
            await list.call(core.lambda).catch((error) => { if (error instanceof ServerError && error.code === 401) throw error; });
            return { models: [...deployed], count: deployed.length };
        },
    };
    return { core, calls };
}


const names = async (core) => (await core.actions.list()).map((action) => action.name);

test('plugins.ready before sign-in (401): the action is registered once a user signs in, without a reload', async () => {
    const { core } = withDeployed([SAM2], { signedIn: false });
    const registration = new Registration(core);
    const { lines } = await quietly(() => registration.look());
    assert.deepEqual(await names(core), []);
    assert.match(lines.join('\n'), /before sign-in; it looks again after sign-in/);

    await quietly(async () => {
        await registration.onState({ auth: { user: null } }); // the login page: no look
        core.signIn();
        await registration.onState({ auth: { user: { id: 1 } }, models: { trackers: [] } });
    });
    assert.deepEqual(await names(core), [ACTION_NAME]);
});

test('globalStateDidUpdate looks only when the user, the model list or the job changed', async () => {
    const { core, calls } = withDeployed([SAM2]);
    const registration = new Registration(core);
    const user = { id: 1 };
    const trackers = [];
    await quietly(async () => {
        for (let index = 0; index < 50; index += 1) await registration.onState({ auth: { user }, models: { trackers } });
    });
    assert.equal(calls.count, 1, 'one look for 50 equal states');
    assert.deepEqual(await names(core), [ACTION_NAME]);
});

test('a function deployed later appears without a reload; a second one becomes a choice', async () => {
    const deployed = [];
    const { core } = withDeployed(deployed);
    const registration = new Registration(core);
    const user = { id: 1 };
    await quietly(async () => {
        await registration.onState({ auth: { user }, models: { trackers: [] } });
    });
    assert.deepEqual(await names(core), [], 'nothing deployed yet');

    deployed.push(SAM2);
    await quietly(async () => {
        await registration.onState({ auth: { user }, models: { trackers: [SAM2] } }); // the Models page
    });
    assert.deepEqual(await names(core), [ACTION_NAME]);
    const [action] = await core.actions.list();
    assert.equal(action.parameters[FUNCTION], undefined);

    deployed.push(GPU);
    await quietly(async () => {
        await registration.onState({ auth: { user }, models: { trackers: [SAM2, GPU] }, annotation: { job: { instance: {} } } });
    });
    assert.deepEqual(await names(core), [ACTION_NAME], 'still one action');
    assert.deepEqual((await core.actions.list())[0].parameters[FUNCTION].values, [SAM2.id, GPU.id]);
});

test('cvat-ui\'s builder: registered after sign-in through globalStateDidUpdate, unregistered by the destructor', async () => {
    const { core } = withDeployed([SAM2], { signedIn: false });
    await quietly(async () => {
        const plugin = builder({ core });
        await plugin.globalStateDidUpdate({ auth: { user: null } });
        assert.deepEqual(await names(core), []);
        core.signIn();
        await plugin.globalStateDidUpdate({ auth: { user: { id: 1 } } });
        assert.deepEqual(await names(core), [ACTION_NAME]);
        await plugin.destructor();
        assert.deepEqual(await names(core), []);
        await plugin.destructor(); // cvat-ui may call it again: nothing left to unregister
    });
});

test('the destructor unregisters only what it registered (cvat-core throws on an unknown action)', async () => {
    const { core } = withDeployed([SAM2]);
    const registration = new Registration(core);
    await quietly(() => registration.look());
    const [action] = await core.actions.list();
    await registration.destroy();
    await assert.rejects(core.actions.unregister(action), ArgumentError);
    await registration.destroy();
    assert.deepEqual(await names(core), []);
});
