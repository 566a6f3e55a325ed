// What a finished run changes: the objects to create and delete, planned for all objects first
// and checked as cvat-core will check them, so that `annotations.commit` cannot fail part-way.
//
// cvat-core's commit (annotations-collection.ts) checks the deleted objects, then imports the
// created ones object by object (tags, shapes, then tracks), and an object that fails
// (annotations-objects/index.ts: trackFactory has no "mask" track; checkNumberOfPoints in
// object-utils.ts) throws with the objects before it already in the collection. Created objects
// are built field by field, as object-utils.ts's propagateShapes builds its copies: no server
// `id` (cvat-core's saver would send each copy as an update of the original: a 400 on save) and
// no clientID. Rotation is kept. Masks stay shapes (community cvat-core has no mask tracks); the
// shapes of one object are tied by CVAT's `group`, so that a re-run from a corrected one replaces
// that object's automatic shapes in the range. Results are written marked (automatic.ts: masks
// by their source, polygons and rectangles by their points); keyframes and shapes the user made
// or changed, and locked objects, are kept.

import type {
    Collection, CollectionActionOutput, SerializedShape, SerializedTrack, SerializedTrackShape,
} from './cvat-types';
import { AUTOMATIC_SOURCE, isAutomatic, marked } from './automatic';
import type { FrameResult } from './tracking';
import { TrackingError } from './tracking';

/** One object to track: its exported form and its points on the start frame. */
export interface PlannedObject {
    object: SerializedShape | SerializedTrack;
    points: number[];
}

export interface PlanInput {
    start: number;
    target: number;
    toTracks: boolean;
    objects: PlannedObject[];
    results: FrameResult[];
    /** The job's shapes (annotations.export), to find each object's earlier automatic shapes. */
    shapes: SerializedShape[];
    /** clientIDs of locked objects (ObjectState.lock). */
    locked: Set<number>;
}

/** Track types cvat-core 2.73's trackFactory builds among those tracked here (no "mask"). */
export const TRACK_TYPES: readonly string[] = ['rectangle', 'polygon'];

function empty(): Collection {
    return { shapes: [], tags: [], tracks: [] };
}

const copyAttributes = (attributes: { spec_id: number; value: string }[]) => attributes.map(({ spec_id, value }) => ({ spec_id, value }));

function keyframe(base: { type: string; occluded: boolean; z_order: number; rotation?: number },
    frame: number, points: readonly number[], outside: boolean,
    attributes: { spec_id: number; value: string }[] = []): SerializedTrackShape {
    return {
        type: base.type, frame, occluded: base.occluded, outside, z_order: base.z_order,
        rotation: base.rotation ?? 0, points: [...points], attributes: copyAttributes(attributes),
    };
}

function shapeCopy(object: SerializedShape, frame: number, points: readonly number[], group: number, source: string): SerializedShape {
    return {
        type: object.type, frame, label_id: object.label_id, group, source, occluded: object.occluded,
        outside: false, z_order: object.z_order, rotation: object.rotation ?? 0, points: [...points],
        attributes: copyAttributes(object.attributes), elements: [],
    };
}

function trackCopy(object: SerializedShape | SerializedTrack, shapes: SerializedTrackShape[], source: string): SerializedTrack {
    const sorted = [...shapes].sort((a, b) => a.frame - b.frame);
    return {
        frame: sorted[0].frame, label_id: object.label_id, group: object.group, source,
        shapes: sorted, attributes: copyAttributes(object.attributes), elements: [],
    };
}

/** The track's keyframe in force on `frame` (the last one at or before it), if any. */
export function keyframeAt(track: SerializedTrack, frame: number): SerializedTrackShape | null {
    const before = track.shapes.filter((shape) => shape.frame <= frame);
    if (!before.length) return null;
    return before.reduce((a, b) => (b.frame > a.frame ? b : a));
}

/** The objects to create and delete. */
export function plan(input: PlanInput): CollectionActionOutput {
    const created = empty();
    const deleted = empty();
    const { start, target } = input;
    const low = Math.min(start, target);
    const high = Math.max(start, target);
    const inRange = (frame: number): boolean => frame >= low && frame <= high && frame !== start;
    let nextGroup = Math.max(0, ...input.shapes.map((shape) => shape.group ?? 0),
        ...input.objects.map(({ object }) => object.group ?? 0)) + 1;

    input.objects.forEach(({ object, points }, index) => {
        const tracked = input.results.map(({ frame, objects }) => ({ frame, ...objects[index] }));
        if ('shapes' in object) {
            // A track: its automatic keyframes in the range are replaced; the user's are kept.
            const kept = object.shapes.filter((shape) => !inRange(shape.frame) || !isAutomatic(shape));
            const base = keyframeAt(object, start) ?? object.shapes[0];
            const shapes = kept.map((shape) => keyframe(shape, shape.frame, shape.points, shape.outside, shape.attributes));
            if (!kept.some((shape) => shape.frame === start)) shapes.push(keyframe(base, start, points, false, base.attributes));
            for (const { frame, points: found, outside } of tracked) {
                if (kept.some((shape) => shape.frame === frame)) continue;
                shapes.push(keyframe(base, frame, marked(base.type, frame, found), outside));
            }
            created.tracks.push(trackCopy(object, shapes, object.source));
            deleted.tracks.push(object);
        } else if (input.toTracks && TRACK_TYPES.includes(object.type)) {
            const shapes = [keyframe(object, start, object.points, false),
                ...tracked.map(({ frame, points: found, outside }) => keyframe(object, frame, marked(object.type, frame, found), outside))];
            created.tracks.push(trackCopy(object, shapes, 'semi-auto'));
            deleted.shapes.push(object);
        } else {
            // Shapes per frame, tied to the prompt by its group (a new one if it has none).
            let { group } = object;
            if (!group) {
                group = nextGroup;
                nextGroup += 1;
                created.shapes.push(shapeCopy(object, start, object.points, group, object.source));
                deleted.shapes.push(object);
            }
            const same = input.shapes.filter((shape) => group && shape.group === group && shape.clientID !== object.clientID
                && shape.label_id === object.label_id && shape.type === object.type && inRange(shape.frame));
            const replaced = same.filter((shape) => isAutomatic(shape)
                && !input.locked.has(shape.clientID as number));
            deleted.shapes.push(...replaced);
            const keptFrames = new Set(same.filter((shape) => !replaced.includes(shape)).map((shape) => shape.frame));
            for (const { frame, points: found, outside } of tracked) {
                if (outside || keptFrames.has(frame)) continue; // lost there, or the user's shape stays
                created.shapes.push(shapeCopy(object, frame, marked(object.type, frame, found), group, AUTOMATIC_SOURCE));
            }
        }
    });
    validate(created);
    return { created, deleted };
}

/** As cvat-core's checkNumberOfPoints (object-utils.ts) for the types created here. */
function pointsProblem(type: string, points: readonly number[]): string | null {
    if (!points.every((value) => Number.isFinite(value))) return 'points that are not finite numbers';
    if (type === 'rectangle' && points.length !== 4) return `a rectangle with ${points.length / 2} points`;
    if (type === 'polygon' && points.length < 6) return `a polygon with ${points.length / 2} points`;
    if (type === 'mask') {
        if (points.length < 6) return 'an empty mask';
        const [left, top, right, bottom] = points.slice(-4);
        const [width, height] = [right - left, bottom - top];
        if (width < 0 || height < 0 || !Number.isInteger(width) || !Number.isInteger(height)) return `a mask of ${width}x${height}`;
    }
    if (!['rectangle', 'polygon', 'mask'].includes(type)) return `an unexpected type "${type}"`;
    return null;
}

/** Refuse, before the commit, what cvat-core's import would refuse part-way. */
export function validate(created: Collection): void {
    const refuse = (frame: number, what: string): never => {
        throw new TrackingError(`SAM2 tracking stopped; nothing was saved. On frame ${frame} the result is ${what}, `
            + 'which CVAT cannot store. Run the action again, or correct the shape on that frame first.');
    };
    for (const shape of created.shapes) {
        const problem = pointsProblem(shape.type, shape.points);
        if (problem) refuse(shape.frame, problem);
    }
    for (const track of created.tracks) {
        const type = track.shapes[0]?.type;
        if (!TRACK_TYPES.includes(type)) refuse(track.frame, `a track of type "${type}" (CVAT has rectangle and polygon tracks only)`);
        const frames = track.shapes.map((shape) => shape.frame);
        if (new Set(frames).size !== frames.length) refuse(track.frame, 'a track with two keyframes on one frame');
        for (const shape of track.shapes) {
            const problem = pointsProblem(shape.type, shape.points);
            if (problem) refuse(shape.frame, problem);
        }
    }
}
