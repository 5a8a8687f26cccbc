// Dataset.generateVolume on a simulated discrete set: with the true states as a 1-D
// embedding, the volume at a state's latent point must show that state (the checks of
// `recovar run_test_dataset` for generate_from_embedding), and the noise estimated from
// the images must match the simulated noise.
import test from 'node:test';
import assert from 'node:assert/strict';
import { wasm, correlation, throwsWith } from '../support/helpers.mjs';

const N = 600;
const D = 32;
const sim = wasm.simulate({ imageSize: D, nImages: N, seed: 1, discreteOnly: true });
const truth = [0, 1, 2].map((s) => sim.volume(s));
const mean = sim.meanVolume();
// The true state of each image, spread by a deterministic jitter of ±0.1.
const embedding = new Float32Array(N);
sim.states.forEach((s, i) => { embedding[i] = s + (((i * 37) % 11) - 5) / 50; });
const options = { nBins: 10, nMinImages: 30 };
const dataset = new wasm.Dataset(sim.images, sim.rotations, sim.translations, sim.ctf);

/** Correlation of the volume's difference from the mean with each true state's. */
function stateCorrelations(volume) {
  const diff = volume.map((x, i) => x - mean[i]);
  return truth.map((t) => correlation(diff, t.map((x, i) => x - mean[i])));
}

test('the dataset reports its sizes', () => {
  assert.equal(dataset.length, N);
  assert.equal(dataset.boxSize, D);
  assert.ok(Math.abs(dataset.voxelSize - sim.voxelSize) < 1e-12);
});

test('the estimated noise profile matches the simulated one', () => {
  const est = dataset.noiseProfile();
  assert.equal(est.length, D / 2 - 1);
  // Measured: within 3 % from shell 1 on (shell 0 is a handful of pixels).
  for (let s = 1; s < est.length; s++) {
    const ratio = est[s] / sim.noiseProfile[s];
    assert.ok(Math.abs(ratio - 1) < 0.1, `shell ${s}: estimated/simulated = ${ratio}`);
  }
  assert.deepEqual(dataset.noiseProfile(), est, 'estimated once and kept');
});

for (const state of [0, 2]) {
  test(`the volume at state ${state}'s latent point shows state ${state}`, () => {
    const v = dataset.generateVolume(embedding, [state], options);
    const n3 = D ** 3;
    for (const name of ['filtered', 'unfiltered', 'half1', 'half2', 'localResolution']) {
      assert.ok(v[name] instanceof Float32Array && v[name].length === n3, name);
      assert.ok(v[name].every(Number.isFinite), `${name} is finite`);
    }
    assert.equal(v.boxSize, D);
    assert.ok(Math.abs(v.voxelSize - sim.voxelSize) < 1e-12);
    assert.equal(v.distances.length, N);
    assert.equal(v.nImagesPerBin.length, options.nBins);
    // Measured (600 images): right state 0.52 / 0.50 (others ≤ 0.10), map correlation 0.97.
    const c = stateCorrelations(v.filtered);
    const others = Math.max(...c.filter((_, k) => k !== state));
    assert.ok(c[state] > 0.4 && c[state] > others + 0.2,
      `difference-map correlations with states 0, 1, 2: ${c.map((x) => x.toFixed(3))}`);
    assert.ok(correlation(v.filtered, truth[state]) > 0.9);
    // Local resolution: 0 where no window reaches, else between Nyquist and the 50 Å cap
    // (at 17 Å voxels it sits next to Nyquist).
    const nyquist = 2 * v.voxelSize;
    const resolved = v.localResolution.filter((r) => r !== 0);
    assert.ok(resolved.length > n3 / 2);
    assert.ok(resolved.every((r) => r >= nyquist - 1e-3 && r <= 50 + 1e-3));
    // The halves agree at low resolution.
    assert.ok(v.fsc[1] > 0.8, `half-map FSC at shell 1: ${v.fsc[1]}`);
  });
}

test('identity precisions give the same volume as none', () => {
  const a = dataset.generateVolume(embedding, [1], options);
  const b = dataset.generateVolume(embedding, [1], options, new Float32Array(N).fill(1));
  assert.deepEqual(a.filtered, b.filtered);
});

test('Dataset and generateVolume reject bad inputs with a clear message', () => {
  const { images, rotations, translations, ctf } = sim;
  const make = (i, r, t, c) => () => new wasm.Dataset(i, r, t, c);
  throwsWith(assert, make(images.subarray(1), rotations, translations, ctf),
    `images has ${N * D * D - 1} values`);
  throwsWith(assert, make(images, rotations.subarray(1), translations, ctf),
    `rotations has ${9 * N - 1} values`, 'multiple of 9');
  throwsWith(assert, make(images, rotations, translations.subarray(2), ctf),
    `translations has ${2 * N - 2} values`);
  throwsWith(assert, make(images, rotations, translations, ctf.subarray(9)),
    `ctf has ${9 * N - 9} values`);
  const nan = images.slice();
  nan[123] = NaN;
  throwsWith(assert, make(nan, rotations, translations, ctf), 'images[123] is NaN');
  const badCtf = ctf.slice();
  badCtf[9 + 1] = 2 * ctf[1]; // image 1 with another pixel size
  throwsWith(assert, make(images, rotations, translations, badCtf), 'CTF row 1', 'pixel size');
  throwsWith(assert, () => new wasm.Dataset(images, rotations, translations, ctf, 0.5),
    'halfsetSeed = 0.5');

  const gen = (...args) => () => dataset.generateVolume(...args);
  throwsWith(assert, gen(embedding.subarray(1), [1], options),
    `embedding has ${N - 1} values`, 'zdim 1');
  throwsWith(assert, gen(embedding, [], options), 'target is empty');
  throwsWith(assert, gen(embedding, [NaN], options), 'target[0] is NaN');
  throwsWith(assert, gen(embedding, [1, 1], options), `embedding has ${N} values`, 'zdim 2');
  throwsWith(assert, gen(embedding, [1], { nBins: 0 }), 'options.nBins = 0');
  throwsWith(assert, gen(embedding, [1], { nBins: 2.5 }), 'options.nBins = 2.5');
  throwsWith(assert, gen(embedding, [1], { bfactor: Infinity }), 'options.bfactor = Infinity');
  throwsWith(assert, gen(embedding, [1], { nbins: 10 }), 'unknown option "nbins"', 'nBins');
  throwsWith(assert, gen(embedding, [1], options, new Float32Array(N - 1)),
    `precisions has ${N - 1} values`);
});
