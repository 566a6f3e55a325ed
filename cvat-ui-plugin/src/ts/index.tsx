// Entry of the CVAT UI plugin: on cvat-ui's `plugins.ready` event it registers a component
// builder with `window.cvatUI.registerComponent` (cvat-ui/src/components/plugins-entrypoint.tsx),
// looks for this project's SAM2 tracker functions among `core.lambda.list()` and registers one
// annotation action for them with `core.actions.register`.

import type { ComponentBuilder, CoreLike, MLModelLike, Sam2TrackerActionLike } from './cvat-types';
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

/** The parts of cvat-ui's store state (reducers/index.ts, CombinedState) that start a look. */
export interface StoreStateLike {
    auth?: { user?: unknown };
    models?: { trackers?: unknown };
    annotation?: { job?: { instance?: unknown } };
}

/**
 * Keeps the action registered for the SAM2 functions CVAT lists. cvat-ui fires `plugins.ready`
 * once, before the login page (plugins-entrypoint.tsx), when `lambda.list` answers 401; it then
 * calls `globalStateDidUpdate(state)` on every store update (cvat-store.ts). A look (one
 * `lambda.list`) runs at the start, and again whenever a signed-in state shows a new user, a new
 * model list (cvat-ui fetches it after sign-in and on the Models page) or a newly opened job: so
 * the action appears after sign-in, and a function deployed later appears without a reload. The
 * registered action's function list is updated in place; with no function left it is unregistered.
 * One look at a time; a trigger during a look runs one more look after it.
 */
export class Registration {
    readonly #core: CoreLike;
    #action: Sam2TrackerActionLike | null = null;
    #looking: Promise<void> | null = null;
    #again = false;
    #seen: unknown[] = [];

    constructor(core: CoreLike) {
        this.#core = core;
    }

    /** The registered action, or null. */
    public get action(): Sam2TrackerActionLike | null {
        return this.#action;
    }

    /** Look now (or once more after the look under way); resolves when no look is under way. */
    public look(): Promise<void> {
        if (this.#looking) {
            this.#again = true;
            return this.#looking;
        }
        this.#looking = (async () => {
            do {
                this.#again = false;
                await this.#lookOnce();
            } while (this.#again);
        })().finally(() => { this.#looking = null; });
        return this.#looking;
    }

    /**
     * cvat-ui's globalStateDidUpdate: look when a signed-in state changed what matters. Resolves
     * when that look (if any) is over (cvat-ui ignores the promise; the tests await it).
     */
    public onState(state: StoreStateLike): Promise<void> {
        const keys = [state?.auth?.user, state?.models?.trackers, state?.annotation?.job?.instance];
        if (keys.every((key, index) => key === this.#seen[index])) return Promise.resolve();
        this.#seen = keys;
        if (!state?.auth?.user) return Promise.resolve();
        return this.look().catch(() => undefined);
    }

    /** cvat-ui's destructor: unregister the action, if any. */
    public async destroy(): Promise<void> {
        await this.#looking;
        const action = this.#action;
        this.#action = null;
        if (action && this.#core.actions.unregister) await this.#core.actions.unregister(action);
    }

    async #lookOnce(): Promise<void> {
        let models: MLModelLike[];
        try {
            ({ models } = await this.#core.lambda.list());
        } catch (error) {
            const when = (error as { code?: unknown })?.code === 401 ? ' before sign-in; it looks again after sign-in' : '';
            console.warn(`${PLUGIN_NAME}: no "${ACTION_NAME}" action yet: CVAT's function list could not be read${when} (${String(error)}).`);
            return;
        }
        const trackers = sam2Trackers(models);
        const ids = trackers.map((model) => model.id).join(', ');
        if (this.#action && trackers.length) {
            this.#action.useModels(trackers);
        } else if (this.#action) {
            const action = this.#action;
            this.#action = null;
            if (this.#core.actions.unregister) await this.#core.actions.unregister(action);
            console.info(`${PLUGIN_NAME}: "${ACTION_NAME}" unregistered: CVAT lists no SAM2 tracker function any more.`);
        } else if (trackers.length) {
            const Action = makeActionClass(this.#core);
            const action = new Action(trackers);
            await this.#core.actions.register(action);
            this.#action = action;
            console.info(`${PLUGIN_NAME}: "${ACTION_NAME}" registered for ${ids}.`);
        } else {
            console.info(
                `${PLUGIN_NAME}: no "${ACTION_NAME}" action: no SAM2 tracker function (a Nuclio function named `
                + 'cvat-sam2-tracker*) is deployed in this CVAT; deploy serverless/sam2/tracker; the plugin '
                + 'looks again after sign-in, on the Models page and when a job opens.',
            );
        }
    }
}

/** One look: resolves to the registered action, or null (the tests' entry). */
export async function setUp(core: CoreLike): Promise<Sam2TrackerActionLike | null> {
    const registration = new Registration(core);
    await registration.look();
    return registration.action;
}

export const builder: ComponentBuilder = ({ core }) => {
    const registration = new Registration(core);
    const first = registration.look().catch(() => undefined);
    return {
        name: PLUGIN_NAME,
        // Both return promises, which cvat-ui ignores and the tests await.
        globalStateDidUpdate: (state: StoreStateLike) => first.then(() => registration.onState(state)),
        destructor: () => registration.destroy().catch(() => undefined),
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
export {
    ACTION_NAME, BACKWARD, CONDITION, DIRECTION, FORWARD, FUNCTION, TARGET_FRAME, TO_TRACKS, makeActionClass,
} from './action';
export { EARLIER_KEYFRAMES } from './earlier';
export { AUTOMATIC_SOURCE, isAutomatic, marked } from './automatic';
export { checkedAnswer, failureMessage, framesToWalk, walk } from './tracking';
