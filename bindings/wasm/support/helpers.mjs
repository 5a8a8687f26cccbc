// Shared by the Node tests in ../test (kept outside test/ so `node --test` does not run it
// as a test file). Loads the module built by ../build.sh and gives small numeric helpers.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.join(here, '..', 'pkg', 'recovar_wasm.js');
if (!fs.existsSync(pkg)) {
  throw new Error(`${pkg} is missing: run bindings/wasm/build.sh first`);
}
// `wasm-bindgen --target nodejs` writes a CommonJS module.
export const wasm = createRequire(import.meta.url)(pkg);

/** Pearson correlation of two equally long arrays. */
export function correlation(a, b) {
  const n = a.length;
  let ma = 0, mb = 0;
  for (let i = 0; i < n; i++) { ma += a[i]; mb += b[i]; }
  ma /= n; mb /= n;
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i] - ma, y = b[i] - mb;
    ab += x * y; aa += x * x; bb += y * y;
  }
  return ab / Math.sqrt(aa * bb);
}

/** max |a − b| / max |b|. */
export function relativeError(a, b) {
  let d = 0, s = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return d / s;
}

/** A seeded generator of uniform numbers in [0, 1) (mulberry32), for test inputs. */
export function uniform(seed) {
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) >>> 0;
    let r = Math.imul(t ^ (t >>> 15), 1 | t);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

/** Row-major rotation matrix of the unit quaternion (w, x, y, z) (normalized here). */
export function rotationFromQuaternion(w, x, y, z) {
  const n = Math.hypot(w, x, y, z);
  [w, x, y, z] = [w / n, x / n, y / n, z / n];
  return [
    1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
    2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
    2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
  ];
}

/** `k` random rotations (row-major, concatenated) from a seeded stream. */
export function randomRotations(k, seed) {
  const u = uniform(seed);
  const out = new Float32Array(9 * k);
  for (let i = 0; i < k; i++) {
    out.set(rotationFromQuaternion(u() - 0.5, u() - 0.5, u() - 0.5, u() - 0.5), 9 * i);
  }
  return out;
}

/** Asserts that `fn` throws an Error whose message contains every string of `parts`. */
export function throwsWith(assert, fn, ...parts) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof Error, `expected an Error, got ${e}`);
    for (const p of parts) {
      assert.ok(e.message.includes(p), `message "${e.message}" does not mention "${p}"`);
    }
    return true;
  });
}
