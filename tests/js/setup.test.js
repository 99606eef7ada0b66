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

test('CHORIPAN_PYTHON without torch stops at step 1 and says what to do', () => {
  const run = setup({ CHORIPAN_PYTHON: '/usr/bin/env' }); // an executable that is no Python with torch
  assert.equal(run.status, 1);
  assert.match(run.stderr, /choripan setup failed at step 1\/3 \(python environment\): CHORIPAN_PYTHON=\/usr\/bin\/env/);
  assert.match(run.stderr, /What to do: point CHORIPAN_PYTHON at an interpreter that has torch/);
});

test('LIBTORCH that is not a libtorch distribution stops at step 2 and says what to do', () => {
  const run = setup({ LIBTORCH: path.join(root, 'native') });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /failed at step 2\/3 \(native addon\): .*native is not a libtorch distribution: include\/torch\/script\.h is missing/);
  assert.match(run.stderr, /What to do: point LIBTORCH at an unpacked libtorch/);
});

test('a second run rebuilds nothing: every step is up to date', () => {
  const run = setup({});
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /python environment is up to date/);
  assert.match(run.stdout, /default model is present/);
});
