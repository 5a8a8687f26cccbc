// simulate: shapes, determinism, ground truth, and the option checks.
import test from 'node:test';
import assert from 'node:assert/strict';
import { wasm, throwsWith } from '../support/helpers.mjs';

const options = { imageSize: 16, nImages: 50, seed: 4, discreteOnly: true };

test('simulate returns every array with its documented shape', () => {
  const sim = wasm.simulate(options);
  const [n, d] = [50, 16];
  assert.equal(sim.length, n);
  assert.equal(sim.imageSize, d);
  assert.equal(sim.voxelSize, (4.25 * 128) / d); // a 544 Å box, as RECOVAR's test set
  assert.equal(sim.images.length, n * d * d);
  assert.equal(sim.rotations.length, n * 9);
  assert.equal(sim.translations.length, n * 2);
  assert.equal(sim.ctf.length, n * 9);
  assert.equal(sim.states.length, n);
  assert.ok(sim.states.every((s) => s <= 2));
  assert.ok(sim.latents.every((h) => h === 0), 'discreteOnly holds the hinge at rest');
  assert.ok(sim.contrasts.every((c) => c > 0.5 && c < 1.5));
  for (let i = 0; i < n; i++) {
    assert.equal(sim.ctf[9 * i], d);
    assert.equal(sim.ctf[9 * i + 1], sim.voxelSize);
    // Rotations are orthonormal: R Rᵀ = I.
    const R = sim.rotations.subarray(9 * i, 9 * i + 9);
    for (let a = 0; a < 3; a++) {
      for (let b = 0; b < 3; b++) {
        let dot = 0;
        for (let k = 0; k < 3; k++) dot += R[3 * a + k] * R[3 * b + k];
        assert.ok(Math.abs(dot - (a === b ? 1 : 0)) < 1e-6);
      }
    }
  }
  assert.equal(sim.volume(2).length, d ** 3);
  assert.equal(sim.meanVolume().length, d ** 3);
  // Noise power per shell, from shell 0 to the corner.
  assert.ok(sim.noiseProfile.length > d / 2 && sim.noiseProfile.every((p) => p > 0));
});

test('the same options give the same bytes; another seed does not', () => {
  const a = wasm.simulate(options);
  const b = wasm.simulate({ ...options });
  assert.deepEqual(a.images, b.images);
  assert.deepEqual(a.rotations, b.rotations);
  assert.deepEqual(a.ctf, b.ctf);
  const c = wasm.simulate({ ...options, seed: 5 });
  assert.notDeepEqual(a.images, c.images);
});

test('the ground truth changes with the state and with the hinge', () => {
  const sim = wasm.simulate(options);
  const [v0, v1, v2] = [0, 1, 2].map((s) => sim.volume(s));
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const diff = (a, b) => a.map((x, i) => x - b[i]);
  // State 0 has no lid; 1 and 2 put it at two sites.
  assert.ok(norm(diff(v1, v0)) > 0.05 * norm(v0));
  assert.ok(norm(diff(v2, v1)) > 0.05 * norm(v0));
  // The hinge moves the arm.
  assert.ok(norm(diff(sim.volume(0, 1), v0)) > 0.05 * norm(v0));
});

test('simulate checks its options', () => {
  throwsWith(assert, () => wasm.simulate({ imageSize: 17 }), 'options.imageSize = 17', 'even');
  throwsWith(assert, () => wasm.simulate({ imageSize: 8 }), 'options.imageSize = 8', '16..=128');
  throwsWith(assert, () => wasm.simulate({ nImages: 0 }), 'options.nImages = 0');
  throwsWith(assert, () => wasm.simulate({ seed: -1 }), 'options.seed = -1');
  throwsWith(assert, () => wasm.simulate({ noiseLevel: NaN }), 'options.noiseLevel = NaN');
  throwsWith(assert, () => wasm.simulate({ nimages: 10 }), 'unknown option "nimages"', 'nImages');
  throwsWith(assert, () => wasm.simulate({ seed: '3' }), 'options.seed must be a number');
  throwsWith(assert, () => wasm.simulate({ discreteOnly: 1 }), 'options.discreteOnly must be true or false');
  throwsWith(assert, () => wasm.simulate(42), 'options must be an object');
  const sim = wasm.simulate(options);
  throwsWith(assert, () => sim.volume(3), 'state = 3');
  throwsWith(assert, () => sim.volume(0, 2), 'latent = 2');
});
