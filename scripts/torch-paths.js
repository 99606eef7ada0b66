'use strict';
// Prints one path for binding.gyp: `node scripts/torch-paths.js include|api-include|lib|lib-from-addon|json-include`.
// lib-from-addon is lib relative to build/Release, for an $ORIGIN rpath that survives moving the package.

const path = require('node:path');
const { probe, libtorchRoot, recorded } = require('./environment');

const info = recorded() || probe();
const torch = libtorchRoot(info);
const paths = {
  include: path.join(torch, 'include'),
  'api-include': path.join(torch, 'include', 'torch', 'csrc', 'api', 'include'),
  lib: path.join(torch, 'lib'),
  'lib-from-addon': path.relative(path.join(process.cwd(), 'build', 'Release'), path.join(torch, 'lib')),
  'json-include': info.jsonInclude,
};
const wanted = process.argv[2];
if (!(wanted in paths)) {
  console.error(`usage: node scripts/torch-paths.js ${Object.keys(paths).join('|')}`);
  process.exit(2);
}
process.stdout.write(paths[wanted]);
