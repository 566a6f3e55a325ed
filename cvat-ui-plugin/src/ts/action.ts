// The "Segment Anything 2: Tracker" annotation action, a cvat-core BaseCollectionAction.
//
// cvat-core (annotations-actions/base-collection-action.ts) calls `init` with the job and the
// modal's parameters, `applyFilter` with the exported collection and the current frame, then
// (from the actions modal) applies the user's annotation filters, calls `run` and commits what it
// returns (`instance.annotations.commit(created, deleted, frame)`). A cancelled or failed run
// returns nothing or throws before returning, so it changes nothing; what it returns is planned
// and checked in full first (plan.ts). The modal keeps parameters between openings and jobs
// (annotations-actions-modal.tsx), so the direction is a parameter of its own, checked against
// the target frame, never guessed from a target left from an earlier run. A run from the user's
// keyframe conditions SAM2 on the object's earlier manual keyframes too (earlier.ts), unless
// "Condition on earlier keyframes" is off.

import type {
    BaseCollectionActionClass, Collection, CollectionActionInput,
    CollectionActionOutput, CoreLike, MLModelLike, ObjectStateLike,
    SessionLike, ShapeKind, ActionParameters, Sam2TrackerActionLike,
} from './cvat-types';
import { earlierFrames } from './earlier';
import { keyframeAt, plan } from './plan';
import { TrackingError, framesToWalk, walk, type PromptShape } from './tracking';

export const ACTION_NAME = 'Segment Anything 2: Tracker';
export const DIRECTION = 'Direction';
export const FORWARD = 'forward';
export const BACKWARD = 'backward';
export const TARGET_FRAME = 'Target frame';
export const TO_TRACKS = 'Convert shapes to tracks';
export const CONDITION = 'Condition on earlier keyframes';
export const FUNCTION = 'Function';
export const TRACKED_TYPES: readonly string[] = ['rectangle', 'polygon', 'mask'];

function empty(): Collection {
    return { shapes: [], tags: [], tracks: [] };
}

function lastFrame(instance: SessionLike): number {
    return typeof instance.stopFrame === 'number' ? instance.stopFrame : (instance.size ?? 1) - 1;
}

function firstFrame(instance: SessionLike): number {
    return typeof instance.startFrame === 'number' ? instance.startFrame : 0;
}

/** The frames of the job (a Job's segment, not contiguous in ground-truth jobs; a Task's all). */
async function frameList(instance: SessionLike): Promise<number[]> {
    if (!instance.frames.frameNumbers) return Array.from({ length: instance.size ?? 0 }, (_, index) => index);
    const frames = await instance.frames.frameNumbers();
    if (!frames.length) {
        // frames.ts's getJobFrameNumbers: [] until the job's frame cache exists.
        throw new TrackingError('SAM2 tracking did not start; nothing was saved. CVAT has not loaded this job\'s '
            + 'frame list yet: open a frame of the job, then run the action again.');
    }
    return frames;
}

/** The checked parameters (cvat-core's prepareActionParameters gives NaN for a number it lacks). */
function checkedParameters(parameters: Record<string, string | number>): {
    target: number; direction: string; toTracks: boolean; condition: boolean;
} {
    const target = Number(parameters[TARGET_FRAME]);
    if (!Number.isInteger(target) || target < 0) {
        throw new TrackingError(`SAM2 tracking did not start; nothing was saved. "${TARGET_FRAME}" is `
            + `${String(parameters[TARGET_FRAME])}, not a frame number: set it in the action's parameters.`);
    }
    const direction = String(parameters[DIRECTION]);
    if (direction !== FORWARD && direction !== BACKWARD) {
        throw new TrackingError(`SAM2 tracking did not start; nothing was saved. "${DIRECTION}" is `
            + `${direction}: choose ${FORWARD} or ${BACKWARD}.`);
    }
    return {
        target, direction, toTracks: String(parameters[TO_TRACKS]) === 'true',
        condition: String(parameters[CONDITION] ?? 'true') === 'true',
    };
}

/** Build the action class on cvat-core's own BaseCollectionAction (from `core.classes`). */
export function makeActionClass(core: CoreLike): new (models: MLModelLike[]) => Sam2TrackerActionLike {
    const Base = core.classes.BaseCollectionAction as unknown as BaseCollectionActionClass;

    class Sam2TrackerAction extends Base {
        #models: MLModelLike[];
        #instance: SessionLike | null = null;
        #target = 0;
        #direction = FORWARD;
        #toTracks = true;
        #condition = true;
        #model: MLModelLike | null = null;

        constructor(models: MLModelLike[]) {
            super();
            this.#models = models;
        }

        public useModels(models: MLModelLike[]): void {
            if (!models.length) throw new Error('useModels: at least one function is needed');
            this.#models = [...models];
        }

        public get name(): string {
            return ACTION_NAME;
        }

        public get parameters(): ActionParameters {
            const parameters: ActionParameters = {
                [DIRECTION]: { type: 'select', values: [FORWARD, BACKWARD], defaultValue: FORWARD },
                [TARGET_FRAME]: {
                    type: 'number',
                    values: ({ instance }) => [firstFrame(instance), lastFrame(instance), 1].map(String),
                    defaultValue: ({ instance }) => String(lastFrame(instance)),
                },
                [TO_TRACKS]: { type: 'checkbox', values: ['true', 'false'], defaultValue: 'true' },
                [CONDITION]: { type: 'checkbox', values: ['true', 'false'], defaultValue: 'true' },
            };
            if (this.#models.length > 1) {
                parameters[FUNCTION] = {
                    type: 'select',
                    // Ids: the CPU, GPU and proxy files all carry the same display name.
                    values: this.#models.map((model) => model.id),
                    defaultValue: this.#models[0].id,
                };
            }
            return parameters;
        }

        public async init(instance: SessionLike, parameters: Record<string, string | number>): Promise<void> {
            this.#instance = instance;
            ({
                target: this.#target, direction: this.#direction, toTracks: this.#toTracks, condition: this.#condition,
            } = checkedParameters(parameters));
            const chosen = parameters[FUNCTION];
            this.#model = this.#models.find((model) => model.id === chosen) ?? this.#models[0];
        }

        public async destroy(): Promise<void> {
            this.#instance = null;
        }

        public isApplicableForObject(objectState: ObjectStateLike): boolean {
            return objectState.objectType !== 'tag' && TRACKED_TYPES.includes(objectState.shapeType ?? '');
        }

        public applyFilter(
            { collection, frameData }: Pick<CollectionActionInput, 'collection' | 'frameData'>,
        ): Collection {
            const frame = frameData.number;
            return {
                shapes: collection.shapes.filter((shape) => shape.frame === frame && TRACKED_TYPES.includes(shape.type)),
                tags: [],
                tracks: collection.tracks.filter((track) => {
                    const shown = keyframeAt(track, frame);
                    return shown !== null && !shown.outside && TRACKED_TYPES.includes(track.shapes[0].type);
                }),
            };
        }

        public async run(input: CollectionActionInput): Promise<CollectionActionOutput> {
            const instance = this.#instance;
            const model = this.#model;
            const start = input.frameData.number;
            const target = this.#target;
            if (!instance || !model) return { created: empty(), deleted: empty() };
            const forward = this.#direction === FORWARD;
            if (forward ? target <= start : target >= start) {
                throw new TrackingError(`SAM2 tracking did not start; nothing was saved. "${DIRECTION}" is `
                    + `${this.#direction} but "${TARGET_FRAME}" ${target} is ${target === start ? 'the current frame' : (forward ? 'before' : 'after')} `
                    + `${start}: choose a target ${forward ? 'after' : 'before'} the current frame or the other direction.`);
            }
            const jobFrames = await frameList(instance);
            const frames = framesToWalk(start, target, jobFrames);
            const states = await instance.annotations.get(start, false, []);
            const byID = new Map(states.map((state) => [state.clientID, state]));
            const candidates = [...input.collection.shapes, ...input.collection.tracks]
                .map((object) => ({ object, state: byID.get(object.clientID ?? null) }))
                .filter(({ state }) => state?.points && TRACKED_TYPES.includes(state.shapeType ?? ''));
            const objects = candidates.filter(({ state }) => !state!.lock); // locked: left alone
            if (candidates.length && !objects.length) {
                throw new TrackingError('SAM2 tracking did not start; nothing was saved. The object is locked: '
                    + 'unlock it to track it.');
            }
            if (!objects.length || !frames.length) return { created: empty(), deleted: empty() };
            const prompts: PromptShape[] = objects.map(({ state }) => ({
                type: state!.shapeType as ShapeKind, points: [...state!.points!],
            }));
            const exported = instance.annotations.export ? await instance.annotations.export() : null;
            const isDeleted = async (frame: number): Promise<boolean> => (await instance.frames.get(frame)).deleted;
            const ofJob = new Set(jobFrames);
            const earlier = this.#condition ? await earlierFrames({
                start, forward, shapes: exported?.shapes ?? [],
                usable: async (frame) => ofJob.has(frame) && !(await isDeleted(frame)),
                objects: objects.map(({ object }, index) => ({ object, type: prompts[index].type })),
            }) : [];
            const taskID = instance.taskId ?? instance.id;
            const results = await walk({
                call: (args) => core.lambda.call(taskID, model, {
                    ...args, ...(instance.taskId !== undefined ? { job: instance.id } : {}),
                }),
                startFrame: start,
                frames,
                isDeleted,
                objects: prompts,
                earlier,
                cancelled: input.cancelled,
                onProgress: input.onProgress,
            });
            if (results === null) return { created: empty(), deleted: empty() };
            const locked = new Set<number>();
            for (const frame of frames) {
                for (const state of await instance.annotations.get(frame, false, [])) {
                    if (state.lock && state.clientID !== null) locked.add(state.clientID);
                }
            }
            return plan({
                start, target, toTracks: this.#toTracks, locked,
                objects: objects.map(({ object, state }) => ({ object, points: [...state!.points!] })),
                results, shapes: exported?.shapes ?? [],
            });
        }
    }

    return Sam2TrackerAction;
}
