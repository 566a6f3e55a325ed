// Which keyframes and shapes this plugin wrote and nobody changed since: their fingerprints (job,
// frame, points), kept in memory and, in a browser, in localStorage so that they survive a
// reload. CVAT keeps no per-keyframe source (a track's keyframes carry frame, points, flags and
// attributes only: cvat-core/src/annotations-objects/track.ts, toJSON), so this is how a re-run
// tells its own results, which it replaces, from the user's keyframes and corrections, which it
// keeps. Points are compared to one decimal, as cvat-core's saver compares them
// (annotations-saver.ts, isTheSamePoints).

const MAX_PER_JOB = 50_000;
const PREFIX = 'cvat-sam2-tracker:automatic:';
const memory = new Map<number, { list: string[]; set: Set<string> }>();

function storage(): Storage | null {
    try {
        return typeof localStorage === 'undefined' ? null : localStorage;
    } catch {
        return null; // storage denied (privacy settings)
    }
}

/** A short fingerprint of one object's points on one frame (FNV-1a over the rounded points). */
export function fingerprint(frame: number, points: readonly number[]): string {
    let hash = 0x811c9dc5;
    const text = points.map((value) => value.toFixed(1)).join(',');
    for (let index = 0; index < text.length; index += 1) {
        hash = Math.imul(hash ^ text.charCodeAt(index), 0x01000193) >>> 0;
    }
    return `${frame}:${points.length}:${hash.toString(36)}`;
}

function entries(jobID: number): { list: string[]; set: Set<string> } {
    let known = memory.get(jobID);
    if (!known) {
        let list: string[];
        try {
            list = JSON.parse(storage()?.getItem(`${PREFIX}${jobID}`) ?? '[]') as string[];
        } catch {
            list = [];
        }
        known = { list, set: new Set(list) };
        memory.set(jobID, known);
    }
    return known;
}

/** Note what a run wrote (the oldest entries go beyond MAX_PER_JOB). */
export function remember(jobID: number, written: { frame: number; points: readonly number[] }[]): void {
    const known = entries(jobID);
    const added = written.map(({ frame, points }) => fingerprint(frame, points));
    known.list.push(...added);
    added.forEach((entry) => known.set.add(entry));
    known.list.splice(0, Math.max(0, known.list.length - MAX_PER_JOB)).forEach((entry) => known.set.delete(entry));
    const { list } = known;
    try {
        storage()?.setItem(`${PREFIX}${jobID}`, JSON.stringify(list));
    } catch {
        // storage full or denied: memory still serves this page
    }
}

/** True when this plugin wrote exactly these points on this frame of this job. */
export function isAutomatic(jobID: number, frame: number, points: readonly number[]): boolean {
    return entries(jobID).set.has(fingerprint(frame, points));
}

/** Forget everything (the tests' fresh start). */
export function forgetAll(): void {
    memory.clear();
}
