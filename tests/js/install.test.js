'use strict';
// As a user installs it: `npm pack`, then `npm install <tarball>` into a new app, which builds the addon,
// sets up libtorch and exports the default model; the app predicts, and still predicts after its folder
// is moved elsewhere (nothing in it may point at where it was built). The install takes minutes and
// gigabytes: it runs in CI (.ci/run sets CI) and where CHORIPAN_SLOW_TESTS is set.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { root, photoPath, CAT_LABELS } = require('./helpers');

const skip = !process.env.CI && !process.env.CHORIPAN_SLOW_TESTS && 'a full install: set CHORIPAN_SLOW_TESTS=1 (CI runs it)';

// What npm and this repository's own setup put in the environment stays out of the user's install.
const userEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(npm_|CHORIPAN_|INIT_CWD$)/i.test(name)));

function predictIn(app) {
  const script = `require('choripan').predict(require('node:fs').readFileSync(${JSON.stringify(photoPath('chelsea.png'))}))
    .then((result) => console.log(JSON.stringify(result)))`;
  const run = spawnSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8', env: userEnv });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout);
}

test('the packed tarball installs into a new app and predicts; the app folder moved elsewhere still predicts and exports', { timeout: 40 * 60_000, skip }, () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-install-'));
  try {
    const pack = spawnSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', env: userEnv });
    assert.equal(pack.status, 0, pack.stderr);
    const tarball = path.join(work, JSON.parse(pack.stdout)[0].filename);
    const app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'an-app', version: '1.0.0', private: true }));
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--build-from-source', tarball], { cwd: app, encoding: 'utf8', env: userEnv });
    assert.equal(install.status, 0, `${install.stdout}\n${install.stderr}`);

    const before = predictIn(app);
    assert.ok(CAT_LABELS.includes(before.label), before.label);
    const moved = path.join(work, 'elsewhere', 'the-app');
    fs.mkdirSync(path.dirname(moved));
    fs.renameSync(app, moved);
    const after = predictIn(moved);
    assert.deepEqual(after.top, before.top);
    // The exporter too, run as docs/export.md says, from the moved app.
    const model = path.join('node_modules', 'choripan', 'models', 'default.pt');
    const inspect = spawnSync(path.join('node_modules', 'choripan', '.venv', 'bin', 'python'), ['-m', 'choripan', 'inspect', '--json', model],
      { cwd: moved, encoding: 'utf8', env: userEnv });
    assert.equal(inspect.status, 0, inspect.stderr);
    assert.equal(JSON.parse(inspect.stdout).metadata.name, 'efficientnet-lite0');
    const core = spawnSync(path.join('node_modules', 'choripan', '.venv', 'bin', 'python'),
      ['-c', `import choripan_core; print(choripan_core.Model(${JSON.stringify(model)}).labels[281])`], { cwd: moved, encoding: 'utf8', env: userEnv });
    assert.equal(core.status, 0, core.stderr);
    assert.equal(core.stdout.trim(), 'tabby');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});
