// Dataset.open / Dataset.fromArrays, their getters, and their error messages.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';

import { openOptions, recovar, testDataset } from './helpers.mjs';

const { Dataset } = recovar;

test('version is the crate version', () => {
  assert.match(recovar.version(), /^\d+\.\d+\.\d+$/);
});

test('Dataset.open reads the simulated set', () => {
  const ds = Dataset.open(openOptions());
  assert.equal(ds.count, 400);
  assert.equal(ds.totalInFile, 400);
  assert.equal(ds.boxSize, 32);
  assert.ok(ds.voxelSize > 0);
});

test('Dataset.open honours nImages, seed and uninvert', () => {
  const ds = Dataset.open({ ...openOptions(), nImages: 50, seed: 3, uninvert: false });
  assert.equal(ds.count, 50);
  assert.equal(ds.totalInFile, 400);
  assert.equal(Dataset.open({ ...openOptions(), uninvert: 'automatic' }).count, 400);
});

test('Dataset.open takes poses and CTF from a .star file', () => {
  const ds = Dataset.open({ particles: path.join(testDataset(), 'particles.star'), requirePoses: true, requireCtf: true });
  assert.equal(ds.count, 400);
});

test('a missing file is an Error that names it', () => {
  const missing = path.join(testDataset(), 'no_such_poses.pkl');
  assert.throws(() => Dataset.open({ ...openOptions(), poses: missing }), (e) => {
    assert.ok(e instanceof Error);
    assert.ok(e.message.includes(missing), e.message);
    return true;
  });
  const particles = path.join(testDataset(), 'missing.mrcs');
  assert.throws(() => Dataset.open({ particles }), (e) => e instanceof Error && e.message.includes('missing.mrcs'));
});

test('bad options are refused with a message', () => {
  assert.throws(() => Dataset.open({ ...openOptions(), nImages: 0 }), /nImages must be a whole number >= 1/);
  assert.throws(() => Dataset.open({ ...openOptions(), nImages: 2.5 }), /nImages/);
  assert.throws(() => Dataset.open({ ...openOptions(), seed: -1 }), /seed/);
  assert.throws(() => Dataset.open({ ...openOptions(), uninvert: 'maybe' }), /uninvert "maybe"/);
  assert.throws(() => Dataset.open({ ...openOptions(), particles: '' }), /particles is an empty string/);
  assert.throws(() => Dataset.open({}), Error);
  assert.throws(() => new Dataset(), Error);
});

/** n images of d px with identity poses and one CTF row, as typed arrays. */
function arrays(n, d) {
  const rotations = new Float32Array(n * 9);
  for (let i = 0; i < n; i++) [0, 4, 8].forEach((k) => (rotations[i * 9 + k] = 1));
  const ctf = new Float64Array(n * 9);
  for (let i = 0; i < n; i++) ctf.set([d, 2.0, 15000, 15000, 0, 300, 2.7, 0.1, 0], i * 9);
  const images = new Float32Array(n * d * d).map((_, i) => Math.sin(i));
  return { images, nImages: n, boxSize: d, rotations, translations: new Float32Array(n * 2), ctf, seed: 1 };
}

test('Dataset.fromArrays copies caller arrays', () => {
  const ds = Dataset.fromArrays(arrays(10, 16));
  assert.equal(ds.count, 10);
  assert.equal(ds.boxSize, 16);
  assert.equal(ds.voxelSize, 2.0);
});

test('Dataset.fromArrays checks every array size', () => {
  const a = arrays(10, 16);
  assert.throws(() => Dataset.fromArrays({ ...a, images: new Float32Array(10) }), /images has 10 values, expected 2560/);
  assert.throws(() => Dataset.fromArrays({ ...a, rotations: new Float32Array(9) }), /rotations has 9 values, expected 90/);
  assert.throws(() => Dataset.fromArrays({ ...a, translations: new Float32Array(3) }), /translations has 3 values/);
  assert.throws(() => Dataset.fromArrays({ ...a, ctf: new Float64Array(9) }), /ctf has 9 values/);
  assert.throws(() => Dataset.fromArrays({ ...a, boxSize: 15, images: new Float32Array(10 * 15 * 15) }), /even/);
  assert.throws(() => Dataset.fromArrays({ ...a, nImages: 0 }), /nImages/);
  assert.throws(() => Dataset.fromArrays({ ...a, images: [1, 2, 3] }), Error);
  const bad = arrays(10, 16);
  bad.rotations[0] = NaN;
  assert.throws(() => Dataset.fromArrays(bad), Error);
});
