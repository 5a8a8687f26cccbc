// ctfImage against cryoDRGN's CTF formula, written out here independently (f64, atan2).
import test from 'node:test';
import assert from 'node:assert/strict';
import { wasm, throwsWith } from '../support/helpers.mjs';

// cryoDRGN ctf.compute_ctf at spatial frequency (x, y) in 1/Å. The parameters go
// through f32 first, as in a dataset (ctf.pkl is float32).
function ctfAt(row, x, y) {
  const f = Math.fround;
  const [dfu, dfv, dfang, kv, cs, w, ps] = row.slice(2).map(f);
  const volt = kv * 1000;
  const lam = 12.2639 / Math.sqrt(volt + 0.97845e-6 * volt * volt);
  const s2 = x * x + y * y;
  const ang = Math.atan2(y, x);
  const df = 0.5 * (dfu + dfv + (dfu - dfv) * Math.cos(2 * (ang - (dfang * Math.PI) / 180)));
  const gamma = 2 * Math.PI * (-0.5 * df * lam * s2 + 0.25 * cs * 1e7 * lam ** 3 * s2 * s2) -
    (ps * Math.PI) / 180;
  return Math.sqrt(1 - w * w) * Math.sin(gamma) - w * Math.cos(gamma);
}

function expected(row, d) {
  const apix = (row[0] * row[1]) / d; // the stack's pixel size
  const out = new Float64Array(d * d);
  for (let r = 0; r < d; r++) {
    for (let c = 0; c < d; c++) {
      out[r * d + c] = ctfAt(row, (c - d / 2) / (d * apix), (r - d / 2) / (d * apix));
    }
  }
  return out;
}

const rows = [
  // D, Apix, dfU, dfV, dfang, kV, Cs, w, phase shift
  [64, 1.5, 15000, 14000, 30, 300, 2.7, 0.1, 0],
  [48, 0.83, 21234.5, 20100.25, 117.3, 200, 2.0, 0.07, 0],
  [32, 2.1, 9000, 9800, -45, 300, 0.01, 0.1, 90], // phase plate, dfV > dfU
];

test('ctfImage equals the formula at every pixel', () => {
  for (const row of rows) {
    const d = row[0];
    const got = wasm.ctfImage(new Float64Array(row));
    assert.ok(got instanceof Float32Array);
    assert.equal(got.length, d * d);
    const want = expected(row, d);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    // f32 storage of values in [−1, 1]: half an ulp is 6e-8.
    assert.ok(worst < 2e-7, `row ${row}: max |Δ| = ${worst}`);
  }
});

test('the centre pixel is −w (γ = 0 at zero frequency, no phase shift)', () => {
  const row = rows[0];
  const d = row[0];
  assert.equal(wasm.ctfImage(row)[(d / 2) * d + d / 2], -Math.fround(row[7]));
});

test('another image size rescales the pixel size (a downsampled stack)', () => {
  const row = rows[0];
  const got = wasm.ctfImage(row, 40);
  assert.equal(got.length, 40 * 40);
  const want = expected(row, 40);
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 2e-7);
  // The box is the same 96 Å, so both grids step by 1/96 Å⁻¹: pixel (20, 21) of the
  // 40-px image and pixel (32, 33) of the 64-px one are the same frequency (1/96, 0).
  const big = wasm.ctfImage(row);
  assert.ok(Math.abs(got[20 * 40 + 21] - big[32 * 64 + 33]) < 1e-6);
});

test('ctfImage rejects malformed rows with a clear message', () => {
  throwsWith(assert, () => wasm.ctfImage([64, 1.5, 15000]), 'ctfRow has 3 values', '9');
  throwsWith(assert, () => wasm.ctfImage([64, 1.5, NaN, 14000, 30, 300, 2.7, 0.1, 0]),
    'column 2', 'DefocusU', 'finite');
  throwsWith(assert, () => wasm.ctfImage([64, 1.5, 15000, 14000, 30, -300, 2.7, 0.1, 0]),
    'voltage must be positive');
  throwsWith(assert, () => wasm.ctfImage([64, 0, 15000, 14000, 30, 300, 2.7, 0.1, 0]),
    'pixel size must be positive');
  throwsWith(assert, () => wasm.ctfImage([64, 1.5, 15000, 14000, 30, 300, 2.7, 1.5, 0]),
    'amplitude contrast');
  throwsWith(assert, () => wasm.ctfImage([64.5, 1.5, 15000, 14000, 30, 300, 2.7, 0.1, 0]),
    'ctfRow[0]', 'whole number');
  throwsWith(assert, () => wasm.ctfImage(rows[0], 0), 'imageSize = 0');
  throwsWith(assert, () => wasm.ctfImage(rows[0], 2.5), 'imageSize = 2.5');
  throwsWith(assert, () => wasm.ctfImage(rows[0], 1e6), 'imageSize = 1000000');
});
