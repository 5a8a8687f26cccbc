// Model: every stage on the tiny simulated set (zdims 1 and 2), the queries, generate,
// save/load, and the Promise behaviour (a free event loop, a busy model, cancel()).
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, test } from 'node:test';

import { allFinite, openOptions, recovar, tempDir } from './helpers.mjs';

const { Dataset, Model, Volume } = recovar;
const N = 32;

let dataset;
let model;
const timings = {};

before(async () => {
  dataset = Dataset.open(openOptions());
  model = Model.create(dataset, { zdims: [1, 2], memoryOption: 'low' });
  for (const stage of ['mean', 'noise', 'covariance', 'embedding']) {
    const t0 = performance.now();
    await model.runStage(stage);
    timings[stage] = ((performance.now() - t0) / 1000).toFixed(1);
  }
});

test('every stage runs and reports done', (t) => {
  t.diagnostic(`stage seconds: ${JSON.stringify(timings)}`);
  for (const s of ['mean', 'noise', 'covariance', 'embedding', 'all']) assert.equal(model.stageDone(s), true, s);
  assert.equal(model.boxSize, N);
  assert.equal(model.count, 400);
  assert.equal(model.voxelSize, dataset.voxelSize);
});

test('queries have the documented sizes and sane values', () => {
  const mean = model.mean();
  assert.ok(mean instanceof Float32Array);
  assert.equal(mean.length, N ** 3);
  assert.ok(allFinite(mean));
  const noise = model.noise();
  assert.ok(noise instanceof Float64Array);
  assert.equal(noise.length, N / 2 - 1);
  assert.ok(noise.every((v) => v > 0));
  const ev = model.eigenvalues();
  assert.ok(ev instanceof Float64Array);
  assert.ok(ev.length >= 2);
  for (let i = 0; i < ev.length; i++) {
    assert.ok(ev[i] > 0, `eigenvalue ${i} = ${ev[i]}`);
    if (i > 0) assert.ok(ev[i] <= ev[i - 1], `eigenvalues ${i - 1}, ${i}: ${ev[i - 1]} < ${ev[i]}`);
  }
  const u0 = model.eigenvolume(0);
  assert.equal(u0.length, N ** 3);
  assert.ok(allFinite(u0));
  const vm = model.varianceMap(2);
  assert.equal(vm.length, N ** 3);
  assert.ok(vm.every((v) => v >= 0));
  assert.deepEqual(model.zdims(), [1, 2]);
  for (const regularized of [true, false]) {
    const e = model.embedding(2, regularized);
    assert.equal(e.zdim, 2);
    assert.equal(e.rows, 400);
    assert.equal(e.zs.length, 800);
    assert.equal(e.precisions.length, 1600);
    assert.equal(e.contrasts.length, 400);
    assert.ok(allFinite(e.zs));
  }
  assert.equal(model.embedding(1).zs.length, 400);
});

test('queries that cannot be answered throw with the reason', () => {
  assert.throws(() => model.eigenvolume(100000), Error);
  assert.throws(() => model.embedding(3), /3/);
  assert.throws(() => model.varianceMap(0), /nComponents/);
  assert.throws(() => model.stageDone('finale'), /stage "finale"/);
  assert.throws(() => model.runStage('finale'), /stage "finale"/);
  const fresh = Model.create(dataset, { zdims: [1] });
  assert.equal(fresh.stageDone('mean'), false);
  assert.throws(() => fresh.mean(), Error);
  assert.throws(() => fresh.eigenvalues(), Error);
});

test('Model.create checks its options and its dataset', () => {
  assert.throws(() => Model.create(dataset, { zdims: [] }), /zdims is empty/);
  assert.throws(() => Model.create(dataset, { zdims: [0] }), /zdims/);
  assert.throws(() => Model.create(dataset, { zdims: [500] }), /principal components/);
  assert.throws(() => Model.create(dataset, { noiseModel: 'pink' }), /noiseModel "pink"/);
  assert.throws(() => Model.create(dataset, { memoryOption: 'tiny' }), /memoryOption "tiny"/);
  assert.throws(() => Model.create(dataset, { memoryBudget: -1 }), /memoryBudget/);
  const noPoses = Dataset.open({ particles: openOptions().particles });
  assert.throws(() => Model.create(noPoses), /no poses/);
});

test('generate makes a finite volume at a latent point', async () => {
  const { zs } = model.embedding(2);
  const v = await model.generate(2, zs.slice(0, 2), { nBins: 10 });
  assert.ok(v instanceof Volume);
  assert.equal(v.boxSize, N);
  assert.ok(allFinite(v.filtered));
  assert.ok(allFinite(v.unfiltered));
  assert.throws(() => model.generate(2, [0]), /point has 1 values, expected 2/);
  assert.throws(() => model.generate(2, [0, 0], { precisions: new Float32Array(4) }), /precisions/);
  await assert.rejects(model.generate(4, [0, 0, 0, 0]), Error);
});

test('save then load gives back the same model', async () => {
  const dir = path.join(tempDir(), 'out');
  await model.save(dir);
  const loaded = await Model.load(dir, { device: 'cpu' });
  assert.ok(loaded instanceof Model);
  assert.match(loaded.device, /^device: cpu/);
  await assert.rejects(Model.load(dir, { device: 'cuda:4096' }), /cuda:4096/);
  assert.deepEqual(Buffer.from(loaded.mean().buffer), Buffer.from(model.mean().buffer), 'mean bit for bit');
  assert.deepEqual(loaded.eigenvalues(), model.eigenvalues());
  assert.deepEqual(loaded.noise(), model.noise());
  assert.deepEqual(loaded.zdims(), [1, 2]);
  assert.deepEqual(loaded.embedding(2).zs, model.embedding(2).zs);
  assert.equal(loaded.stageDone('all'), true);
  // The particles are reopened from the recorded paths: kernel regression works.
  const v = await loaded.generate(1, [0], { nBins: 5 });
  assert.ok(allFinite(v.filtered));
  await assert.rejects(loaded.save(path.join(tempDir(), 'again')), /already saved/);
});

test('device: an explicit CPU says so, an absent GPU is an error naming it, a bad name is refused', async () => {
  const cpu = Model.create(dataset, { zdims: [1], device: 'cpu' });
  assert.match(cpu.device, /^device: cpu \(/);
  assert.doesNotMatch(cpu.device, /auto/);
  // auto never fails; without a usable GPU it says why it took the CPU.
  const auto = Model.create(dataset, { zdims: [1] });
  assert.match(auto.device, /^device: (cpu \(.*\); auto: no usable GPU|cuda:)/);
  // cuda:4096 exists nowhere: an error, never a silent fallback.
  assert.throws(() => Model.create(dataset, { device: 'cuda:4096' }), /cuda:4096/);
  await assert.rejects(model.generate(2, [0, 0], { nBins: 5, device: 'cuda:4096' }), /cuda:4096/);
  const ds = Dataset.open(openOptions());
  await assert.rejects(
    recovar.generateFromEmbedding(ds, new Float32Array(400), 1, [0], { nBins: 5, device: 'cuda:4096' }),
    /cuda:4096/,
  );
  // A name that is no device: refused at once, with the accepted spellings.
  for (const bad of ['tpu', 'cuda:', 'cuda:-1']) {
    const refused = (e) => e.code === 'InvalidArg' && /expected auto, cpu, cuda or cuda:N/.test(e.message);
    assert.throws(() => Model.create(dataset, { device: bad }), refused, bad);
    assert.throws(() => model.generate(2, [0, 0], { device: bad }), refused, bad);
    assert.throws(() => Model.load('x', { device: bad }), refused, bad);
  }
});

test('Model.load names a folder that is not a pipeline output', async () => {
  const dir = tempDir();
  await assert.rejects(Model.load(dir), (e) => e instanceof Error && e.message.includes(dir));
});

test('a stage leaves the event loop free, keeps the model busy, and reports progress', async (t) => {
  const m = Model.create(dataset, { zdims: [1] });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const reports = [];
  const t0 = performance.now();
  let busy = null;
  const running = m.runStage('mean', (stage, done, total) => {
    // The first report comes while the stage holds the model: a query must not block.
    if (reports.length === 0) {
      try {
        m.mean();
      } catch (e) {
        busy = e;
      }
    }
    reports.push([stage, done, total]);
  });
  assert.ok(running instanceof Promise);
  await running;
  clearInterval(timer);
  const ms = performance.now() - t0;
  t.diagnostic(`${ticks} timer ticks and ${reports.length} progress reports in ${ms.toFixed(0)} ms`);
  assert.ok(ticks >= Math.min(5, ms / 20), `${ticks} ticks in ${ms.toFixed(0)} ms`);
  assert.ok(reports.length > 0);
  assert.ok(reports.every(([s, d, n]) => typeof s === 'string' && d <= n));
  assert.match(busy?.message ?? 'no error', /busy/);
  assert.equal(m.stageDone('mean'), true);
  assert.equal(m.mean().length, N ** 3);
});

test('cancel() rejects the running stage; later stages run', async () => {
  const m = Model.create(dataset, { zdims: [1] });
  let first = true;
  const running = m.runStage('all', () => {
    // Cancel from the first progress report: the stage is certainly under way.
    if (first) m.cancel();
    first = false;
  });
  await assert.rejects(running, (e) => {
    assert.ok(e instanceof Error);
    assert.equal(e.code, 'Cancelled');
    assert.match(e.message, /cancelled/);
    return true;
  });
  assert.equal(m.stageDone('embedding'), false);
  await m.runStage('mean');
  assert.equal(m.stageDone('mean'), true);
});
