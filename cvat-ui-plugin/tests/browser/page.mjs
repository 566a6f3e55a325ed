// Plays cvat-ui's plugin entry (plugins-entrypoint.tsx): defines window.cvatUI.registerComponent,
// hands the builder `core`, then dispatches 'plugins.ready' on the document. Then it runs the
// registered action as the actions modal does and draws the committed shapes on the frames.
import { Job, makeCore } from '../core-double.mjs';

const core = makeCore(window.location.origin);
const plugins = [];
Object.defineProperty(window, 'cvatUI', {
    value: Object.freeze({
        registerComponent: (builder) => {
            const { name } = builder({ dispatch: () => {}, REGISTER_ACTION: 'ADD_UI_COMPONENT', REMOVE_ACTION: 'REMOVE_UI_COMPONENT', actionCreators: {}, core, store: null });
            plugins.push(name);
        },
    }),
});
setTimeout(() => window.document.dispatchEvent(new CustomEvent('plugins.ready', { bubbles: true })));

const status = document.getElementById('status');
const COLOURS = { polygon: '#0072b2', mask: '#e69f00', rectangle: '#009e73' };

function draw(context, shape) {
    context.strokeStyle = COLOURS[shape.type];
    context.fillStyle = `${COLOURS[shape.type]}66`;
    context.lineWidth = 2;
    const p = shape.points;
    if (shape.type === 'rectangle') {
        context.strokeRect(p[0], p[1], p[2] - p[0], p[3] - p[1]);
    } else if (shape.type === 'polygon') {
        context.beginPath();
        for (let i = 0; i < p.length; i += 2) context[i ? 'lineTo' : 'moveTo'](p[i], p[i + 1]);
        context.closePath();
        context.stroke();
    } else if (shape.type === 'mask') {
        // CVAT's mask: run lengths (background first) over its box, then left, top, right, bottom.
        const [left, top, right] = p.slice(-4);
        const width = right - left + 1;
        let offset = 0;
        p.slice(0, -4).forEach((run, index) => {
            if (index % 2) {
                for (let k = offset; k < offset + run; k += 1) context.fillRect(left + (k % width), top + Math.floor(k / width), 1, 1);
            }
            offset += run;
        });
    }
}

async function main() {
    const deadline = Date.now() + 30000;
    while (!(await core.actions.list()).length) {
        if (Date.now() > deadline) throw new Error(`no action registered in 30 s (plugins: ${JSON.stringify(plugins)})`);
        await new Promise((resolve) => { setTimeout(resolve, 50); });
    }
    const [action] = await core.actions.list();
    const info = await (await fetch('/standin/info')).json();
    const last = Number(new URLSearchParams(window.location.search).get('target') ?? 5);
    const job = new Job({ id: info.jobId, taskId: info.taskId, frames: Array.from({ length: info.frames }, () => ({ width: info.width, height: info.height })) });
    ['polygon', 'mask', 'rectangle'].forEach((type, index) => job.add({
        type, frame: 0, points: info.prompts['0'][type], label_id: 1, group: 0, source: 'manual',
        occluded: false, outside: false, z_order: index, rotation: 0, attributes: [], elements: [],
    }));
    const progress = [];
    await core.actions.run(job, action, { Direction: 'forward', 'Target frame': String(last) }, 0, 0, [],
        (message) => { progress.push(message); status.textContent = message; }, () => false);
    const frames = document.getElementById('frames');
    for (let frame = 0; frame <= last; frame += 1) {
        const image = new Image();
        image.src = `/frames/${frame}`;
        await image.decode();
        const canvas = document.createElement('canvas');
        Object.assign(canvas, { width: image.width, height: image.height });
        const context = canvas.getContext('2d');
        context.drawImage(image, 0, 0);
        for (const track of job.store.tracks) {
            const shape = track.shapes.find((s) => s.frame === frame);
            if (shape && !shape.outside) draw(context, shape);
        }
        for (const shape of job.store.shapes.filter((s) => s.frame === frame)) draw(context, shape); // masks stay shapes
        const figure = document.createElement('figure');
        const caption = document.createElement('figcaption');
        caption.textContent = `frame ${frame}`;
        figure.append(canvas, caption);
        frames.append(figure);
    }
    status.textContent = `${plugins.join(', ')}: "${action.name}" tracked ${job.store.tracks.length} tracks and ${job.store.shapes.length} shapes over frames 0-${last} (blue polygon, orange mask, green rectangle)`;
    return { plugins, action: action.name, progress, tracks: job.store.tracks.map((t) => ({ type: t.shapes[0].type, frames: t.shapes.map((s) => s.frame) })),
        shapes: job.store.shapes.map((s) => ({ type: s.type, frame: s.frame })) };
}

window.result = main().catch((error) => ({ error: String(error && error.stack || error) }));
