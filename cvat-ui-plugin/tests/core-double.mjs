// A test double of the cvat-core parts the plugin touches, reproduced from cvat-ai/cvat's sources
// (read, not copied): cvat-core/src/annotations-actions/{base-action,base-collection-action,
// annotations-actions}.ts (classes, registration, `run` and `call` of a collection action),
// lambda-manager.ts with server-proxy.ts's `generateError` (how a failed call becomes a
// ServerError with CVAT's text and the status as `code`); a Job in job-double.mjs.
// Works in Node and in a browser (fetch).

import { ArgumentError, Job, ServerError } from './job-double.mjs';

export { ArgumentError, Job, ServerError };

export class BaseAction {}
export class BaseCollectionAction extends BaseAction {}

// base-action.ts's prepareActionParameters: a parameter the modal did not send takes its
// defaultValue as declared, a function included (so a number is then NaN).
function prepareActionParameters(declared, defined) {
    const result = {};
    for (const [name, { type, defaultValue }] of Object.entries(declared ?? {})) {
        const value = Object.hasOwn(defined, name) ? defined[name] : defaultValue;
        result[name] = type === 'number' ? +value : value;
    }
    return result;
}

// annotations-filter.ts's filterSerializedCollection, for JSON Logic's "==", "!=", "and", "or"
// over an object's `shape`, `type` and `objectID` (clientID): filters[0] selects the objects.
function matches(filter, object) {
    const [operator] = Object.keys(filter);
    const value = (term) => (term && typeof term === 'object' && 'var' in term ? object[term.var] : term);
    const [left, right] = filter[operator];
    if (operator === 'and') return filter.and.every((part) => matches(part, object));
    if (operator === 'or') return filter.or.some((part) => matches(part, object));
    if (operator === '==') return value(left) === value(right);
    if (operator === '!=') return value(left) !== value(right);
    throw new Error(`the double has no JSON Logic "${operator}"`);
}

function filterByUser(collection, filters) {
    if (!filters?.[0]) return collection;
    const keep = (type) => (object) => matches(filters[0], {
        shape: object.type ?? object.shapes[0].type, type, objectID: object.clientID,
    });
    return { shapes: collection.shapes.filter(keep('shape')), tags: collection.tags, tracks: collection.tracks.filter(keep('track')) };
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

/**
 * `signedIn: false`: CVAT before sign-in, where cvat-ui fires `plugins.ready`
 * (plugins-entrypoint.tsx) and the server answers `GET /api/lambda/functions` with 401, which
 * server-proxy.ts's generateError turns into a ServerError with code 401; `core.signIn()` ends it.
 */
export function makeCore(baseURL, { signedIn = true } = {}) {
    const registered = [];
    const session = { signedIn };

    async function runCollection(instance, action, parameters, frame, collection, filters, onProgress, cancelled) {
        try {
            await action.init(instance, prepareActionParameters(action.parameters, parameters));
            const frameData = await instance.frames.get(frame);
            const filtered = filterByUser(action.applyFilter({ collection, frameData }), filters);
            for (const object of [...filtered.shapes, ...filtered.tracks]) {
                if (typeof object.clientID !== 'number') throw new Error('ClientID is undefined when running annotations action, but required');
            }
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
            // The actions modal without selected objects: the job's whole collection, then the
            // user's annotation filters (a collection action gets frameFrom === frameTo).
            async run(instance, action, parameters, frameFrom, _frameTo, filters, onProgress, cancelled) {
                return runCollection(instance, action, parameters, frameFrom, instance.export(), filters, onProgress, cancelled);
            },
            // From an object's menu: only the objects given.
            async call(instance, action, parameters, frame, states, onProgress, cancelled) {
                const collection = { shapes: [], tags: [], tracks: [] };
                for (const state of states) {
                    const value = await state.export();
                    (state.objectType === 'track' ? collection.tracks : collection.shapes).push(value);
                }
                return runCollection(instance, action, parameters, frame, collection, [], onProgress, cancelled);
            },
        },
        signIn() {
            session.signedIn = true;
        },
        classes: { BaseCollectionAction, Job },
        exceptions: { ServerError, ArgumentError },
    };
}
