// writeMrc and readEmbedding: the file helpers that need no pipeline.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { readMrc, recovar, tempDir } from './helpers.mjs';

const { readEmbedding, writeMrc } = recovar;

test('writeMrc writes a float32 MRC the reader reads back', () => {
  const dir = tempDir();
  const n = 8;
  const data = new Float32Array(n * n * n).map((_, i) => i * 0.5 - 3);
  const file = path.join(dir, 'v.mrc');
  writeMrc(file, data, n, 1.5);
  const v = readMrc(file);
  assert.deepEqual([v.nx, v.ny, v.nz], [n, n, n]);
  assert.ok(Math.abs(v.voxelSize - 1.5) < 1e-6);
  assert.deepEqual(v.data, data);
});

test('writeMrc checks its arguments', () => {
  const dir = tempDir();
  const file = path.join(dir, 'v.mrc');
  assert.throws(() => writeMrc(file, new Float32Array(10), 8, 1), /data has 10 values, expected 512/);
  assert.throws(() => writeMrc(file, new Float32Array(8), 2, 0), /voxelSize/);
  assert.throws(() => writeMrc(path.join(dir, 'no', 'such', 'dir', 'v.mrc'), new Float32Array(8), 2, 1), (e) =>
    e.message.includes(path.join(dir, 'no', 'such', 'dir')),
  );
  assert.ok(!fs.existsSync(file));
});

test('readEmbedding reads a text embedding', () => {
  const dir = tempDir();
  const file = path.join(dir, 'z.txt');
  fs.writeFileSync(file, '0 1\n2 3\n4 5\n');
  const e = readEmbedding(file);
  assert.equal(e.rows, 3);
  assert.equal(e.zdim, 2);
  assert.ok(e.zs instanceof Float32Array);
  assert.deepEqual(Array.from(e.zs), [0, 1, 2, 3, 4, 5]);
});

test('readEmbedding names a missing or malformed file', () => {
  const dir = tempDir();
  const missing = path.join(dir, 'z.pkl');
  assert.throws(() => readEmbedding(missing), (e) => e instanceof Error && e.message.includes(missing));
  const bad = path.join(dir, 'bad.txt');
  fs.writeFileSync(bad, '0 1\n2\n');
  assert.throws(() => readEmbedding(bad), (e) => e.message.includes(bad) && /line 2/.test(e.message));
});
