// Which keyframes and shapes this plugin wrote and nobody changed since, told from what CVAT's
// server keeps, so that any browser's re-run knows them (a re-run replaces the plugin's results
// in its range and keeps the user's keyframes and corrections).
//
// - Masks (always shapes in community CVAT) carry `source: 'auto'`, as CVAT's own tracker action
//   writes its results (cvat-ui/src/utils/opencv-wrapper/annotations-actions/tracker-mil.ts).
//   A user's edit makes it 'semi-auto' (cvat-core/src/annotations-objects/utils.ts,
//   computeNewSource, called by every points, outside or occluded change in shape.ts and
//   mask-shape.ts), so the mask becomes the user's.
// - Polygons and rectangles can be track keyframes, which carry no source of their own (a track
//   keeps one for all its keyframes: annotations-objects/track.ts, toJSON). Their points carry a
//   mark instead: every coordinate is moved by at most 1/16 px onto a grid of 1/1024 px whose
//   last 6 bits are a hash of the frame, the type and the coarse points. CVAT stores points as
//   written (engine/models.py FloatArrayField: `str(float)`, exact for these values), and any edit
//   of the user's (a moved vertex, a dragged shape, a copy to another frame by Propagate) breaks
//   the mark, so the keyframe becomes the user's. Points the user drew or imported match a mark
//   by chance with probability 2^-24 (a rectangle) or less.

/** The source of a mask this plugin wrote (CVAT's Source.AUTO). */
export const AUTOMATIC_SOURCE = 'auto';

/** 1/16 px: the coarse grid the mark's hash reads; 6 bits of mark below it. */
const COARSE = 16;
const BITS = 6;
const STEPS = 2 ** BITS; // marks per coarse step
const FINE = COARSE * STEPS; // 1024
const HALF = STEPS / 2;

const MARKED_TYPES: readonly string[] = ['polygon', 'rectangle'];

/** FNV-1a (32 bits) over the frame, the type and the coarse points. */
function hashOf(type: string, frame: number, coarse: readonly number[]): number {
    let hash = 0x811c9dc5;
    const text = `${type}:${frame}:${coarse.join(',')}`;
    for (let index = 0; index < text.length; index += 1) {
        hash = Math.imul(hash ^ text.charCodeAt(index), 0x01000193) >>> 0;
    }
    return hash;
}

/** The mark's 6 bits for coordinate `index` (a 32-bit mix of the hash and the index). */
function code(hash: number, index: number): number {
    let value = Math.imul(hash ^ Math.imul(index + 1, 0x9e3779b1), 0x85ebca6b);
    value ^= value >>> 13;
    value = Math.imul(value, 0xc2b2ae35);
    value ^= value >>> 16;
    return (value >>> 0) & (STEPS - 1);
}

/** The points to write for a result of type `type` on `frame`: marked polygons and rectangles,
 *  masks as they are (their source marks them). */
export function marked(type: string, frame: number, points: readonly number[]): number[] {
    if (!MARKED_TYPES.includes(type)) return [...points];
    const coarse = points.map((value) => Math.round(value * COARSE));
    const hash = hashOf(type, frame, coarse);
    return coarse.map((value, index) => (value * STEPS + code(hash, index) - HALF) / FINE);
}

/** A shape or a track's keyframe as exported (a keyframe has no source). */
export interface WrittenShape {
    type: string;
    frame: number;
    points: readonly number[];
    source?: string;
}

/** True when this plugin wrote this shape or keyframe and nobody changed it since. */
export function isAutomatic(shape: WrittenShape): boolean {
    if (!MARKED_TYPES.includes(shape.type)) return shape.type === 'mask' && shape.source === AUTOMATIC_SOURCE;
    const fine = shape.points.map((value) => value * FINE);
    if (!fine.length || !fine.every((value) => Number.isInteger(value))) return false;
    const coarse = fine.map((value) => Math.floor((value + HALF) / STEPS));
    const hash = hashOf(shape.type, shape.frame, coarse);
    return fine.every((value, index) => value + HALF - coarse[index] * STEPS === code(hash, index));
}
