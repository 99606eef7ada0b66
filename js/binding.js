'use strict';
// The one place that loads the compiled addon, with a message that says what to do when it fails.

const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const ADDON = path.join(root, 'build', 'Release', 'choripan.node');

let binding;

/** @returns {import('./binding').NativeBinding} */
function native() {
  if (binding) return binding;
  if (!fs.existsSync(ADDON)) {
    throw new Error(`choripan's native addon is not built (${ADDON} is missing): run \`npm install\` ` +
      'in the package folder (it builds the addon with cmake-js), or `npx node-gyp rebuild`');
  }
  try {
    binding = require(ADDON);
  } catch (error) {
    throw new Error(`choripan's native addon does not load: ${error.message}. It links libtorch through an rpath ` +
      'set at build time: if the Python environment or LIBTORCH moved, run `npm install` again', { cause: error });
  }
  return binding;
}

module.exports = { native, ADDON };
