// Shared helpers of the Node binding's tests: the addon, the simulated dataset, a minimal
// MRC reader and correlation.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import recovar from '../index.js';

export { recovar };

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..', '..');

/** A fresh temporary folder, removed when the process exits. */
export function tempDir(prefix = 'recovar-node-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

let dataset = null;
/**
 * The tiny simulated dataset (400 images of 32 px, three discrete states): the folder in
 * RECOVAR_TEST_DATASET (test.sh makes it once), or one simulated here with the CLI in
 * RECOVAR_BIN (default: target/release/recovar).
 */
export function testDataset() {
  if (dataset) return dataset;
  if (process.env.RECOVAR_TEST_DATASET) {
    dataset = process.env.RECOVAR_TEST_DATASET;
  } else {
    const target = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
    const bin = process.env.RECOVAR_BIN || path.join(target, 'release', 'recovar');
    const out = tempDir();
    execFileSync(bin, ['make_test_dataset', out, '--image-size', '32', '--n-images', '400', '--discrete-only'], {
      stdio: 'ignore',
    });
    dataset = path.join(out, 'test_dataset');
  }
  return dataset;
}

/** The dataset's files, as Dataset.open takes them. */
export function openOptions(dir = testDataset()) {
  return {
    particles: path.join(dir, 'particles.32.mrcs'),
    poses: path.join(dir, 'poses.pkl'),
    ctf: path.join(dir, 'ctf.pkl'),
  };
}

/** ground_truth.txt: per image {state, latent, contrast}. */
export function groundTruth(dir = testDataset()) {
  return fs
    .readFileSync(path.join(dir, 'ground_truth.txt'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => {
      const [, state, latent, contrast] = l.trim().split(/\s+/).map(Number);
      return { state, latent, contrast };
    });
}

/** A float32 (mode 2) little-endian MRC volume: {data, nx, ny, nz, voxelSize}. */
export function readMrc(file) {
  const buf = fs.readFileSync(file);
  const [nx, ny, nz, mode] = [0, 4, 8, 12].map((o) => buf.readInt32LE(o));
  if (mode !== 2) throw new Error(`${file}: MRC mode ${mode}, this reader takes mode 2`);
  const offset = 1024 + buf.readInt32LE(92);
  const n = nx * ny * nz;
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = buf.readFloatLE(offset + 4 * i);
  const mx = buf.readInt32LE(28);
  return { data, nx, ny, nz, voxelSize: buf.readFloatLE(40) / mx };
}

/** Pearson correlation of two equally long arrays. */
export function corr(a, b) {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i] - ma;
    const y = b[i] - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  return sab / Math.sqrt(saa * sbb);
}

/** a − b, elementwise. */
export function sub(a, b) {
  return a.map((v, i) => v - b[i]);
}

/** True when every value is finite. */
export function allFinite(a) {
  return a.every((v) => Number.isFinite(v));
}
