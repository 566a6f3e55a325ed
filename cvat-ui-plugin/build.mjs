// Bundles the plugin: dist/plugin.js for a browser page (what the tests load into Chromium;
// inside CVAT, cvat-ui's webpack builds src/ts/index.tsx itself), dist/plugin.mjs for Node.
import * as esbuild from 'esbuild';

const common = { entryPoints: ['src/ts/index.tsx'], bundle: true, target: 'es2022', logLevel: 'warning' };
await esbuild.build({ ...common, format: 'iife', globalName: 'cvatSam2TrackerPlugin', outfile: 'dist/plugin.js' });
await esbuild.build({ ...common, format: 'esm', platform: 'neutral', outfile: 'dist/plugin.mjs' });
