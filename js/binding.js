// @ts-check
'use strict';
// The one place that finds and loads the compiled addon, in this order:
//   1. a build of choripan's own, build/Release/choripan.node: a checkout's `npm install`, or
//      `npm install --build-from-source` in an app (it exists only when someone asked for it);
//   2. the prebuilt platform package npm installed for this machine (@choripan/linux-x64-gnu, with
//      libtorch's libraries in @choripan/libtorch-linux-x64-gnu);
//   3. otherwise E_ADDON, naming this platform and the two ways out.
// The default models come from the same place as the addon: they were compiled with its libtorch.

const fs = require('node:fs');
const path = require('node:path');
const { ChoripanError, codedError } = require('./errors');
const { received } = require('./validate');
const { vocabulary } = require('./vocabulary');

const root = path.resolve(__dirname, '..');
const LOCAL_ADDON = path.join(root, 'build', 'Release', 'choripan.node');
// The platforms a prebuilt package exists for, by the name npm's os, cpu and libc fields select.
const PREBUILT = ['linux-x64-gnu'];
const BUILD_FROM_SOURCE = 'build it from source: `npm install choripan --build-from-source` (Python 3.10+, a C++20 ' +
  "compiler, cmake and libjpeg-turbo's headers; docs/building.md)";

/** @type {import('./binding').NativeBinding | undefined} */
let binding;
/** @type {{ addon: string, models: string, from: string } | undefined} */
let location;

/** This machine as npm's os, cpu and libc fields see it: "linux-x64-gnu", "linux-arm64-musl", … */
function platformName() {
  let libc = '';
  if (process.platform === 'linux') {
    const { glibcVersionRuntime } = /** @type {{ header: { glibcVersionRuntime?: string } }} */ (process.report.getReport()).header;
    libc = glibcVersionRuntime ? '-gnu' : '-musl';
  }
  return `${process.platform}-${process.arch}${libc}`;
}

const platformPackage = (platform = platformName()) => `@choripan/${platform}`;

/**
 * Where the addon and the default models are, without loading anything.
 * @returns {{ addon: string, models: string, from: string }}
 */
function addonLocation() {
  if (location) return location;
  if (fs.existsSync(LOCAL_ADDON)) {
    location = { addon: LOCAL_ADDON, models: path.join(root, 'models'), from: 'a local build' };
    return location;
  }
  const platform = platformName();
  const name = platformPackage(platform);
  let manifest;
  try {
    manifest = require.resolve(`${name}/package.json`, { paths: [root] });
  } catch {
    const why = PREBUILT.includes(platform)
      ? `the prebuilt package ${name} is not installed (npm leaves optional dependencies out with --omit=optional, ` +
        "or when it cannot fetch them): reinstall choripan without --omit=optional, or "
      : `there is no prebuilt addon for ${platform} (there is for ${PREBUILT.join(', ')}): use one of those, or `;
    throw new ChoripanError('E_ADDON', `choripan's native addon is not available on ${platform} (Node ${process.version}): ${why}${BUILD_FROM_SOURCE}`);
  }
  const folder = path.dirname(manifest);
  location = { addon: path.join(folder, 'choripan.node'), models: path.join(folder, 'models'), from: name };
  return location;
}

/** @returns {import('./binding').NativeBinding} */
function native() {
  if (binding) return binding;
  const { addon, from } = addonLocation();
  // GNU OpenMP lets a waiting thread spin 300,000 times before it sleeps. Beside co-tenants that keep the
  // cores busy (other pods on a node), a spinning team fights them: a lone request took 36 ms instead of
  // 26 with 10,000, which a quiet machine measured the same (npm run bench -- --sweep [--busy 2]). It is
  // read once, when libgomp loads with the addon; a value of your own wins.
  process.env.GOMP_SPINCOUNT ??= '10000';
  // oneDNN's newest instructions, as choripan's export used them (the vocabulary says why: an int8
  // package on an AMX CPU ran at half float32's speed, repacking weights every call). Read at oneDNN's
  // first use; float32 runs the same either way. A value of your own wins.
  process.env.ONEDNN_MAX_CPU_ISA ??= vocabulary.artifact.oneDnnMaxCpuIsa;
  /** @type {import('./binding').NativeBinding} */
  let loaded;
  try {
    loaded = require(addon);
  } catch (error) {
    const remedy = from === 'a local build' ? 'rebuild it: `npm install` in a checkout, `npm rebuild choripan --build-from-source` in an app'
      : `reinstall ${from}, or ${BUILD_FROM_SOURCE}`;
    throw new ChoripanError('E_ADDON', `choripan's native addon (${addon}, from ${from}) does not load ` +
      `(${String(/** @type {Error} */ (error).message).split('\n')[0]}): ${remedy}`, { cause: error });
  }
  loaded.init({ codedError, received });
  // C's exit() (process.exit, an uncaught exception) would tear libtorch down under a worker still
  // inside a forward pass: stop this thread's models first. Environment teardown does the same.
  process.once('exit', () => loaded.disposeAll());
  binding = loaded;
  return binding;
}

module.exports = { native, addonLocation, platformName, platformPackage, PREBUILT, LOCAL_ADDON };
