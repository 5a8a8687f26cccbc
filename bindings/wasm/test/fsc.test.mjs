// fsc against a naive 3-D DFT written here, and fscResolution against hand-computed values.
import test from 'node:test';
import assert from 'node:assert/strict';
import { wasm, uniform, throwsWith } from '../support/helpers.mjs';

// FSC from the definition: shells round(|k|) of the centered frequencies k = index − n/2,
// Σ Re(conj(A)·B) / sqrt(Σ|A|²·Σ|B|²) for shells 0 .. n/2 − 2, then FSC(0) := FSC(1).
function naiveFsc(a, b, n) {
  const ns = n / 2 - 1;
  const sums = Array.from({ length: ns }, () => [0, 0, 0]);
  const cos = [], sin = [];
  for (let t = 0; t < n; t++) {
    cos.push(Math.cos((2 * Math.PI * t) / n));
    sin.push(Math.sin((2 * Math.PI * t) / n));
  }
  for (let kz = -n / 2; kz < n / 2; kz++) {
    for (let ky = -n / 2; ky < n / 2; ky++) {
      for (let kx = -n / 2; kx < n / 2; kx++) {
        const shell = Math.round(Math.hypot(kx, ky, kz));
        if (shell >= ns) continue;
        let ar = 0, ai = 0, br = 0, bi = 0;
        for (let z = 0; z < n; z++) {
          for (let y = 0; y < n; y++) {
            for (let x = 0; x < n; x++) {
              // The phase origin does not change |A|², |B|² or conj(A)·B.
              const t = (((kx * x + ky * y + kz * z) % n) + n) % n;
              const i = (z * n + y) * n + x;
              ar += a[i] * cos[t]; ai -= a[i] * sin[t];
              br += b[i] * cos[t]; bi -= b[i] * sin[t];
            }
          }
        }
        sums[shell][0] += ar * br + ai * bi;
        sums[shell][1] += ar * ar + ai * ai;
        sums[shell][2] += br * br + bi * bi;
      }
    }
  }
  const f = sums.map(([ab, aa, bb]) => ab / Math.sqrt(aa * bb));
  f[0] = f[1];
  return f;
}

const n = 10;
const u = uniform(3);
const a = new Float32Array(n ** 3).map(() => u() - 0.5);
// b: a smoothed copy of a plus noise, so the FSC falls with frequency.
const b = new Float32Array(n ** 3);
for (let z = 0; z < n; z++) {
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const i = (z * n + y) * n + x;
      const nb = (z * n + y) * n + ((x + 1) % n);
      b[i] = 0.5 * (a[i] + a[nb]) + 0.3 * (u() - 0.5);
    }
  }
}

test('fsc equals the definition (naive DFT)', () => {
  const got = wasm.fsc(a, b);
  assert.ok(got instanceof Float64Array);
  assert.equal(got.length, n / 2 - 1);
  const want = naiveFsc(a, b, n);
  for (let s = 0; s < got.length; s++) {
    assert.ok(Math.abs(got[s] - want[s]) < 1e-5, `shell ${s}: ${got[s]} vs ${want[s]}`);
  }
  assert.ok(want[1] > want[3], 'the test pair should decorrelate with frequency');
});

test('fsc of a volume with itself is 1 and with its negative −1', () => {
  for (const v of wasm.fsc(a, a)) assert.ok(Math.abs(v - 1) < 1e-6);
  for (const v of wasm.fsc(a, a.map((x) => -x))) assert.ok(Math.abs(v + 1) < 1e-6);
});

test('fscResolution interpolates the crossing as RECOVAR does', () => {
  const curve = [1, 1, 0.8, 0.4, 0.1];
  // First shell below 0.5 is 3: crossing at 2 + (0.8 − 0.5)/(0.8 − 0.4) = 2.75.
  assert.ok(Math.abs(wasm.fscResolution(curve, 64, 2, 0.5) - 128 / 2.75) < 1e-12);
  // Default threshold 0.143: 3 + (0.4 − 0.143)/(0.4 − 0.1).
  assert.ok(Math.abs(wasm.fscResolution(curve, 64, 2) - 128 / (3 + 0.257 / 0.3)) < 1e-9);
  // Never crossing: the last shell.
  assert.equal(wasm.fscResolution([1, 1, 0.9], 64, 2, 0.5), 64);
});

test('fsc and fscResolution reject bad inputs with a clear message', () => {
  throwsWith(assert, () => wasm.fsc(a, b.subarray(0, 999)), 'volumeB has 999 values', 'same size');
  throwsWith(assert, () => wasm.fsc(new Float32Array(7), new Float32Array(7)), 'volumeA has 7 values', 'N³');
  throwsWith(assert, () => wasm.fsc(new Float32Array(27), new Float32Array(27)), 'at least 4');
  const bad = b.slice();
  bad[17] = NaN;
  throwsWith(assert, () => wasm.fsc(a, bad), 'volumeB[17] is NaN');
  throwsWith(assert, () => wasm.fscResolution([], 64, 2), 'fsc is empty');
  throwsWith(assert, () => wasm.fscResolution([1, 0.5], 64, 0), 'voxelSize = 0');
  throwsWith(assert, () => wasm.fscResolution([1, 0.5], 6.5, 1), 'boxSize = 6.5');
});
