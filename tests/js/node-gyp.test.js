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
    for (const entry of ['binding.gyp', 'package.json', 'native', 'scripts']) {
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

    const script = `
      const sharp = require('sharp');
      const binding = require(${JSON.stringify(addon)});
      (async () => {
        const model = await binding.load(${JSON.stringify(defaultModelPath)}, { maxBatch: 8, maxDelayMs: 2, maxQueue: 8, workers: 1, intraOpThreads: 0, device: 'cpu', warmup: true });
        const { data, info } = await sharp(${JSON.stringify(photoPath('chelsea.png'))}).rotate().keepIccProfile().raw().toBuffer({ resolveWithObject: true });
        const { probabilities } = await model.predict(data, info.width, info.height, info.channels, 0, null).promise;
        const labels = JSON.parse(model.metadata).labels;
        console.log(labels[probabilities.indexOf(Math.max(...probabilities))]);
        await model.dispose();
      })();`;
    const run = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.ok(CAT_LABELS.includes(run.stdout.trim()), run.stdout);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
});
