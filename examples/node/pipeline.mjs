#!/usr/bin/env node
// RECOVAR from Node.js: open a dataset, run the pipeline's stages, and write the volume
// generated at a latent point.
//
//   node examples/node/pipeline.mjs DATASET_DIR OUT_DIR
//
// DATASET_DIR holds particles.*.mrcs, poses.pkl and ctf.pkl, as written by
// `recovar make_test_dataset OUT --image-size 32 --n-images 400` (in OUT/test_dataset).
// Writes OUT_DIR/volume.mrc (the locally filtered map at the latent point of the first
// image) and OUT_DIR/model/ (the pipeline's output layout). Build the addon first with
// bindings/node/build.sh.
import fs from 'node:fs';
import path from 'node:path';

import recovar from '../../bindings/node/index.js';

const { Dataset, Model } = recovar;

const [dir, out] = process.argv.slice(2);
if (!dir || !out) {
  console.error('usage: node pipeline.mjs DATASET_DIR OUT_DIR');
  process.exit(2);
}
const stack = fs.readdirSync(dir).find((f) => /^particles\..*\.mrcs$/.test(f));
if (!stack) {
  console.error(`${dir}: no particles.*.mrcs in it`);
  process.exit(1);
}
fs.mkdirSync(out, { recursive: true });

const dataset = Dataset.open({
  particles: path.join(dir, stack),
  poses: path.join(dir, 'poses.pkl'),
  ctf: path.join(dir, 'ctf.pkl'),
});
console.log(`${dataset.count} images of ${dataset.boxSize} px, ${dataset.voxelSize.toFixed(2)} Å/px`);

// A small latent space and the low-memory covariance (50 columns, 100 PCs) keep the example
// quick; the pipeline's defaults are zdims [1, 2, 4, 10, 20] and memoryOption 'normal'.
const zdim = 2;
const model = Model.create(dataset, { zdims: [1, zdim], memoryOption: 'low' });
for (const stage of ['mean', 'noise', 'covariance', 'embedding']) {
  const started = performance.now();
  let last = '';
  // Each stage runs on a worker thread; progress arrives on the event loop.
  await model.runStage(stage, (step, done, total) => {
    const line = `  ${step}: ${done}/${total}`;
    if (line !== last && done === total) console.log(line);
    last = line;
  });
  console.log(`${stage} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

const eigenvalues = model.eigenvalues();
console.log(`first eigenvalues: ${Array.from(eigenvalues.slice(0, 4), (v) => v.toExponential(2)).join(', ')}`);

// The latent point of the first image in the regularized zdim-2 embedding.
const { zs } = model.embedding(zdim);
const point = zs.slice(0, zdim);
console.log(`generating the volume at [${Array.from(point, (v) => v.toFixed(3)).join(', ')}]`);
const volume = await model.generate(zdim, point);
const file = path.join(out, 'volume.mrc');
volume.writeMrc('filtered', file);
await model.save(path.join(out, 'model'));
console.log(`wrote ${file} (${volume.boxSize}³ voxels of ${volume.voxelSize.toFixed(2)} Å) and ${path.join(out, 'model')}`);
