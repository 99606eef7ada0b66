'use strict';
// `npm install`'s own step. In an app where npm installed the prebuilt platform package
// (@choripan/linux-x64-gnu), it checks that the addon loads and stops: nothing to build. Otherwise —
// in a checkout, or asked with `npm install --build-from-source` (npm_config_build_from_source) or
// CHORIPAN_BUILD_FROM_SOURCE=1 — it builds from source: Python environment → native addon → default
// model. Each step skips what is already up to date, so running it again takes seconds.
//
//   CHORIPAN_PYTHON=/path/to/python  use that interpreter (it must already have torch) instead of .venv
//   LIBTORCH=/path/to/libtorch       build the Node addon against that C++ distribution

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { root, venv, envFile, pythonPath, probe, libtorchRoot, nodeHeadersDir } = require('./environment');
const { writeDefaultModels, FILES: DEFAULT_MODEL_FILES } = require('./default-models');

const TORCH = ['torch==2.14.1', 'torchvision==0.29.1'];
const DEFAULT_MODELS = DEFAULT_MODEL_FILES.map((name) => path.join(root, 'models', name));
const ADDON = path.join(root, 'build', 'Release', 'choripan.node');
const developing = fs.existsSync(path.join(root, 'tests'));
const fromSource = developing || process.env.npm_config_build_from_source === 'true' ||
  ['1', 'true'].includes(process.env.CHORIPAN_BUILD_FROM_SOURCE);
// What fixes a failed step: inside an app, the package is rebuilt from the app's folder.
const RETRY = developing ? '`npm install` (or `npm run setup`)' : '`npm rebuild choripan --build-from-source`';
const FREE_GB_FOR_VENV = 7; // torch's wheels with their CUDA libraries, unpacked

class StepError extends Error {
  constructor(message, hint) {
    super(message);
    this.hint = hint;
  }
}

// npm hides a dependency's install output unless it fails (or --foreground-scripts is given); the steps
// take minutes, so inside an app they also go to the terminal, where there is one.
const terminal = (() => {
  if (developing || process.stdout.isTTY) return null;
  try {
    return fs.openSync('/dev/tty', 'w');
  } catch {
    return null; // no controlling terminal: CI, Docker builds
  }
})();

function log(message) {
  console.log(`[choripan setup] ${message}`);
  if (terminal !== null) fs.writeSync(terminal, `[choripan setup] ${message}\n`);
}

function run(command, args, { hint, ...options } = {}) {
  const shown = [command, ...args].map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ');
  log(`$ ${shown}`);
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, ...options });
  if (result.error) throw new StepError(`cannot run ${command}: ${result.error.message}`, hint);
  if (result.status !== 0) throw new StepError(`\`${shown}\` exited with status ${result.status}`, hint);
}

function digest(...parts) {
  return crypto.createHash('sha256').update(parts.join('\0')).digest('hex');
}

function readStamp(file) {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/** The first number a command prints with --version, or null when it cannot run. */
function version(command, args = ['--version']) {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.error || result.status !== 0) return null;
  const match = `${result.stdout}${result.stderr}`.match(/(\d+)\.(\d+)(?:\.(\d+))?/);
  return match ? match.slice(1).map((n) => Number(n ?? 0)) : null;
}

// Whether `compiler` preprocesses `source` (C): a header it needs is installed where it looks.
function compiles(compiler, source) {
  const result = spawnSync(compiler, ['-E', '-x', 'c', '-o', '/dev/null', '-'], { input: source, encoding: 'utf8' });
  return !result.error && result.status === 0;
}

const atLeast = (found, wanted) => found !== null && (found[0] > wanted[0] || (found[0] === wanted[0] && found[1] >= wanted[1]));

// Everything a later step needs, checked before the first download: a missing compiler used to show
// up only after several gigabytes of pip install, which npm then rolled back.
function prerequisites() {
  const missing = [];
  const compiler = process.env.CXX || 'g++';
  const cxx = version(compiler, ['-dumpfullversion', '-dumpversion']);
  if (!atLeast(cxx, [10, 0])) missing.push(`a C++20 compiler: ${compiler} ${cxx ? cxx.join('.') : 'was not found'} (g++ 10+ is needed; set CXX to use another)`);
  const cmake = version('cmake');
  if (!atLeast(cmake, [3, 18])) missing.push(`cmake 3.18+ (${cmake ? `found ${cmake.join('.')}` : 'not found'})`);
  if (cxx && !compiles(compiler, '#include <stdio.h>\n#include <jpeglib.h>\n')) {
    missing.push(`libjpeg-turbo's headers (jpeglib.h), which the native core decodes JPEGs with`);
  }
  if (!process.env.CHORIPAN_PYTHON) {
    const python = process.env.PYTHON || 'python3';
    const found = version(python);
    if (!atLeast(found, [3, 10])) missing.push(`Python 3.10+ with venv (${python}: ${found ? found.join('.') : 'not found'}; set PYTHON to use another)`);
    if (!fs.existsSync(venv)) {
      const { bavail, bsize } = fs.statfsSync(root);
      const free = (bavail * bsize) / 2 ** 30;
      if (free < FREE_GB_FOR_VENV) missing.push(`${FREE_GB_FOR_VENV} GB of free disk for the Python environment (${free.toFixed(1)} GB free)`);
    }
  }
  if (missing.length) {
    throw new StepError(`missing before anything is downloaded:\n  - ${missing.join('\n  - ')}`,
      `install them (Debian: apt-get install g++ cmake python3-venv libjpeg62-turbo-dev), then run ${RETRY}`);
  }
  log(`found ${compiler} ${cxx.join('.')}, cmake ${cmake.join('.')}`);
}

function pythonEnvironment() {
  // In an app, export/ is copied into the environment: an editable install would record this folder's
  // absolute path, and `python -m choripan` would break once the app moves.
  const extras = developing ? ['-e', '.[native,test,bench,sign]'] : ['.[native]'];
  const pyproject = fs.readFileSync(path.join(root, 'pyproject.toml'), 'utf8');
  let python;
  let packages;
  if (process.env.CHORIPAN_PYTHON) {
    python = process.env.CHORIPAN_PYTHON;
    try {
      probe(python);
    } catch (error) {
      throw new StepError(`CHORIPAN_PYTHON=${python}: ${error.message}`,
        'point CHORIPAN_PYTHON at an interpreter that has torch installed, or unset it to let setup create .venv');
    }
    packages = extras;
  } else {
    python = pythonPath();
    if (!fs.existsSync(python)) {
      const base = process.env.PYTHON || 'python3';
      run(base, ['-m', 'venv', venv], {
        hint: `install Python 3.10+ with its venv module (Debian: apt-get install python3-venv), or set PYTHON=/path/to/python3`,
      });
    }
    packages = [...TORCH, ...extras];
  }
  const stampFile = path.join(process.env.CHORIPAN_PYTHON ? path.join(root, 'build') : venv, '.choripan-python');
  const stamp = digest(python, pyproject, packages.join(' '));
  if (readStamp(stampFile) === stamp) {
    log(`python environment is up to date (${python})`);
  } else {
    run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '--quiet', ...packages], {
      hint: 'pip could not install the Python packages: check that PyPI is reachable and the messages above',
    });
    fs.mkdirSync(path.dirname(stampFile), { recursive: true });
    fs.writeFileSync(stampFile, `${stamp}\n`);
  }
  const info = probe(python);
  // The choripan_core module that the native build writes to build/python, importable from this environment;
  // relative (to site-packages, as .pth lines may be), so that it survives the app's folder moving.
  fs.writeFileSync(path.join(info.sitePackages, 'choripan_core.pth'), `${path.relative(info.sitePackages, path.join(root, 'build', 'python'))}\n`);
  return info;
}

function nativeAddon(info) {
  const torch = libtorchRoot(info);
  for (const required of ['include/torch/script.h', 'lib/libtorch_cpu.so', 'lib/libc10.so']) {
    if (!fs.existsSync(path.join(torch, required))) {
      throw new StepError(`${torch} is not a libtorch distribution: ${required} is missing`,
        process.env.LIBTORCH ? 'point LIBTORCH at an unpacked libtorch (cxx11 ABI) folder, or unset it'
          : 'reinstall torch in the Python environment');
    }
  }
  if (!info.jsonInclude) {
    throw new StepError('the nlohmann-json headers are missing from the Python environment',
      `${info.python} -m pip install nlohmann-json==3.12.0`);
  }
  const defines = {
    TORCH_ROOT: torch,
    JSON_INCLUDE_DIR: info.jsonInclude,
    NODE_ADDON_API_DIR: path.resolve(root, require('node-addon-api').include_dir),
    PYTHON_INCLUDE_DIR: info.pythonInclude,
    PYTHON_TORCH_ROOT: info.torchRoot,
    PYTHON_EXT_SUFFIX: info.extSuffix,
  };
  const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
  const common = ['-d', 'native', '-O', 'build'];
  const env = { ...process.env };
  const headers = nodeHeadersDir();
  if (!env.npm_config_nodedir && headers) env.npm_config_nodedir = headers;
  const hint = 'a C++20 compiler (g++ 10+) and cmake 3.18+ are needed; the compiler messages above say what failed';

  const configuration = digest(JSON.stringify(defines));
  const configStamp = path.join(root, 'build', '.choripan-configure');
  if (readStamp(configStamp) !== configuration || !fs.existsSync(path.join(root, 'build', 'CMakeCache.txt'))) {
    const flags = Object.entries(defines).map(([key, value]) => `--CD${key}=${value}`);
    run(process.execPath, [cmakeJs, 'configure', ...common, ...flags], { env, hint });
    fs.writeFileSync(configStamp, `${configuration}\n`);
  }
  run(process.execPath, [cmakeJs, 'build', ...common, '--parallel', String(os.availableParallelism())], { env, hint });

  const check = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(ADDON)})`], { encoding: 'utf8' });
  if (check.status !== 0) {
    throw new StepError(`the built addon does not load: ${check.stderr.trim().split('\n').slice(0, 3).join(' ')}`,
      `run ${RETRY} after fixing the error above; \`ldd build/Release/choripan.node\` shows missing libraries`);
  }
  fs.writeFileSync(envFile, `${JSON.stringify({ ...info, libtorch: torch }, null, 2)}\n`);
  if (!developing) removeLeftovers();
}

// In an app, only the built libraries matter: the precompiled header alone is some 580 MB. (A developer
// keeps it: without it the next build starts from scratch.)
function removeLeftovers() {
  const dir = path.join(root, 'build', 'CMakeFiles');
  let freed = 0;
  for (const entry of fs.readdirSync(dir, { recursive: true })) {
    if (!/\.(gch|o)$/.test(entry)) continue;
    const file = path.join(dir, entry);
    freed += fs.statSync(file).size;
    fs.rmSync(file);
  }
  log(`removed ${Math.round(freed / 2 ** 20)} MB of build leftovers`);
}

// The default model in both formats: the TorchScript artifact (portable, the reference) and the
// AOTInductor package compiled for this machine's CPU, which the default model prefers (js/index.js).
function defaultModel(info) {
  for (const file of DEFAULT_MODELS) {
    if (fs.existsSync(file)) {
      log(`default model is present (${path.relative(root, file)})`);
      continue;
    }
    run(info.python, ['-m', 'choripan', 'default', '--out', file], {
      hint: 'the export step failed; its message above says why',
    });
  }
  log(`wrote ${path.relative(root, writeDefaultModels(info.python, path.dirname(DEFAULT_MODELS[0])))}`);
}

// The prebuilt addon npm chose for this machine, loaded once in a child process: a broken one fails the
// install with its reason, not the app's first request.
function prebuilt() {
  const binding = require('../js/binding');
  let location;
  try {
    location = binding.addonLocation();
  } catch (error) {
    log(`${error.message}. Until then, require('choripan') throws E_ADDON.`);
    return;
  }
  const check = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(root, 'js', 'binding.js'))}).native()`],
    { encoding: 'utf8' });
  if (check.status !== 0) {
    const reason = check.stderr.trim().split('\n').find((line) => line.includes('E_ADDON') || line.startsWith('Error')) ?? check.stderr.trim();
    throw new StepError(`the prebuilt addon from ${location.from} does not load: ${reason}`,
      'reinstall it (`npm install choripan`), or build from source: `npm install choripan --build-from-source`');
  }
  log(`using the prebuilt addon from ${location.from}: nothing to build`);
}

function main() {
  if (!fromSource) {
    try {
      prebuilt();
    } catch (error) {
      console.error(`\nchoripan setup failed: ${error.message}`);
      if (error.hint) console.error(`What to do: ${error.hint}`);
      process.exit(1);
    }
    return;
  }
  const steps = [
    ['prerequisites', prerequisites],
    ['python environment', pythonEnvironment],
    ['native addon', nativeAddon],
    ['default model', defaultModel],
  ];
  let value;
  for (const [index, [name, step]] of steps.entries()) {
    log(`step ${index + 1}/${steps.length}: ${name}`);
    try {
      value = step(value) ?? value;
    } catch (error) {
      console.error(`\nchoripan setup failed at step ${index + 1}/${steps.length} (${name}): ${error.message}`);
      if (error.hint) console.error(`What to do: ${error.hint}`);
      process.exit(1);
    }
  }
  log(developing ? 'ready: `npm start` serves the default model, `npm test` runs the tests'
    : "ready: require('choripan') in your app, or `npx choripan serve` to serve the default model");
}

main();
