'use strict';
// scripts/setup.js (npm install's own step): a failed step says which step and what to do.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { root } = require('./helpers');

function setup(env) {
  return spawnSync(process.execPath, [path.join(root, 'scripts', 'setup.js')], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 300_000,
  });
}

test('CHORIPAN_PYTHON without torch stops at step 2 and says what to do', () => {
  const run = setup({ CHORIPAN_PYTHON: '/usr/bin/env' }); // an executable that is no Python with torch
  assert.equal(run.status, 1);
  assert.match(run.stderr, /choripan setup failed at step 2\/4 \(python environment\): CHORIPAN_PYTHON=\/usr\/bin\/env/);
  assert.match(run.stderr, /What to do: point CHORIPAN_PYTHON at an interpreter that has torch/);
});

test('LIBTORCH that is not a libtorch distribution stops at step 3 and says what to do', () => {
  const run = setup({ LIBTORCH: path.join(root, 'native') });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /failed at step 3\/4 \(native addon\): .*native is not a libtorch distribution: include\/torch\/script\.h is missing/);
  assert.match(run.stderr, /What to do: point LIBTORCH at an unpacked libtorch/);
});

test('a missing compiler or cmake stops at step 1, before any download, naming what to install', () => {
  const run = setup({ CXX: 'no-such-compiler', PATH: '/nonexistent' });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /failed at step 1\/4 \(prerequisites\): missing before anything is downloaded/);
  assert.match(run.stderr, /a C\+\+20 compiler: no-such-compiler was not found/);
  assert.match(run.stderr, /cmake 3\.18\+ \(not found\)/);
  assert.match(run.stderr, /What to do: install them .*then run `npm install`/);
});

test('a compiler that cannot find libjpeg-turbo\'s headers stops at step 1, naming the package', () => {
  const fs = require('node:fs');
  const os = require('node:os');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-cxx-'));
  try {
    const compiler = path.join(dir, 'g++-without-system-headers');
    fs.writeFileSync(compiler, '#!/bin/sh\nexec g++ -nostdinc "$@"\n', { mode: 0o755 });
    const run = setup({ CXX: compiler });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /failed at step 1\/4 \(prerequisites\): missing before anything is downloaded/);
    assert.match(run.stderr, /libjpeg-turbo's headers \(jpeglib\.h\)/);
    assert.doesNotMatch(run.stderr, /C\+\+20 compiler/);
    assert.match(run.stderr, /What to do: install them \(Debian: .*libjpeg62-turbo-dev\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the addon and the Python module find libtorch relative to themselves, so the package can move', () => {
  const fs = require('node:fs');
  const os = require('node:os');
  const { env } = require('./helpers');
  for (const binary of ['build/Release/choripan.node', `build/python/choripan_core${env.extSuffix}`]) {
    const dynamic = spawnSync('readelf', ['-d', path.join(root, binary)], { encoding: 'utf8' }).stdout;
    assert.match(dynamic, /RUNPATH.*\[\$ORIGIN\/\.\.\/\.\.\/[^\]]*torch\/lib/, binary);
  }
  // The package moved: the addon copied elsewhere with libtorch at the same place relative to it. The
  // loader must take libtorch from the new place, not from the old absolute path.
  const moved = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-moved-'));
  try {
    const torchLib = path.relative(root, path.join(env.torchRoot, 'lib'));
    fs.mkdirSync(path.join(moved, 'build', 'Release'), { recursive: true });
    fs.copyFileSync(path.join(root, 'build', 'Release', 'choripan.node'), path.join(moved, 'build', 'Release', 'choripan.node'));
    fs.mkdirSync(path.dirname(path.join(moved, torchLib)), { recursive: true });
    fs.symlinkSync(path.join(env.torchRoot, 'lib'), path.join(moved, torchLib));
    const run = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(moved, 'build', 'Release', 'choripan.node'))})`],
      { encoding: 'utf8', env: { ...process.env, LD_DEBUG: 'libs' } });
    assert.equal(run.status, 0, run.stderr.slice(-2000));
    const found = run.stderr.split('\n').find((line) => /trying file=.*libtorch_cpu\.so$/.test(line) && !line.includes('search'));
    assert.ok(found?.includes(moved), `libtorch_cpu was looked up at ${found}`);
  } finally {
    fs.rmSync(moved, { recursive: true, force: true });
  }
});

test('a second run rebuilds nothing: every step is up to date', () => {
  const run = setup({});
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /python environment is up to date/);
  assert.match(run.stdout, /default model is present/);
});

test('the published package holds what an app builds and runs, and no tests, benchmarks or CI', () => {
  const run = spawnSync('npm', ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const files = JSON.parse(run.stdout)[0].files.map((f) => f.path);
  for (const needed of ['LICENSE', 'bin/choripan.js', 'js/index.js', 'native/core/vocabulary.json', 'native/CMakeLists.txt',
    'scripts/setup.js', 'export/choripan/cli.py', 'pyproject.toml', 'binding.gyp', 'examples/cat.jpg', 'examples/cat.jpg.license']) {
    assert.ok(files.includes(needed), needed);
  }
  assert.deepEqual(files.filter((f) => /^(tests|bench|\.ci|models|build)\//.test(f)), []);
});

test('choripan, its platform package and the Python package move together', () => {
  const { version, optionalDependencies } = require('../../package.json');
  const { packages } = require('../../package-lock.json');
  const { platformPackage, PREBUILT } = require('../../js/binding');
  for (const platform of PREBUILT) {
    assert.equal(optionalDependencies[platformPackage(platform)], version, platform);
    // Listed in the lock too, so that `npm ci` (the bundle, the Dockerfile) works before it is published.
    assert.equal(packages[`node_modules/${platformPackage(platform)}`]?.version, version, platform);
  }
  const pyproject = require('node:fs').readFileSync(path.join(root, 'pyproject.toml'), 'utf8');
  assert.equal(pyproject.match(/^version = "([^"]+)"$/m)?.[1], version);
});
