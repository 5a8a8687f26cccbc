// The .wasm module against the native library: the same calls as
// ../examples/reference.rs (keep the two in step), compared with the JSON it printed.
// test.sh runs the example and sets RECOVAR_WASM_REFERENCE; without it this file skips.
//
// What to expect: everything computed without an FFT (CTF, poses, CTF rows, ground-truth
// volumes) is bit-identical. Results that pass through FFTs differ in the last bits,
// because natively rustfft picks AVX kernels (other butterflies, fused multiply-adds)
// while wasm32 runs its scalar ones; they agree to f32 rounding (measured ≤ 1.3e-7 of the
// array's largest value, kernel regression included).
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { wasm } from '../support/helpers.mjs';

const refPath = process.env.RECOVAR_WASM_REFERENCE;

function results() {
  const out = {};
  const sim = wasm.simulate({ imageSize: 16, nImages: 240, noiseLevel: 0.05, seed: 5, discreteOnly: true });
  out['simulate.images'] = sim.images;
  out['simulate.rotations'] = sim.rotations;
  out['simulate.ctf'] = sim.ctf;
  out['ctfImage'] = wasm.ctfImage(sim.ctf.subarray(0, 9), 24);
  const v1 = sim.volume(1, 0);
  const v2 = sim.volume(2, 0);
  out['volume2'] = v2;
  out['project.cubic1'] = wasm.project(v2, sim.rotations.subarray(0, 27), 1, 'cubic');
  out['project.trilinear2'] = wasm.project(v2, sim.rotations.subarray(0, 27), 2, 'trilinear');
  out['fsc'] = wasm.fsc(v1, v2);
  const z = new Float32Array(sim.length);
  sim.states.forEach((s, i) => { z[i] = s + (((i * 37) % 11) - 5) / 50; });
  const ds = new wasm.Dataset(sim.images, sim.rotations, sim.translations, sim.ctf, 0);
  out['noiseProfile'] = ds.noiseProfile();
  const v = ds.generateVolume(z, [2], { nBins: 8, nMinImages: 20 });
  out['kernel.unfiltered'] = v.unfiltered;
  out['kernel.filtered'] = v.filtered;
  return out;
}

// Bit-identical on both sides (no FFT on the way).
const exact = new Set(['simulate.rotations', 'simulate.ctf', 'ctfImage', 'volume2']);
// Largest |wasm − native| allowed, relative to the array's largest |native| value.
const tolerance = { 'kernel.unfiltered': 1e-5, 'kernel.filtered': 1e-5 };
const defaultTolerance = 1e-6;

test('wasm results equal the native library\'s', { skip: refPath ? false : 'RECOVAR_WASM_REFERENCE is not set (test.sh sets it)' }, (t) => {
  const ref = JSON.parse(fs.readFileSync(refPath, 'utf8'));
  const got = results();
  assert.deepEqual(Object.keys(got).sort(), Object.keys(ref).sort(), 'the same quantities on both sides');
  for (const [name, a] of Object.entries(got)) {
    const bits = ref[name];
    assert.equal(a.length, bits.length, `${name}: length`);
    const f32 = a instanceof Float32Array;
    const native = f32
      ? new Float32Array(new Uint32Array(bits).buffer)
      : new Float64Array(new BigUint64Array(bits.map(BigInt)).buffer);
    let differing = 0, worst = 0, scale = 0;
    for (let i = 0; i < a.length; i++) {
      if (!Object.is(a[i], native[i])) differing++;
      worst = Math.max(worst, Math.abs(a[i] - native[i]));
      scale = Math.max(scale, Math.abs(native[i]));
    }
    t.diagnostic(`${name}: ${a.length - differing}/${a.length} bit-identical, max |Δ| ${worst.toExponential(2)} of ${scale.toExponential(2)}`);
    if (exact.has(name)) {
      assert.equal(differing, 0, `${name}: ${differing} values differ from the native ones`);
    } else {
      const tol = tolerance[name] ?? defaultTolerance;
      assert.ok(worst <= tol * scale, `${name}: max |Δ| ${worst} > ${tol} × ${scale}`);
    }
  }
});
