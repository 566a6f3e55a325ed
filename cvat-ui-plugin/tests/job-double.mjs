// A test double of a cvat-core 2.73 Job's frames and annotations, reproduced from the sources
// (read, not copied): cvat-core/src/annotations-collection.ts (import, commit, export),
// annotations-objects/index.ts (shapeFactory, trackFactory: no "mask" track),
// object-utils.ts (checkNumberOfPoints), annotations-objects/{shape,track}.ts (toJSON: clientID,
// a saved object's server `id`, a track's keyframes with theirs), annotations-saver.ts (save:
// an exported object with a known server id is an update, any other a create, a known id no
// longer exported a delete), frames.ts (getJobFrameNumbers: the segment's frames, [] before the
// job's frame cache exists). Simplification: a track's points on a frame are its keyframe at or
// before the frame (CVAT interpolates; the tests start on keyframes).
// A user's edit (`correct`) changes the object's source as annotations-objects/utils.ts's
// computeNewSource does: auto and semi-auto become semi-auto, consensus stays, the rest manual.
export class ServerError extends Error {
    constructor(message, code) {
        super(message);
        this.code = code;
    }
}

export class ArgumentError extends Error {}
export class DataError extends Error {}

function checkNumberOfPoints(type, points) {
    if (type === 'rectangle' && points.length / 2 !== 2) throw new DataError(`Rectangle must have 2 points, but got ${points.length / 2}`);
    if (type === 'polygon' && points.length / 2 < 3) throw new DataError(`Polygon must have at least 3 points, but got ${points.length / 2}`);
    if (type === 'mask' && points.length < 6) throw new DataError('Mask must not be empty');
}

export class Job {
    // frames: [{width, height, deleted}] of the task; one job over all of them.
    constructor({ id, taskId, frames, frameNumbers = null }) {
        Object.assign(this, { id, taskId, startFrame: 0, stopFrame: frames.length - 1 });
        this.frameMeta = frames;
        this.segment = frameNumbers ?? frames.map((_, index) => index);
        this.store = { shapes: [], tracks: [] };
        this.locked = new Set();
        this.nextID = 1;
        this.nextServerID = 100;
        this.initial = new Map(); // server id -> exported JSON at the last save (the saver's initialObjects)
        this.commits = [];
        this.frames = {
            get: async (frame) => {
                const meta = this.frameMeta[frame];
                return { number: frame, width: meta.width, height: meta.height, deleted: !!meta.deleted };
            },
            frameNumbers: async () => [...this.segment],
        };
        this.annotations = {
            get: async (frame) => this.statesOn(frame),
            export: async () => this.export(),
            commit: async (created, deleted) => this.commitCollection(created, deleted),
            save: async () => this.save(),
        };
    }

    // annotations-collection.ts's import: object by object; one that fails leaves those before it.
    #import(data) {
        const added = [];
        for (const shape of data.shapes ?? []) {
            if (!['rectangle', 'polygon', 'polyline', 'points', 'ellipse', 'cuboid', 'mask', 'skeleton'].includes(shape.type)) {
                throw new DataError(`An unexpected type of shape "${shape.type}"`);
            }
            checkNumberOfPoints(shape.type, shape.points);
            const copy = { ...structuredClone(shape), clientID: this.nextID++ };
            this.store.shapes.push(copy);
            added.push(copy.clientID);
        }
        for (const track of data.tracks ?? []) {
            if (!track.shapes.length) continue; // "The track without any shapes had been found. It was ignored."
            const { type } = track.shapes[0];
            if (!['rectangle', 'polygon', 'polyline', 'points', 'ellipse', 'cuboid', 'skeleton'].includes(type)) {
                throw new DataError(`An unexpected type of track "${type}"`);
            }
            track.shapes.forEach((shape) => checkNumberOfPoints(type, shape.points));
            const copy = { ...structuredClone(track), clientID: this.nextID++ };
            this.store.tracks.push(copy);
            added.push(copy.clientID);
        }
        return added;
    }

    /** Draw an object (`saved`: as loaded from the server, with server ids; `lock`: locked). */
    add(object, { saved = false, lock = false } = {}) {
        const [clientID] = this.#import(object.shapes ? { tracks: [object] } : { shapes: [object] });
        if (lock) this.locked.add(clientID);
        if (saved) this.save();
        return clientID;
    }

    /** The user edits the points of a shape (or of a track's keyframe on `frame`), as cvat-core's
     *  save does: the points replaced, the object's source recomputed (utils.ts computeNewSource). */
    correct(object, points, frame = object.frame) {
        const target = object.shapes ? object.shapes.find((shape) => shape.frame === frame) : object;
        target.points = [...points];
        if (['auto', 'semi-auto'].includes(object.source)) object.source = 'semi-auto';
        else if (object.source !== 'consensus') object.source = 'manual';
    }

    /** Save, then load the job as another browser would: what the server keeps (JSON; the
     *  server stores each point as Python's `str(float)`, which reads back the same number). */
    reload() {
        this.save();
        const served = JSON.parse(JSON.stringify(this.export()));
        const objects = [...served.shapes, ...served.tracks];
        objects.forEach((object) => { object.clientID = this.nextID++; });
        this.store = { shapes: served.shapes, tracks: served.tracks };
        this.initial = new Map(objects.map((object) => [object.id, structuredClone(object)]));
    }

    export() {
        return { shapes: structuredClone(this.store.shapes), tags: [], tracks: structuredClone(this.store.tracks) };
    }

    statesOn(frame) {
        const state = (object, objectType, shown) => ({
            clientID: object.clientID, serverID: object.id ?? null, objectType, shapeType: shown.type,
            points: [...shown.points], rotation: shown.rotation, outside: false, lock: this.locked.has(object.clientID),
            export: async () => structuredClone(object),
        });
        const states = this.store.shapes.filter((shape) => shape.frame === frame).map((shape) => state(shape, 'shape', shape));
        for (const track of this.store.tracks) {
            const before = track.shapes.filter((shape) => shape.frame <= frame).sort((a, b) => a.frame - b.frame);
            const shown = before[before.length - 1];
            if (shown && !shown.outside) states.push(state(track, 'track', shown));
        }
        return states;
    }

    // annotations-collection.ts's commit: unknown deleted objects are an ArgumentError before any
    // change; then the created objects are imported (which can fail part-way); then the deleted go.
    commitCollection(created, deleted) {
        this.commits.push(structuredClone({ created, deleted }));
        const known = new Set([...this.store.shapes, ...this.store.tracks].map((object) => object.clientID));
        if (![...deleted.shapes, ...deleted.tracks].every((object) => known.has(object.clientID))) {
            throw new ArgumentError('Objects required to be deleted were not found in the collection');
        }
        this.#import(created);
        const gone = new Set([...deleted.shapes, ...deleted.tracks].map((object) => object.clientID));
        this.store.shapes = this.store.shapes.filter((shape) => !gone.has(shape.clientID));
        this.store.tracks = this.store.tracks.filter((track) => !gone.has(track.clientID));
    }

    // annotations-saver.ts's save: known server id => update, else create (ids removed); two
    // updates of one id are the server's 400 (duplicate key on engine_labeledshape_pkey).
    save() {
        const objects = [...this.store.shapes, ...this.store.tracks];
        const updated = objects.filter((object) => Number.isInteger(object.id) && this.initial.has(object.id));
        const ids = updated.map((object) => object.id);
        if (new Set(ids).size !== ids.length) {
            throw new ServerError('duplicate key value violates unique constraint "engine_labeledshape_pkey"', 400);
        }
        for (const object of objects.filter((candidate) => !updated.includes(candidate))) {
            object.id = this.nextServerID++;
            for (const shape of object.shapes ?? []) shape.id = this.nextServerID++;
        }
        for (const track of this.store.tracks) {
            for (const shape of track.shapes) if (!Number.isInteger(shape.id)) shape.id = this.nextServerID++;
        }
        this.initial = new Map(objects.map((object) => [object.id, structuredClone(object)]));
        return { created: objects.length - updated.length, updated: updated.length };
    }
}
