'use strict';
// binding.gyp builds the same addon as cmake-js: `npx node-gyp rebuild` in a copy of the package
// produces a .node that loads the model and predicts. The rebuild takes minutes: it runs in CI (.ci/run
// sets CI) and where CHORIPAN_SLOW_TESTS is set, and says so where it is skipped.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { nodeHeadersDir } = require('../../scripts/environment');
const { root, env, defaultModelPath, photoPath, CAT_LABELS } = require('./helpers');

const skip = !process.env.CI && !process.env.CHORIPAN_SLOW_TESTS && 'a full rebuild: set CHORIPAN_SLOW_TESTS=1 (CI runs it)';

test('npx node-gyp rebuild builds an addon that loads the model and predicts', { timeout: 20 * 60_000, skip }, () => {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-gyp-'));
  try {
    for (const entry of ['binding.gyp', 'package.json', 'native', 'scripts', 'js']) {
      fs.cpSync(path.join(root, entry), path.join(copy, entry), { recursive: true });
    }
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'));
    const headers = nodeHeadersDir();
    const build = spawnSync('npx', ['--no-install', 'node-gyp', 'rebuild', '--jobs', 'max', ...(headers ? [`--nodedir=${headers}`] : [])], {
      cwd: copy,
      encoding: 'utf8',
      env: { ...process.env, CHORIPAN_PYTHON: env.python },
    });
    assert.equal(build.status, 0, `${build.stdout}\n${build.stderr}`);
    const addon = path.join(copy, 'build', 'Release', 'choripan.node');
    assert.ok(fs.existsSync(addon));

    // The library of the copy takes its own build first (js/binding.js): the addon node-gyp just built.
    const script = `
      const choripan = require(${JSON.stringify(path.join(copy, 'js', 'index.js'))});
      (async () => {
        const model = await choripan.load(${JSON.stringify(defaultModelPath)}, { maxBatch: 8, workers: 1 });
        const { label } = await model.predict(require('node:fs').readFileSync(${JSON.stringify(photoPath('chelsea.png'))}));
        const addons = Object.keys(require.cache).filter((file) => file.endsWith('.node') && file.includes('choripan'));
        console.log(JSON.stringify({ label, addons }));
        await model.dispose();
      })();`;
    const run = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    assert.equal(run.status, 0, run.stderr);
    const { label, addons } = JSON.parse(run.stdout);
    assert.ok(CAT_LABELS.includes(label), label);
    assert.deepEqual(addons, [addon]);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
});
