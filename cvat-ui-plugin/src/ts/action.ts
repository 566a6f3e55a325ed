// The "Segment Anything 2: Tracker" annotation action, a cvat-core BaseCollectionAction.
//
// cvat-core calls `init` with the job and the modal's parameters, `applyFilter` with the
// exported collection and the current frame, then `run`, and commits what `run` returns
// (`instance.annotations.commit(created, deleted, frame)`): objects in `deleted` are removed
// by clientID and `created` added, in one step. So a cancelled or failed run, which returns
// nothing or throws before returning, changes nothing.

import type {
    BaseCollectionActionClass, Collection, CollectionActionInput,
    CollectionActionOutput, CoreLike, MLModelLike, ObjectStateLike, SerializedShape,
    SerializedTrack, SerializedTrackShape, SessionLike, ShapeKind, ActionParameters, Sam2TrackerActionLike,
} from './cvat-types';
import { framesToWalk, walk, type FrameResult, type PromptShape } from './tracking';

export const ACTION_NAME = 'Segment Anything 2: Tracker';
export const TARGET_FRAME = 'Target frame';
export const TO_TRACKS = 'Convert shapes to tracks';
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

/** The track's keyframe in force on `frame` (the last one at or before it), if any. */
function keyframeAt(track: SerializedTrack, frame: number): SerializedTrackShape | null {
    const before = track.shapes.filter((shape) => shape.frame <= frame);
    if (!before.length) return null;
    return before.reduce((a, b) => (b.frame > a.frame ? b : a));
}

function trackShape(base: { type: string; occluded: boolean; z_order: number; rotation?: number },
    frame: number, points: number[], outside: boolean): SerializedTrackShape {
    return {
        type: base.type, frame, occluded: base.occluded, outside, z_order: base.z_order,
        rotation: 0, points: [...points], attributes: [],
    };
}

/** Build the action class on cvat-core's own BaseCollectionAction (from `core.classes`). */
export function makeActionClass(core: CoreLike): new (models: MLModelLike[]) => Sam2TrackerActionLike {
    const Base = core.classes.BaseCollectionAction as unknown as BaseCollectionActionClass;

    class Sam2TrackerAction extends Base {
        #models: MLModelLike[];
        #instance: SessionLike | null = null;
        #target = 0;
        #toTracks = true;
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
                [TARGET_FRAME]: {
                    type: 'number',
                    values: ({ instance }) => [firstFrame(instance), lastFrame(instance), 1].map(String),
                    defaultValue: ({ instance }) => String(lastFrame(instance)),
                },
                [TO_TRACKS]: { type: 'checkbox', values: ['true', 'false'], defaultValue: 'true' },
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
            this.#target = Number(parameters[TARGET_FRAME]);
            this.#toTracks = String(parameters[TO_TRACKS]) === 'true';
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
            if (!instance || !model || start === this.#target) return { created: empty(), deleted: empty() };
            const available = instance.frames.frameNumbers
                ? await instance.frames.frameNumbers()
                : Array.from({ length: instance.size ?? 0 }, (_, index) => index);
            const frames = framesToWalk(start, this.#target, available);
            const states = await instance.annotations.get(start, false, []);
            const objects = [...input.collection.shapes, ...input.collection.tracks]
                .map((object) => ({ object, state: states.find((state) => state.clientID === object.clientID) }))
                .filter(({ state }) => state?.points && TRACKED_TYPES.includes(state.shapeType ?? ''));
            if (!objects.length || !frames.length) return { created: empty(), deleted: empty() };
            const prompts: PromptShape[] = objects.map(({ state }) => ({
                type: state!.shapeType as ShapeKind, points: [...state!.points!],
            }));
            const taskID = instance.taskId ?? instance.id;
            const results = await walk({
                call: (args) => core.lambda.call(taskID, model, {
                    ...args, ...(instance.taskId !== undefined ? { job: instance.id } : {}),
                }),
                startFrame: start,
                frames,
                isDeleted: async (frame) => (await instance.frames.get(frame)).deleted,
                objects: prompts,
                cancelled: input.cancelled,
                onProgress: input.onProgress,
            });
            if (results === null) return { created: empty(), deleted: empty() };
            return this.#output(objects.map(({ object }) => object), prompts, start, results);
        }

        #output(objects: (SerializedShape | SerializedTrack)[],
            prompts: PromptShape[], start: number, results: FrameResult[]): CollectionActionOutput {
            const created = empty();
            const deleted = empty();
            const low = Math.min(start, this.#target);
            const high = Math.max(start, this.#target);
            objects.forEach((object, index) => {
                const tracked = results.map(({ frame, objects: frameObjects }) => ({ frame, ...frameObjects[index] }));
                if ('shapes' in object) {
                    // A track: its keyframes between the start and the target are replaced.
                    const base = object.shapes[0];
                    const kept = object.shapes.filter((shape) => shape.frame === start || shape.frame < low || shape.frame > high);
                    if (!kept.some((shape) => shape.frame === start)) {
                        kept.push(trackShape(keyframeAt(object, start) ?? base, start, prompts[index].points, false));
                    }
                    const shapes = [...kept, ...tracked.map(({ frame, points, outside }) => trackShape(base, frame, points, outside))]
                        .sort((a, b) => a.frame - b.frame);
                    const { clientID: _dropped, ...rest } = object;
                    created.tracks.push({ ...rest, frame: shapes[0].frame, shapes });
                    deleted.tracks.push(object);
                } else if (this.#toTracks) {
                    const first = trackShape(object, start, object.points, false);
                    const shapes = [first, ...tracked.map(({ frame, points, outside }) => trackShape(object, frame, points, outside))]
                        .sort((a, b) => a.frame - b.frame);
                    created.tracks.push({
                        frame: shapes[0].frame, label_id: object.label_id, group: object.group,
                        source: 'semi-auto', shapes, attributes: [...object.attributes], elements: [],
                    });
                    deleted.shapes.push(object);
                } else {
                    for (const { frame, points, outside } of tracked) {
                        if (outside) continue; // a lost object gets no shape on that frame
                        const { clientID: _dropped, ...rest } = object;
                        created.shapes.push({ ...rest, frame, points: [...points], source: 'semi-auto', rotation: 0 });
                    }
                }
            });
            return { created, deleted };
        }
    }

    return Sam2TrackerAction;
}
