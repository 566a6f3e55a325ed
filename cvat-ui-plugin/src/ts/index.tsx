// Entry of the CVAT UI plugin: on cvat-ui's `plugins.ready` event it registers a component
// builder with `window.cvatUI.registerComponent` (cvat-ui/src/components/plugins-entrypoint.tsx),
// looks for this project's SAM2 tracker functions among `core.lambda.list()` and registers one
// annotation action for them with `core.actions.register`.

import type { ComponentBuilder, CoreLike, MLModelLike } from './cvat-types';
import { ACTION_NAME, makeActionClass } from './action';

export const PLUGIN_NAME = 'SAM2 tracker (cvat-sam2-tracker)';

/**
 * This project's tracker functions: kind 'tracker' and the Nuclio names of
 * serverless/sam2/tracker (function.yaml, function-gpu.yaml, function-proxy.yaml), whose ids
 * start with 'cvat-sam2-tracker' (CVAT lists a Nuclio function by its metadata name).
 */
export function sam2Trackers(models: MLModelLike[]): MLModelLike[] {
    return models.filter((model) => model.kind === 'tracker' && model.id.startsWith('cvat-sam2-tracker'));
}

/** Find the functions and register the action; resolves to the action, or null with a console line. */
export async function setUp(core: CoreLike): Promise<unknown> {
    let models: MLModelLike[];
    try {
        ({ models } = await core.lambda.list());
    } catch (error) {
        console.warn(`${PLUGIN_NAME}: no "${ACTION_NAME}" action: CVAT's function list could not be read (${String(error)}).`);
        return null;
    }
    const trackers = sam2Trackers(models);
    if (!trackers.length) {
        console.info(
            `${PLUGIN_NAME}: no "${ACTION_NAME}" action: no SAM2 tracker function (a Nuclio function named `
            + `cvat-sam2-tracker*) is deployed in this CVAT; deploy serverless/sam2/tracker and reload.`,
        );
        return null;
    }
    const Action = makeActionClass(core);
    const action = new Action(trackers);
    await core.actions.register(action);
    console.info(`${PLUGIN_NAME}: "${ACTION_NAME}" registered for ${trackers.map((model) => model.id).join(', ')}.`);
    return action;
}

const builder: ComponentBuilder = ({ core }) => {
    const registered = setUp(core);
    return {
        name: PLUGIN_NAME,
        destructor: () => {
            registered.then((action) => {
                if (action && core.actions.unregister) {
                    return core.actions.unregister(action as Parameters<CoreLike['actions']['register']>[0]);
                }
                return undefined;
            }).catch(() => undefined);
        },
    };
};

function register(): void {
    const ui = (window as unknown as { cvatUI?: { registerComponent(builder: ComponentBuilder): void } }).cvatUI;
    if (ui) ui.registerComponent(builder);
}

if (typeof window !== 'undefined') {
    window.addEventListener('plugins.ready', register, { once: true });
}

// For the plugin's tests (the bundle cvat-ui loads ignores them).
export { ACTION_NAME, FUNCTION, TARGET_FRAME, TO_TRACKS, makeActionClass } from './action';
export { checkedAnswer, failureMessage, framesToWalk, walk } from './tracking';
