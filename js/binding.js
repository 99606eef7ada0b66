'use strict';
// The one place that loads the compiled addon, with a message that says what to do when it fails.

const fs = require('node:fs');
const path = require('node:path');
const { ChoripanError } = require('./errors');

const root = path.resolve(__dirname, '..');
const ADDON = path.join(root, 'build', 'Release', 'choripan.node');
const REBUILD = 'run `npm rebuild choripan` in your app (or `npm install` in choripan\'s own folder): it builds ' +
  'the addon with cmake-js against libtorch';

let binding;

/** @returns {import('./binding').NativeBinding} */
function native() {
  if (binding) return binding;
  if (!fs.existsSync(ADDON)) {
    throw new ChoripanError('E_ADDON', `choripan's native addon is not built (${ADDON} is missing): ${REBUILD}`);
  }
  // GNU OpenMP lets a waiting thread spin 300,000 times before it sleeps. Beside co-tenants that keep the
  // cores busy (other pods on a node), a spinning team fights them: a lone request took 36 ms instead of
  // 26 with 10,000, which a quiet machine measured the same (npm run bench -- --sweep [--busy 2]). It is
  // read once, when libgomp loads with the addon; a value of your own wins.
  process.env.GOMP_SPINCOUNT ??= '10000';
  try {
    binding = require(ADDON);
  } catch (error) {
    throw new ChoripanError('E_ADDON', `choripan's native addon does not load (${error.message.split('\n')[0]}): ${REBUILD}`,
      { cause: error });
  }
  binding.init({ ChoripanError });
  // C's exit() (process.exit, an uncaught exception) would tear libtorch down under a worker still
  // inside a forward pass: stop this thread's models first. Environment teardown does the same.
  process.once('exit', () => binding.disposeAll());
  return binding;
}

module.exports = { native, ADDON };
