// The browser build (pkg-web, wasm-bindgen --target web) loads and computes the same
// numbers as the Node build. In a browser `await init()` fetches the .wasm next to the
// glue; here initSync is given its bytes.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { wasm } from '../support/helpers.mjs';

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'pkg-web');

test('the web build initialises and agrees with the Node build', async () => {
  const web = await import(path.join(dir, 'recovar_wasm.js'));
  web.initSync({ module: fs.readFileSync(path.join(dir, 'recovar_wasm_bg.wasm')) });
  assert.equal(web.version(), wasm.version());
  const row = [32, 2, 15000, 14000, 30, 300, 2.7, 0.1, 0];
  assert.deepEqual(web.ctfImage(row), wasm.ctfImage(row));
  const options = { imageSize: 16, nImages: 20, seed: 9 };
  assert.deepEqual(web.simulate(options).images, wasm.simulate(options).images);
  assert.throws(() => web.ctfImage([1]), /ctfRow has 1 values/);
});

test('the browser demo\'s computation runs (demo/demo.mjs, small settings)', async () => {
  const web = await import(path.join(dir, 'recovar_wasm.js'));
  web.initSync({ module: fs.readFileSync(path.join(dir, 'recovar_wasm_bg.wasm')) });
  const { run } = await import(path.join(dir, '..', 'demo', 'demo.mjs'));
  const lines = [];
  const r = run(web, { nImages: 200, imageSize: 16 }, (t) => lines.push(t));
  assert.equal(r.images.length, 6);
  assert.equal(r.states.length, 3);
  for (const s of r.states) {
    assert.equal(s.generated.length, 16 * 16);
    assert.ok(s.stateCorrelations.every(Number.isFinite));
  }
  assert.equal(lines.length, 5);
});
