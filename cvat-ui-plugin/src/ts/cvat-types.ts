// The parts of cvat-core and cvat-ui this plugin touches, as types only.
//
// Written against cvat-ai/cvat's sources (see README, "CVAT UI plugin"): cvat-core/src/index.ts
// (`CVATCore`: `lambda`, `actions`, `classes.BaseCollectionAction`, `enums`),
// cvat-core/src/annotations-actions/{base-action,base-collection-action}.ts and
// cvat-ui/src/components/plugins-entrypoint.tsx. A plugin built inside cvat-ui may import these
// from 'cvat-core-wrapper'; this one takes the classes from the `core` object cvat-ui hands to
// it, so that `core.actions.register`'s `instanceof BaseAction` check sees CVAT's own class, and
// so that it builds and is tested outside CVAT's tree.

export type ShapeKind = 'rectangle' | 'polygon' | 'mask';

export interface SerializedShape {
    clientID?: number;
    id?: number;
    type: string;
    frame: number;
    label_id: number;
    group: number;
    source: string;
    occluded: boolean;
    outside?: boolean;
    z_order: number;
    rotation: number;
    points: number[];
    attributes: { spec_id: number; value: string }[];
    elements: unknown[];
}

export interface SerializedTrackShape {
    type: string;
    frame: number;
    occluded: boolean;
    outside: boolean;
    z_order: number;
    rotation: number;
    points: number[];
    attributes: { spec_id: number; value: string }[];
}

export interface SerializedTrack {
    clientID?: number;
    id?: number;
    frame: number;
    label_id: number;
    group: number;
    source: string;
    shapes: SerializedTrackShape[];
    attributes: { spec_id: number; value: string }[];
    elements: unknown[];
}

export interface Collection {
    shapes: SerializedShape[];
    tags: unknown[];
    tracks: SerializedTrack[];
}

export interface CollectionActionInput {
    onProgress(message: string, percent: number): void;
    cancelled(): boolean;
    collection: Collection;
    frameData: { width: number; height: number; number: number };
}

export interface CollectionActionOutput {
    created: Collection;
    deleted: Collection;
}

/** cvat-core's ObjectState, the fields read here. */
export interface ObjectStateLike {
    clientID: number | null;
    objectType: string; // 'shape' | 'track' | 'tag'
    shapeType: string | null;
    points: number[] | null;
    outside?: boolean;
    lock?: boolean;
}

export interface FrameDataLike {
    number: number;
    width: number;
    height: number;
    deleted: boolean;
}

/** cvat-core's Job (a Task has `size` and no frame range of its own). */
export interface SessionLike {
    id: number;
    taskId?: number;
    startFrame?: number;
    stopFrame?: number;
    size?: number;
    frames: {
        get(frame: number): Promise<FrameDataLike>;
        frameNumbers?(): Promise<number[]>;
    };
    annotations: {
        get(frame: number, allTracks: boolean, filters: object[]): Promise<ObjectStateLike[]>;
        export?(): Promise<Collection>;
    };
}

/** cvat-core's MLModel, the fields read here. */
export interface MLModelLike {
    id: string;
    name: string;
    kind: string;
    description?: string;
}

export type ActionParameterValues = string[] | ((args: { instance: SessionLike }) => string[]);
export type ActionParameterDefault = string | ((args: { instance: SessionLike }) => string);
export type ActionParameters = Record<string, {
    type: 'select' | 'number' | 'checkbox';
    values: ActionParameterValues;
    defaultValue: ActionParameterDefault;
}>;

/** The abstract class of base-collection-action.ts, as an instance type. */
export interface BaseCollectionActionLike {
    init(instance: SessionLike, parameters: Record<string, string | number>): Promise<void>;
    destroy(): Promise<void>;
    run(input: CollectionActionInput): Promise<CollectionActionOutput>;
    applyFilter(input: Pick<CollectionActionInput, 'collection' | 'frameData'>): Collection;
    isApplicableForObject(objectState: ObjectStateLike): boolean;
    readonly name: string;
    readonly parameters: ActionParameters | null;
}

/** This plugin's action: a collection action whose function list can be replaced. */
export interface Sam2TrackerActionLike extends BaseCollectionActionLike {
    /** Replace the functions offered (a non-empty list; the first is the default). */
    useModels(models: MLModelLike[]): void;
}

export type BaseCollectionActionClass = abstract new () => BaseCollectionActionLike;

export interface CoreLike {
    lambda: {
        list(): Promise<{ models: MLModelLike[]; count: number }>;
        call(taskID: number, model: MLModelLike, args: object): Promise<unknown>;
    };
    actions: {
        register(action: BaseCollectionActionLike): Promise<void>;
        unregister?(action: BaseCollectionActionLike): Promise<void>;
    };
    classes: {
        BaseCollectionAction: BaseCollectionActionClass;
        Job: abstract new (...args: never[]) => unknown;
    };
}

/** What `window.cvatUI.registerComponent` passes to a component builder (the fields used). */
export interface ComponentBuilderArgs {
    core: CoreLike;
}

export type ComponentBuilder = (args: ComponentBuilderArgs) => {
    name: string;
    destructor: CallableFunction;
    globalStateDidUpdate?: (state: never) => unknown;
};
