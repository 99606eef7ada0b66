'use strict';
// Where the project's Python environment, libtorch and Node's headers are: shared by scripts/setup.js,
// binding.gyp (through scripts/torch-paths.js), the tests and the benchmarks, so that every tool builds
// against the same torch.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const venv = path.join(root, '.venv');
const envFile = path.join(root, 'build', 'choripan-env.json');

/** The interpreter choripan uses: CHORIPAN_PYTHON, else the project's .venv. */
function pythonPath() {
  return process.env.CHORIPAN_PYTHON || path.join(venv, 'bin', 'python');
}

const PROBE = `
import json, os, sysconfig, sys
import torch
try:
    import nlohmann_json
    json_include = os.path.join(os.path.dirname(nlohmann_json.__file__), "include")
except ImportError:
    json_include = None
print(json.dumps({
    "python": sys.executable,
    "pythonVersion": sys.version.split()[0],
    "torchRoot": os.path.dirname(torch.__file__),
    "torchVersion": torch.__version__,
    "cxx11Abi": bool(torch.compiled_with_cxx11_abi()),
    "jsonInclude": json_include,
    "pythonInclude": sysconfig.get_paths()["include"],
    "extSuffix": sysconfig.get_config_var("EXT_SUFFIX"),
    "sitePackages": sysconfig.get_paths()["purelib"],
}))
`;

/** Facts about the Python environment, asked of the interpreter itself. Throws with its stderr. */
function probe(python = pythonPath()) {
  const result = spawnSync(python, ['-c', PROBE], { encoding: 'utf8' });
  if (result.error) throw new Error(`cannot run ${python}: ${result.error.message}`);
  if (result.status !== 0) {
    const reason = result.stderr.trim().split('\n').pop();
    throw new Error(`${python} cannot import torch (${reason})`);
  }
  return JSON.parse(result.stdout);
}

/** libtorch to build the Node addon against: LIBTORCH (the C++ distribution) or the environment's torch. */
function libtorchRoot(info) {
  return process.env.LIBTORCH ? path.resolve(process.env.LIBTORCH) : info.torchRoot;
}

/** What setup recorded last time (tests read the interpreter from it), or null. */
function recorded() {
  try {
    return JSON.parse(fs.readFileSync(envFile, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * The prefix holding the running Node's own headers (Debian's nodejs, nvm and the official tarballs
 * ship them), or null. With it, cmake-js and node-gyp build offline instead of downloading headers.
 */
function nodeHeadersDir() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null;
}

module.exports = { root, venv, envFile, pythonPath, probe, libtorchRoot, recorded, nodeHeadersDir };
