// The hand-written index.d.ts and the addon's exports must agree name for name, so the
// declarations cannot drift from the Rust code.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { createRequire } from 'node:module';

import * as named from '../index.js';
import { recovar } from './helpers.mjs';

const dts = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'index.d.ts'), 'utf8');

/** {functions, classes: {name: {statics, members}}} declared in index.d.ts. */
function declared() {
  const functions = [...dts.matchAll(/^export declare function (\w+)/gm)].map((m) => m[1]);
  const classes = {};
  for (const m of dts.matchAll(/^export declare class (\w+) \{\n([\s\S]*?)^\}/gm)) {
    const statics = [];
    const members = [];
    for (const line of m[2].split('\n')) {
      const d = line.match(/^\s+(static\s+)?(?:get\s+)?(\w+)\(/);
      if (!d || d[2] === 'constructor') continue;
      (d[1] ? statics : members).push(d[2]);
    }
    classes[m[1]] = { statics: statics.sort(), members: members.sort() };
  }
  return { functions: functions.sort(), classes };
}

test('index.d.ts declares exactly the exports, and index.js passes them all on', () => {
  const d = declared();
  const exported = Object.keys(recovar).sort();
  assert.deepEqual(exported, [...d.functions, ...Object.keys(d.classes)].sort());
  for (const f of d.functions) assert.equal(typeof recovar[f], 'function', f);
  const addon = process.env.RECOVAR_NODE_ADDON || new URL('../recovar.node', import.meta.url).pathname;
  const native = createRequire(import.meta.url)(addon);
  assert.deepEqual(Object.keys(native).sort(), exported);
  // ES modules see the names too (import { Dataset } from 'recovar').
  assert.deepEqual(Object.keys(named).filter((k) => k !== 'default').sort(), exported);
});

test('index.d.ts declares exactly the members of each class', () => {
  for (const [name, { statics, members }] of Object.entries(declared().classes)) {
    const cls = recovar[name];
    const own = Object.getOwnPropertyNames(cls).filter((k) => !['length', 'name', 'prototype', 'arguments', 'caller'].includes(k));
    assert.deepEqual(own.sort(), statics, `${name} statics`);
    const proto = Object.getOwnPropertyNames(cls.prototype).filter((k) => k !== 'constructor');
    assert.deepEqual(proto.sort(), members, `${name} members`);
  }
});

test('classes cannot be constructed from JavaScript', () => {
  for (const name of Object.keys(declared().classes)) {
    assert.throws(() => new recovar[name](), Error, name);
  }
});
