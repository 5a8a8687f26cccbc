// project against closed forms: an off-centre Gaussian blob projects to a 2-D Gaussian at
// the rotated centre, so both the interpolation accuracy and the rotation convention
// (cryoDRGN's: image x, y axes are rows 0, 1 of R) are checked.
import test from 'node:test';
import assert from 'node:assert/strict';
import { wasm, randomRotations, relativeError, correlation, throwsWith } from '../support/helpers.mjs';

const n = 32;
const sigma = 2; // voxels; its spectrum is < 1e-7 beyond the clipping radius N/2 − 1
const centre = [3, -2, 5]; // x, y, z in voxels from voxel N/2

const volume = new Float32Array(n ** 3);
for (let z = 0; z < n; z++) {
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const r2 = (x - n / 2 - centre[0]) ** 2 + (y - n / 2 - centre[1]) ** 2 +
        (z - n / 2 - centre[2]) ** 2;
      volume[(z * n + y) * n + x] = Math.exp(-r2 / (2 * sigma * sigma));
    }
  }
}

// Line integral of the blob along R[2,:]: a 2-D Gaussian of mass √(2π)σ per unit area,
// centred at (R·centre)[0] (column) and (R·centre)[1] (row).
function expectedProjection(R) {
  const q = [0, 1].map((i) => R[3 * i] * centre[0] + R[3 * i + 1] * centre[1] + R[3 * i + 2] * centre[2]);
  const out = new Float64Array(n * n);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const d2 = (c - n / 2 - q[0]) ** 2 + (r - n / 2 - q[1]) ** 2;
      out[r * n + c] = Math.sqrt(2 * Math.PI) * sigma * Math.exp(-d2 / (2 * sigma * sigma));
    }
  }
  return out;
}

const K = 12;
const rotations = randomRotations(K, 7);

function worst(images, expectedOf) {
  let rel = 0, corr = 1;
  for (let k = 0; k < K; k++) {
    const got = images.subarray(k * n * n, (k + 1) * n * n);
    const want = expectedOf(rotations.subarray(9 * k, 9 * k + 9));
    rel = Math.max(rel, relativeError(got, want));
    corr = Math.min(corr, correlation(got, want));
  }
  return { rel, corr };
}

test('the identity projection is the sum along z, for every interpolation', () => {
  const sum = new Float64Array(n * n);
  for (let z = 0; z < n; z++) for (let i = 0; i < n * n; i++) sum[i] += volume[z * n * n + i];
  for (const s of [1, 2]) {
    for (const interp of ['cubic', 'trilinear', 'nearest']) {
      const img = wasm.project(volume, [1, 0, 0, 0, 1, 0, 0, 0, 1], s, interp);
      assert.equal(img.length, n * n);
      const e = relativeError(img, sum);
      assert.ok(e < 1e-6, `${interp}, oversampling ${s}: relative error ${e}`);
    }
  }
});

test('rotated projections match the closed form (accuracy per interpolation)', () => {
  // Measured: cubic N grid 5.6e-3, cubic 2N 2.6e-4, trilinear 2N 3.9e-2 (max error
  // relative to the peak); correlations 0.99998, 1 − 1e-7, 0.9998.
  const bounds = [
    [1, 'cubic', 1e-2, 0.9999],
    [2, 'cubic', 1e-3, 0.99999],
    [2, 'trilinear', 6e-2, 0.999],
    [1, 'trilinear', 0.25, 0.99],
    [2, 'nearest', 0.25, 0.95],
  ];
  for (const [s, interp, maxRel, minCorr] of bounds) {
    const images = wasm.project(volume, rotations, s, interp);
    assert.equal(images.length, K * n * n);
    const { rel, corr } = worst(images, expectedProjection);
    assert.ok(rel < maxRel && corr > minCorr,
      `${interp}, oversampling ${s}: relative error ${rel}, correlation ${corr}`);
  }
  // The defaults are the pipeline's: cubic on the N grid.
  assert.deepEqual(wasm.project(volume, rotations), wasm.project(volume, rotations, 1, 'cubic'));
});

test('the test tells the rotation from its transpose', () => {
  const images = wasm.project(volume, rotations, 2, 'cubic');
  const transposed = (R) => [R[0], R[3], R[6], R[1], R[4], R[7], R[2], R[5], R[8]];
  const { corr } = worst(images, (R) => expectedProjection(transposed(R)));
  assert.ok(corr < 0.5, `correlation with the transposed convention ${corr}`);
});

test('project rejects bad inputs with a clear message', () => {
  throwsWith(assert, () => wasm.project(new Float32Array(1000 + 1), [1, 0, 0, 0, 1, 0, 0, 0, 1]),
    'volume has 1001 values', 'N³');
  throwsWith(assert, () => wasm.project(new Float32Array(27), [1, 0, 0, 0, 1, 0, 0, 0, 1]),
    'volume side 3 must be even');
  throwsWith(assert, () => wasm.project(volume, [1, 0, 0, 0, 1, 0, 0, 0]),
    'rotations has 8 values', 'multiple of 9');
  throwsWith(assert, () => wasm.project(volume, new Float32Array(0)), 'rotations has 0 values');
  throwsWith(assert, () => wasm.project(volume, [1, 0, 0, 0, 1, 0, 0, 0, NaN]),
    'rotations[8] is NaN');
  throwsWith(assert, () => wasm.project(volume, [2, 0, 0, 0, 1, 0, 0, 0, 1]),
    'rotation 0', 'not a rotation-matrix entry');
  const bad = volume.slice();
  bad[5] = Infinity;
  throwsWith(assert, () => wasm.project(bad, rotations), 'volume[5] is Infinity');
  throwsWith(assert, () => wasm.project(volume, rotations, 3), 'oversampling = 3');
  throwsWith(assert, () => wasm.project(volume, rotations, 1, 'linear'),
    'interpolation "linear"', 'trilinear');
});
