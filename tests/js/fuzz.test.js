'use strict';
// The seeded fuzz that `npm run fuzz` runs for people hunting bugs, bounded for CI: 2,000 mutated JPEG,
// PNG, WebP, GIF, TIFF, AVIF and CMYK JPEG files through predict(). The script itself fails on a crash, an
// E_INTERNAL, anything not a ChoripanError, RSS growth or work left in the core.

const assert = require('node:assert/strict');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { test } = require('node:test');
const { root } = require('./helpers');

test('2,000 mutated images of every format: each a prediction or a coded error, memory bounded', { timeout: 600_000 }, () => {
  const run = spawnSync(process.execPath, [path.join(root, 'scripts', 'fuzz.js'), '--count', '2000', '--seed', '1'],
    { cwd: root, encoding: 'utf8', timeout: 600_000 });
  assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
  const summary = JSON.parse(run.stdout);
  assert.equal(summary.count, 2000);
  const answered = Object.values(summary.outcomes).reduce((sum, n) => sum + n, 0);
  assert.equal(answered, 2000, JSON.stringify(summary.outcomes));
  // Mutations must reach both sides: some still decode and predict, some are refused with codes.
  assert.ok(summary.outcomes.ok > 100, JSON.stringify(summary.outcomes));
  assert.ok(summary.outcomes.E_DECODE > 100, JSON.stringify(summary.outcomes));
  assert.equal(summary.outcomes.E_INTERNAL, undefined);
});
