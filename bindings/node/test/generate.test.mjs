// generateFromEmbedding on the simulated set with the ground-truth states as the embedding:
// each state's volume must show that state, the Promise must leave the event loop free,
// progress must arrive, and a progress callback returning false must cancel.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { allFinite, corr, groundTruth, openOptions, readMrc, recovar, sub, tempDir, testDataset } from './helpers.mjs';

const { Dataset, Volume, generateFromEmbedding } = recovar;

// One-hot states: the images of state k sit at e_k, every other image at distance √2.
const truth = groundTruth();
const zdim = 3;
const zs = new Float32Array(truth.length * zdim);
truth.forEach((t, i) => (zs[i * zdim + t.state] = 1));
const oneHot = (k) => [0, 1, 2].map((j) => (j === k ? 1 : 0));
// States 0 and 1 hold a quarter of the 400 images each, so about 50 per halfset: the
// smallest neighbourhood must be smaller than that to see one state alone.
const kernel = { nMinImages: 20, nBins: 20 };

test('generateFromEmbedding recovers each state', async (t) => {
  const ds = Dataset.open(openOptions());
  const vols = [];
  for (let k = 0; k < 3; k++) {
    const v = await generateFromEmbedding(ds, zs, zdim, oneHot(k), kernel);
    assert.ok(v instanceof Volume);
    assert.equal(v.boxSize, 32);
    assert.equal(v.voxelSize, ds.voxelSize);
    for (const kind of ['filtered', 'filteredNoBfactor', 'unfiltered', 'half1', 'half2', 'localResolution']) {
      const a = v[kind];
      assert.ok(a instanceof Float32Array, kind);
      assert.equal(a.length, 32 ** 3, kind);
      assert.ok(allFinite(a), `${kind} is finite`);
    }
    vols.push(v.unfiltered);
  }
  // Difference maps from the average of the three, so that a common scale cancels.
  const avg = (arrs) => arrs[0].map((_, i) => arrs.reduce((s, a) => s + a[i], 0) / arrs.length);
  const gt = [0, 1, 2].map((k) => readMrc(path.join(testDataset(), `gt_state${k}.mrc`)).data);
  const [vAvg, gAvg] = [avg(vols), avg(gt)];
  for (let k = 0; k < 3; k++) {
    const c = gt.map((g) => corr(sub(vols[k], vAvg), sub(g, gAvg)));
    const others = Math.max(...c.filter((_, j) => j !== k));
    t.diagnostic(`state ${k}: difference-map correlations with the true states ${c.map((x) => x.toFixed(3))}`);
    assert.ok(c[k] > others, `state ${k}: correlations ${c.map((x) => x.toFixed(2))}`);
    assert.ok(c[k] > 0.5, `state ${k}: correlations ${c.map((x) => x.toFixed(2))}`);
  }
});

test('a generated volume writes every kind of map', async () => {
  const ds = Dataset.open(openOptions());
  const v = await generateFromEmbedding(ds, zs, zdim, new Float32Array(oneHot(2)), kernel);
  const dir = tempDir();
  for (const kind of ['filtered', 'unfiltered', 'half1', 'half2', 'filteredNoBfactor', 'localResolution']) {
    const file = path.join(dir, `${kind}.mrc`);
    v.writeMrc(kind, file);
    const m = readMrc(file);
    assert.equal(m.nx, 32);
    assert.deepEqual(m.data, v[kind]);
  }
  assert.throws(() => v.writeMrc('sharp', path.join(dir, 'x.mrc')), /volume kind "sharp"/);
  assert.ok(!fs.existsSync(path.join(dir, 'x.mrc')));
});

test('the event loop keeps turning and progress arrives while a volume is generated', async (t) => {
  const ds = Dataset.open(openOptions());
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const reports = [];
  const started = performance.now();
  const pending = generateFromEmbedding(ds, zs, zdim, oneHot(0), {
    ...kernel,
    onProgress: (stage, done, total) => reports.push([stage, done, total]),
  });
  assert.ok(pending instanceof Promise);
  await pending;
  clearInterval(timer);
  const ms = performance.now() - started;
  t.diagnostic(`${ticks} timer ticks and ${reports.length} progress reports in ${ms.toFixed(0)} ms`);
  assert.ok(ticks >= Math.min(5, ms / 20), `${ticks} ticks in ${ms.toFixed(0)} ms`);
  assert.ok(reports.length > 0);
  for (const [stage, done, total] of reports) {
    assert.equal(typeof stage, 'string');
    assert.ok(Number.isInteger(done) && Number.isInteger(total) && done <= total, `${stage} ${done}/${total}`);
  }
});

test('a progress callback returning false cancels', async () => {
  const ds = Dataset.open(openOptions());
  let calls = 0;
  await assert.rejects(
    generateFromEmbedding(ds, zs, zdim, oneHot(0), { ...kernel, onProgress: () => (++calls, false) }),
    (e) => {
      assert.ok(e instanceof Error);
      assert.equal(e.code, 'Cancelled');
      assert.match(e.message, /cancelled/);
      return true;
    },
  );
  assert.ok(calls >= 1);
});

test('a progress callback that throws cancels without crashing', async () => {
  const ds = Dataset.open(openOptions());
  await assert.rejects(
    generateFromEmbedding(ds, zs, zdim, oneHot(0), {
      ...kernel,
      onProgress: () => {
        throw new Error('stop here');
      },
    }),
    (e) => e.code === 'Cancelled',
  );
});

test('generateFromEmbedding checks its arguments', async () => {
  const ds = Dataset.open(openOptions());
  const call = (...args) => generateFromEmbedding(ds, ...args);
  assert.throws(() => call(zs, zdim, [1, 0]), /point has 2 values, expected 3/);
  assert.throws(() => call(zs.subarray(0, 10), zdim, oneHot(0)), /not a multiple of zdim/);
  assert.throws(() => call(zs.subarray(0, 30), zdim, oneHot(0)), /10 rows of 3, but the dataset has 400 images/);
  assert.throws(() => call(zs, 0, []), /zdim must be a whole number >= 1/);
  assert.throws(() => call(zs, zdim, [NaN, 0, 0]), /point\[0\] is not a finite number/);
  assert.throws(() => call(zs, zdim, oneHot(0), { precisions: new Float32Array(5) }), /precisions has 5 values, expected 3600/);
  assert.throws(() => call(zs, zdim, oneHot(0), { regularized: false }), /regularized is an option of Model#generate/);
  assert.throws(() => call(zs, zdim, oneHot(0), { nBins: 0 }), /nBins/);
  const bad = zs.slice();
  bad[7] = Infinity;
  assert.throws(() => call(bad, zdim, oneHot(0)), /zs\[7\] \(row 2\) is not a finite number/);
});

test('an embedding with one row per particle of the file is picked by index', async () => {
  // nImages 300 selects the first 300 particles; the 400-row embedding is per particle.
  const ds = Dataset.open({ ...openOptions(), nImages: 300 });
  const v = await generateFromEmbedding(ds, zs, zdim, oneHot(2), kernel);
  assert.ok(allFinite(v.filtered));
});
