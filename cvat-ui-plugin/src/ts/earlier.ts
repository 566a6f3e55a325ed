// The earlier keyframes a run conditions SAM2 on (issue 26): when the run starts on a frame where
// the user drew or corrected an object (a manual keyframe of a track; a mask or shape of the
// user's in the object's group), the object's nearest earlier manual keyframes behind the start
// in the walking direction (before it walking forward, after it walking backward) are sent
// first, farthest first, so that every tracked frame is conditioned on them too, as SAM2's video
// predictor conditions on all of an object's prompted frames. Automatic results (automatic.ts),
// outside keyframes, deleted frames and frames outside the job are never prompts. Shapes of one
// group count as one object only with one candidate per frame (CVAT's group may also tie several
// objects; plan.ts ties an object's masks by group, label and type).

import type { SerializedShape, SerializedTrack, ShapeKind } from './cvat-types';
import { isAutomatic, type WrittenShape } from './automatic';
import type { EarlierFrame } from './tracking';

/**
 * Earlier keyframes per object at most: with the start frame, 4 prompted frames, the tracker's
 * default `max_conditioning_frames` (a tracker set lower keeps the newest of them).
 */
export const EARLIER_KEYFRAMES = 3;

export interface ObjectToCondition {
    object: SerializedShape | SerializedTrack;
    type: ShapeKind;
}

export interface EarlierInput {
    start: number;
    forward: boolean;
    objects: ObjectToCondition[];
    /** The job's shapes (annotations.export): the masks and shapes of each object's group. */
    shapes: SerializedShape[];
    /** Whether a request may name the frame: the job's own, not deleted. */
    usable(frame: number): Promise<boolean>;
}

type Keyframe = { frame: number; points: number[] };

function manual(shape: WrittenShape & { outside?: boolean }): boolean {
    return !shape.outside && !isAutomatic(shape);
}

/** The object's manual keyframes other than the start's, or [] when its start is not manual. */
function keyframesOf(input: EarlierInput, { object, type }: ObjectToCondition): Keyframe[] {
    const { start } = input;
    if ('shapes' in object) {
        const atStart = object.shapes.find((shape) => shape.frame === start);
        if (!atStart || !manual(atStart)) return [];
        return object.shapes.filter((shape) => shape.frame !== start && manual(shape));
    }
    if (!object.group || !manual(object)) return [];
    const same = input.shapes.filter((shape) => shape.group === object.group && shape.label_id === object.label_id
        && shape.type === type && shape.frame !== start && shape.clientID !== object.clientID);
    const perFrame = new Map<number, number>();
    same.forEach((shape) => perFrame.set(shape.frame, (perFrame.get(shape.frame) ?? 0) + 1));
    return same.filter((shape) => perFrame.get(shape.frame) === 1 && manual(shape));
}

/** The requests to send before the start, in walking order (farthest frame first). */
export async function earlierFrames(input: EarlierInput): Promise<EarlierFrame[]> {
    const { start, forward } = input;
    const behind = (frame: number): boolean => (forward ? frame < start : frame > start);
    const distance = (frame: number): number => Math.abs(frame - start);
    const usable = new Map<number, boolean>();
    const byFrame = new Map<number, EarlierFrame['prompts']>();
    for (const [index, entry] of input.objects.entries()) {
        const nearest = keyframesOf(input, entry).filter(({ frame }) => behind(frame))
            .sort((a, b) => distance(a.frame) - distance(b.frame));
        const chosen: Keyframe[] = [];
        for (const keyframe of nearest) {
            if (chosen.length === EARLIER_KEYFRAMES) break;
            if (!usable.has(keyframe.frame)) usable.set(keyframe.frame, await input.usable(keyframe.frame));
            if (usable.get(keyframe.frame)) chosen.push(keyframe);
        }
        for (const { frame, points } of chosen) {
            const prompts = byFrame.get(frame) ?? [];
            prompts.push({ index, shape: { type: entry.type, points: [...points] } });
            byFrame.set(frame, prompts);
        }
    }
    return [...byFrame.entries()]
        .sort(([a], [b]) => distance(b) - distance(a))
        .map(([frame, prompts]) => ({ frame, prompts }));
}
