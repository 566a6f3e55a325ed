// The tracking walk: one tracker request per frame for all objects, over CVAT's lambda endpoint.
//
// CVAT's `POST /api/lambda/functions/{id}` takes `{task, job, frame, shapes, states}`, sends the
// function `{image, shapes, states}` (the frame's image read by CVAT, the states it signed
// unsigned again) and hands back `{shapes, states, ...}` with the states signed. States are
// opaque here: what one answer gives is what the next request sends. Our tracker also answers
// `outside` (true where SAM2 sees no object on the frame; `shapes` then repeats the last one).
// Every start shape carries its `frame`; a shape with its `frame` beside the object's state
// prompts that object again there (the README's "Prompting an object again"), which is how the
// walk conditions SAM2 on a track's earlier keyframes before it starts walking.

import type { ShapeKind } from './cvat-types';

export interface PromptShape {
    type: ShapeKind;
    points: number[];
}

export interface ObjectOnFrame {
    points: number[];
    outside: boolean;
}

/** The objects prompted on one earlier frame: `objects[index]` drawn there as `shape`. */
export interface EarlierFrame {
    frame: number;
    prompts: { index: number; shape: PromptShape }[];
}

export interface FrameResult {
    frame: number;
    objects: ObjectOnFrame[];
}

export interface WalkOptions {
    /** `core.lambda.call(taskID, model, args)` bound to the task and the model. */
    call(args: { frame: number; shapes: (PromptShape | null)[]; states: unknown[] }): Promise<unknown>;
    startFrame: number;
    /** Frames to track, in the order to walk them (backward runs come in decreasing order). */
    frames: number[];
    isDeleted(frame: number): Promise<boolean>;
    objects: PromptShape[];
    /**
     * Earlier keyframes to condition on first, one request per frame in walking order (farthest
     * first), each with the objects prompted there (by index into `objects`). Each object is
     * started on its first such frame and prompted again on its later ones and on `startFrame`.
     */
    earlier?: EarlierFrame[];
    cancelled(): boolean;
    onProgress(message: string, percent: number): void;
}

/** An error with a message for the user (CVAT shows it in its notification). */
export class TrackingError extends Error {}

const STATUS_ADVICE: Record<number, string> = {
    400: 'The tracker refused the request: the shape on the start frame cannot be tracked, or a '
        + 'tracking state has expired. Redraw the shape or run the action again from this frame.',
    404: 'The tracker no longer knows this object (its state expired or the function restarted '
        + 'without Redis). Run the action again from this frame.',
    409: 'Another request is tracking the same object at this moment. Wait for it, then run '
        + 'the action again from this frame.',
    410: 'The tracker dropped this object to stay within its memory budget. Run the action again '
        + 'from this frame, or give the function a larger SAM2_MAX_STATE_MEMORY_MB.',
    500: 'The SAM2 tracker failed internally; its log (docker logs of the Nuclio function) has '
        + 'the details.',
    502: 'The SAM2 proxy cannot reach its tracking server; check SAM2_SERVER_URL and the server.',
    503: 'The SAM2 tracker or CVAT could not serve the request (its connection to Redis was lost, '
        + 'Redis down, out of GPU memory or the function not running). Run the action again from '
        + 'this frame; if it fails again, check the function.',
    504: 'The SAM2 tracker took too long to answer. Track fewer objects at once or use a smaller '
        + 'SAM2_IMAGE_SIZE, then run the action again.',
};

/** The user's message for a failed `core.lambda.call` (a cvat-core ServerError or any error). */
export function failureMessage(error: unknown, frame: number): string {
    const code = typeof (error as { code?: unknown })?.code === 'number' ? (error as { code: number }).code : null;
    const text = error instanceof Error ? error.message : String(error);
    const where = `SAM2 tracking stopped at frame ${frame}; nothing was saved.`;
    if (code === 0) {
        return `${where} CVAT could not be reached (${text}). Check the connection and run the action again.`;
    }
    if (code !== null) {
        const advice = STATUS_ADVICE[code] ?? STATUS_ADVICE[code >= 500 ? 500 : 400];
        return `${where} ${advice} (CVAT answered ${code}: ${text})`;
    }
    return `${where} ${text}`;
}

function isNumberArray(value: unknown): value is number[] {
    return Array.isArray(value) && value.every((item) => typeof item === 'number' && Number.isFinite(item));
}

/** Check a tracker answer's shape; a wrong one stops the run with a message. */
export function checkedAnswer(answer: unknown, count: number, frame: number): {
    objects: ObjectOnFrame[];
    states: unknown[];
} {
    const wrong = (what: string): TrackingError => new TrackingError(
        `SAM2 tracking stopped at frame ${frame}; nothing was saved. The function answered ${what}: `
        + 'is the selected function this project\'s SAM2 tracker, deployed in a matching version?',
    );
    if (typeof answer !== 'object' || answer === null) throw wrong('no JSON object');
    const { shapes, states, outside } = answer as { shapes?: unknown; states?: unknown; outside?: unknown };
    if (!Array.isArray(shapes) || !Array.isArray(states)) throw wrong('without "shapes" and "states"');
    if (shapes.length !== count || states.length !== count) {
        throw wrong(`${shapes.length} shapes and ${states.length} states for ${count} objects`);
    }
    if (outside !== undefined && !(Array.isArray(outside) && outside.length === count
        && outside.every((item) => typeof item === 'boolean'))) {
        throw wrong('an "outside" that is not one boolean per object');
    }
    const objects = shapes.map((shape: unknown) => {
        const points = Array.isArray(shape) ? shape : (shape as { points?: unknown } | null)?.points;
        if (!isNumberArray(points)) throw wrong('a shape without numeric points');
        return points;
    }).map((points, index) => ({ points, outside: Array.isArray(outside) ? outside[index] : false }));
    if (states.some((state) => state === null || state === undefined)) throw wrong('an empty state');
    return { objects, states };
}

async function called(
    options: WalkOptions, frame: number, shapes: (PromptShape | null)[], states: unknown[],
): Promise<unknown> {
    try {
        return await options.call({ frame, shapes, states });
    } catch (error) {
        throw new TrackingError(failureMessage(error, frame));
    }
}

/** A prompt on `frame`: the shape with its frame number (a start, or beside a state a prompt again). */
function framed(shape: PromptShape, frame: number): PromptShape & { frame: number } {
    return { type: shape.type, points: [...shape.points], frame };
}

/**
 * Condition on the earlier keyframes (one request per frame, only the objects prompted there),
 * then prompt every object on the start frame: the states to walk on, or null when cancelled.
 */
async function prompted(options: WalkOptions): Promise<unknown[] | null> {
    const { objects, startFrame } = options;
    const earlier = options.earlier ?? [];
    const states: unknown[] = objects.map(() => null);
    for (const [number, { frame, prompts }] of earlier.entries()) {
        if (options.cancelled()) return null;
        options.onProgress(`SAM2: conditioning on earlier keyframes: frame ${frame} `
            + `(${number + 1} of ${earlier.length}, ${prompts.length} object(s))`, 0);
        const answer = await called(options, frame, prompts.map(({ shape }) => framed(shape, frame)),
            prompts.map(({ index }) => states[index]));
        checkedAnswer(answer, prompts.length, frame).states.forEach((state, at) => { states[prompts[at].index] = state; });
    }
    options.onProgress(`SAM2: starting ${objects.length} object(s) on frame ${startFrame}`, 0);
    if (options.cancelled()) return null;
    const started = await called(options, startFrame, objects.map((shape) => framed(shape, startFrame)), states);
    return checkedAnswer(started, objects.length, startFrame).states;
}

/**
 * Condition on the earlier keyframes, start (or prompt again) every object on the start frame,
 * then step them all frame by frame, one request per frame. Returns each tracked frame's
 * objects, or null when cancelled (between requests).
 */
export async function walk(options: WalkOptions): Promise<FrameResult[] | null> {
    const count = options.objects.length;
    const kept = [];
    for (const frame of options.frames) {
        if (!(await options.isDeleted(frame))) kept.push(frame);
    }
    const total = kept.length;
    let states = await prompted(options);
    if (states === null) return null;
    // A continued object needs no shape: null, as newer CVATs' AI Tools send (CVAT passes
    // `shapes` on as given, so one entry per state keeps the lists of equal length).
    const continued = options.objects.map(() => null);
    const results: FrameResult[] = [];
    for (const [index, frame] of kept.entries()) {
        // Yield to the browser so that the modal's Cancel is seen between frames.
        await new Promise((resolve) => { setTimeout(resolve); });
        if (options.cancelled()) return null;
        options.onProgress(`SAM2: frame ${index + 1} of ${total} (frame ${frame})`, Math.floor((100 * index) / Math.max(total, 1)));
        const answer = checkedAnswer(await called(options, frame, continued, states), count, frame);
        states = answer.states;
        results.push({ frame, objects: answer.objects });
    }
    if (options.cancelled()) return null;
    return results;
}

/** The frames from `start` (excluded) to `target` (included), walking towards the target. */
export function framesToWalk(start: number, target: number, available: number[]): number[] {
    const low = Math.min(start, target);
    const high = Math.max(start, target);
    const frames = available.filter((frame) => frame >= low && frame <= high && frame !== start);
    frames.sort((a, b) => (target >= start ? a - b : b - a));
    return frames;
}
