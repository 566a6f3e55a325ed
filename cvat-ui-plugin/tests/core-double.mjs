// A test double of the cvat-core parts the plugin touches, reproduced from cvat-ai/cvat's sources
// (read, not copied): cvat-core/src/annotations-actions/{base-action,base-collection-action,
// annotations-actions}.ts (classes, registration, `run` and `call` of a collection action),
// lambda-manager.ts with server-proxy.ts's `generateError` (how a failed call becomes a
// ServerError with CVAT's text and the status as `code`), and a Job's frames and annotations.
// Works in Node and in a browser (fetch). Simplification: a track's points on a frame are its
// keyframe at or before the frame (CVAT interpolates between keyframes; tests start on keyframes).

export class ServerError extends Error {
    constructor(message, code) {
        super(message);
        this.code = code;
    }
}

export class ArgumentError extends Error {}

export class BaseAction {}
export class BaseCollectionAction extends BaseAction {}

function prepareActionParameters(declared, defined, instance) {
    const result = {};
    for (const [name, { type, defaultValue }] of Object.entries(declared ?? {})) {
        const fallback = typeof defaultValue === 'function' ? defaultValue({ instance }) : defaultValue;
        const value = Object.hasOwn(defined, name) ? defined[name] : fallback;
        result[name] = type === 'number' ? +value : value;
    }
    return result;
}

async function lambdaCall(baseURL, model, body) {
    let response;
    try {
        response = await fetch(`${baseURL}/api/lambda/functions/${model.id}`, {
            method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
        });
    } catch (error) {
        throw new ServerError(`${error.message}.`, 0); // no response at all ("Network Error.")
    }
    const data = await response.json();
    if (!response.ok) {
        if (typeof data === 'string') throw new ServerError(data, response.status);
        for (const field of ['non_field_errors', 'detail', 'message']) {
            if (data && field in data) throw new ServerError(String(data[field]), response.status);
        }
        throw new ServerError(response.statusText, response.status);
    }
    return data;
}

export class Job {
    // frames: [{width, height, deleted}] of the task; one job over all of them.
    constructor({ id, taskId, frames }) {
        Object.assign(this, { id, taskId, startFrame: 0, stopFrame: frames.length - 1 });
        this.frameMeta = frames;
        this.store = { shapes: [], tracks: [] };
        this.nextID = 1;
        this.commits = 0;
        this.frames = {
            get: async (frame) => {
                const meta = this.frameMeta[frame];
                return { number: frame, width: meta.width, height: meta.height, deleted: !!meta.deleted };
            },
            frameNumbers: async () => this.frameMeta.map((_, index) => index),
        };
        this.annotations = {
            get: async (frame) => this.statesOn(frame),
            commit: async (created, deleted) => this.commitCollection(created, deleted),
        };
    }

    add(object) {
        const copy = { ...structuredClone(object), clientID: this.nextID++ };
        (copy.shapes ? this.store.tracks : this.store.shapes).push(copy);
        return copy.clientID;
    }

    export() {
        return { shapes: structuredClone(this.store.shapes), tags: [], tracks: structuredClone(this.store.tracks) };
    }

    statesOn(frame) {
        const states = this.store.shapes.filter((shape) => shape.frame === frame).map((shape) => ({
            clientID: shape.clientID, objectType: 'shape', shapeType: shape.type,
            points: [...shape.points], outside: false, export: async () => structuredClone(shape),
        }));
        for (const track of this.store.tracks) {
            const before = track.shapes.filter((shape) => shape.frame <= frame).sort((a, b) => a.frame - b.frame);
            const shown = before[before.length - 1];
            if (!shown || shown.outside) continue;
            states.push({
                clientID: track.clientID, objectType: 'track', shapeType: shown.type,
                points: [...shown.points], outside: false, export: async () => structuredClone(track),
            });
        }
        return states;
    }

    // annotations.commit: `deleted` removed by clientID, `created` added with new clientIDs.
    commitCollection(created, deleted) {
        const gone = new Set([...deleted.shapes, ...deleted.tracks].map((object) => object.clientID));
        this.store.shapes = this.store.shapes.filter((shape) => !gone.has(shape.clientID));
        this.store.tracks = this.store.tracks.filter((track) => !gone.has(track.clientID));
        [...created.shapes, ...created.tracks].forEach((object) => this.add(object));
        this.commits += 1;
    }
}

/**
 * `signedIn: false`: CVAT before sign-in, where cvat-ui fires `plugins.ready`
 * (plugins-entrypoint.tsx) and the server answers `GET /api/lambda/functions` with 401, which
 * server-proxy.ts's generateError turns into a ServerError with code 401; `core.signIn()` ends it.
 */
export function makeCore(baseURL, { signedIn = true } = {}) {
    const registered = [];
    const session = { signedIn };

    async function runCollection(instance, action, parameters, frame, collection, onProgress, cancelled) {
        try {
            await action.init(instance, prepareActionParameters(action.parameters, parameters, instance));
            const frameData = await instance.frames.get(frame);
            const filtered = action.applyFilter({ collection, frameData });
            const { created, deleted } = await action.run({
                collection: filtered,
                frameData: { width: frameData.width, height: frameData.height, number: frameData.number },
                onProgress,
                cancelled,
            });
            await instance.annotations.commit(created, deleted, frame);
        } finally {
            await action.destroy();
        }
    }

    return {
        lambda: {
            async list() {
                if (!session.signedIn) throw new ServerError('Authentication credentials were not provided.', 401);
                const response = await fetch(`${baseURL}/api/lambda/functions`);
                const models = await response.json();
                return { models, count: models.length };
            },
            async call(taskID, model, args) {
                if (!Number.isInteger(taskID) || taskID < 0) throw new ArgumentError(`Bad taskID ${taskID}`);
                return lambdaCall(baseURL, model, { ...args, task: taskID });
            },
        },
        actions: {
            async list() {
                return [...registered];
            },
            async register(action) {
                if (!(action instanceof BaseAction)) throw new ArgumentError('Provided action must inherit one of base classes');
                if (registered.some((other) => other.name === action.name)) {
                    throw new ArgumentError(`Action name must be unique. Name "${action.name}" is already exists`);
                }
                registered.push(action);
            },
            async unregister(action) {
                // annotations-actions.ts's unregisterAction: an unknown action is an ArgumentError.
                const index = registered.indexOf(action);
                if (index === -1) throw new ArgumentError(`Action "${action.name}" was not registered`);
                registered.splice(index, 1);
            },
            // The actions modal without selected objects: the job's whole collection.
            async run(instance, action, parameters, frame, onProgress, cancelled) {
                return runCollection(instance, action, parameters, frame, instance.export(), onProgress, cancelled);
            },
            // From an object's menu: only the objects given.
            async call(instance, action, parameters, frame, states, onProgress, cancelled) {
                const collection = { shapes: [], tags: [], tracks: [] };
                for (const state of states) {
                    const value = await state.export();
                    (state.objectType === 'track' ? collection.tracks : collection.shapes).push(value);
                }
                return runCollection(instance, action, parameters, frame, collection, onProgress, cancelled);
            },
        },
        signIn() {
            session.signedIn = true;
        },
        classes: { BaseCollectionAction, Job },
        exceptions: { ServerError, ArgumentError },
    };
}
