'use strict';
// Loads the native addon built by build.sh (`cargo build --release -p recovar-node`, then
// the shared library copied here as recovar.node). RECOVAR_NODE_ADDON may name another
// build of it.
const fs = require('node:fs');
const path = require('node:path');

const addon = process.env.RECOVAR_NODE_ADDON || path.join(__dirname, 'recovar.node');
if (!fs.existsSync(addon)) {
  throw new Error(
    `recovar: the native addon ${addon} is not built; run ${path.join(__dirname, 'build.sh')} ` +
      '(it needs a Rust toolchain: cargo build --release -p recovar-node)',
  );
}
const native = require(addon);

// Assigned one by one (not `module.exports = native`) so that Node can see the names of
// this CommonJS module statically: `import { Dataset } from 'recovar'` works from ES
// modules. test/api.test.mjs checks this list against the addon and index.d.ts.
exports.version = native.version;
exports.Dataset = native.Dataset;
exports.Model = native.Model;
exports.Volume = native.Volume;
exports.generateFromEmbedding = native.generateFromEmbedding;
exports.readEmbedding = native.readEmbedding;
exports.writeMrc = native.writeMrc;
