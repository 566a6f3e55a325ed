// Shared set-up of the plugin's Node tests: the stand-in's address (from pytest), a job with the
// task's frames, the three object kinds drawn on a frame, and running the action as the modal does.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { Job, makeCore } from './core-double.mjs';
import {
    ACTION_NAME, CONDITION, DIRECTION, FUNCTION, TARGET_FRAME, TO_TRACKS, setUp,
} from '../dist/plugin.mjs';

export { ACTION_NAME, CONDITION, DIRECTION, FUNCTION, TARGET_FRAME, TO_TRACKS };
export const BASE_URL = process.env.STANDIN_URL;
if (!BASE_URL) throw new Error('STANDIN_URL is not set: run these tests through `python -m pytest`');

/** What `work` resolves to, and the lines it wrote with console.info and console.warn (kept off
 * the test output). */
export async function quietly(work) {
    const lines = [];
    const { info: infoLine, warn } = console;
    console.info = (line) => lines.push(line);
    console.warn = (line) => lines.push(line);
    try {
        return { result: await work(), lines };
    } finally {
        Object.assign(console, { info: infoLine, warn });
    }
}

export async function info() {
    return (await fetch(`${BASE_URL}/standin/info`)).json();
}

export async function post(route, body = {}) {
    const response = await fetch(`${BASE_URL}/standin/${route}`, { method: 'POST', body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`stand-in ${route}: ${response.status}`);
}

/** A core double with the action registered, and a job whose objects were drawn on `frame`. */
export async function setting(frame, { kinds = ['polygon', 'mask', 'rectangle'], asTracks = false, models = null, saved = false } = {}) {
    let core = makeCore(BASE_URL);
    if (models) core = { ...core, lambda: { ...core.lambda, list: async () => ({ models, count: models.length }) } };
    const action = await setUp(core);
    const { frames, width, height, prompts, taskId, jobId } = await info();
    const job = new Job({ id: jobId, taskId, frames: Array.from({ length: frames }, () => ({ width, height })) });
    kinds.forEach((kind, index) => {
        const points = prompts[String(frame)][kind];
        const common = { label_id: 1, group: 0, source: 'manual', attributes: [], elements: [] };
        const shape = { type: kind, frame, occluded: false, outside: false, z_order: index, rotation: 0, points };
        job.add(asTracks ? { ...common, frame, shapes: [{ ...shape, attributes: [] }] } : { ...common, ...shape }, { saved });
    });
    await post('reset');
    return { core, action, job };
}

/**
 * The actions modal's Run with nothing selected (core.actions.run, frameFrom = frameTo = the
 * current frame for a collection action). `cancelAfter`: the user presses Cancel once "frame n
 * of" has been reported (`cancelWhen`: once a message it accepts has). `direction`: the one
 * towards the target unless given.
 */
export async function runAction(core, action, job, frame, target, {
    toTracks = true, cancelAfter = null, fn = null, direction = null, filters = [], condition = true,
    cancelWhen = null,
} = {}) {
    const progress = [];
    const stop = cancelWhen ?? ((message) => cancelAfter !== null && message.includes(`frame ${cancelAfter} of`));
    const cancelled = () => progress.some(([message]) => stop(message));
    const parameters = {
        [DIRECTION]: direction ?? (target >= frame ? 'forward' : 'backward'),
        [TARGET_FRAME]: String(target), [TO_TRACKS]: String(toTracks), [CONDITION]: String(condition),
        ...(fn ? { [FUNCTION]: fn } : {}),
    };
    await core.actions.run(job, action, parameters,
        frame, frame, filters, (message, percent) => progress.push([message, percent]), cancelled);
    return progress;
}

/**
 * The actions modal's parameters as annotations-actions-modal.tsx keeps them: in a store that
 * outlives the modal (kept between openings and jobs); each parameter shows the kept value or
 * its default, and what it shows is sent.
 */
export class Modal {
    constructor(core) {
        this.core = core;
        this.kept = {};
    }

    shown(action, job) {
        const values = {};
        for (const [name, { defaultValue }] of Object.entries(action.parameters ?? {})) {
            values[name] = this.kept[action.name]?.[name]
                ?? (typeof defaultValue === 'function' ? defaultValue({ instance: job }) : defaultValue);
        }
        this.kept[action.name] = { ...values };
        return values;
    }

    set(action, name, value) {
        this.kept[action.name] = { ...this.kept[action.name], [name]: String(value) };
    }

    async run(job, action, frame) {
        return this.core.actions.run(job, action, this.shown(action, job), frame, frame, [], () => {}, () => false);
    }
}

export function keyframes(track) {
    return track.shapes.map((shape) => shape.frame);
}

/** Record what the plugin committed, for pytest's comparison with direct tracker calls. */
export function record(name, value) {
    if (process.env.RESULTS_DIR) writeFileSync(path.join(process.env.RESULTS_DIR, `${name}.json`), JSON.stringify(value));
}
