'use strict';
// The addon's sources, for binding.gyp (`<!@(node scripts/native-sources.js)`): every .cc file in
// native/core and native/node, the same rule native/CMakeLists.txt globs by, so that neither keeps a
// list of its own.

const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const sources = ['core', 'node'].flatMap((folder) => fs.readdirSync(path.join(root, 'native', folder))
  .filter((file) => file.endsWith('.cc')).sort().map((file) => `native/${folder}/${file}`));
process.stdout.write(sources.join(' '));
