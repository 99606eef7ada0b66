'use strict';
// models/default.json: the default model's files in the order the library prefers them, each with the
// vector instructions it needs (a package's AOTI_CPU_ISA, as its metadata records it). js/index.js
// takes the first that this CPU runs. Written wherever default models are made: scripts/setup.js for a
// local build, scripts/prebuild.js for the platform package.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const FILES = ['default.pt2', 'default.pt']; // the compiled package first: the fastest on the CPU
// Every x86-64 server since about 2015 (AVX2, FMA): what the prebuilt default .pt2 is compiled for.
const CPU_BASELINE = 'x86-64-v3';
const BASELINE_PACKAGE = path.join(__dirname, '..', 'build', 'prebuild', 'default.pt2');

/** The default model compiled for CPU_BASELINE, once (a minute or two); delete the file to compile again. */
function baselinePackage(python, log = console.log) {
  if (fs.existsSync(BASELINE_PACKAGE)) {
    log(`reusing ${path.relative(process.cwd(), BASELINE_PACKAGE)} (delete it to compile again)`);
    return BASELINE_PACKAGE;
  }
  log(`compiling the default model for ${CPU_BASELINE} (a minute or two)`);
  const compiled = spawnSync(python, ['-m', 'choripan', 'default', '--out', BASELINE_PACKAGE, '--target-cpu', CPU_BASELINE],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  if (compiled.status !== 0) throw new Error('exporting the default model failed (its message is above)');
  return BASELINE_PACKAGE;
}

/** Writes `folder`/default.json for the default models in it; `python` reads their metadata. */
function writeDefaultModels(python, folder) {
  const models = FILES.filter((file) => fs.existsSync(path.join(folder, file))).map((file) => {
    const inspected = spawnSync(python, ['-m', 'choripan', 'inspect', '--json', path.join(folder, file)], { encoding: 'utf8' });
    if (inspected.status !== 0) throw new Error(`cannot inspect ${path.join(folder, file)}: ${inspected.stderr.trim()}`);
    const { runtime = {} } = JSON.parse(inspected.stdout).metadata;
    return { file, format: runtime.format ?? 'torchscript', ...(runtime.cpu_isa ? { cpuIsa: runtime.cpu_isa } : {}),
      ...(runtime.cpu_target ? { cpuTarget: runtime.cpu_target } : {}) };
  });
  const manifest = path.join(folder, 'default.json');
  fs.writeFileSync(manifest, `${JSON.stringify({ models }, null, 1)}\n`);
  return manifest;
}

module.exports = { writeDefaultModels, baselinePackage, FILES, CPU_BASELINE };
