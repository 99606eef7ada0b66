'use strict';
// The service's configuration and start-up: every variable documented (docs/service.md, `serve --help`),
// a bad value stops start-up in one line, and the cores divided by a cgroup quota and between models.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { test, describe } = require('node:test');
const { root, photo, defaultModelPath, defaultPackagePath, listening, postImage: post } = require('./helpers');

describe('the configuration', () => {
  const main = path.join(root, 'js', 'server', 'main.js');

  test('docs/service.md and `choripan serve --help` describe every variable the server reads', () => {
    const { VARIABLES } = require('../../js/server/config');
    const docs = fs.readFileSync(path.join(root, 'docs', 'service.md'), 'utf8');
    const help = spawnSync(process.execPath, [path.join(root, 'bin', 'choripan.js'), 'serve', '--help'], { encoding: 'utf8' }).stdout;
    for (const name of Object.keys(VARIABLES)) {
      assert.match(docs, new RegExp(`\\| \`${name}\` \\|`), `docs/service.md lacks ${name}`);
      assert.match(help, new RegExp(`^  ${name} `, 'm'), `serve --help lacks ${name}`);
    }
  });

  test('in a container limited to one CPU (a cgroup quota), the server runs one worker, not one per core', { timeout: 120_000 }, async (t) => {
    const crypto = require('node:crypto');
    const v1 = '/sys/fs/cgroup/cpu';
    const group = path.join(fs.existsSync(path.join(v1, 'cpu.cfs_quota_us')) ? v1 : '/sys/fs/cgroup', `choripan-test-${crypto.randomUUID().slice(0, 8)}`);
    try {
      fs.mkdirSync(group);
      if (group.startsWith(v1)) {
        fs.writeFileSync(path.join(group, 'cpu.cfs_period_us'), '100000');
        fs.writeFileSync(path.join(group, 'cpu.cfs_quota_us'), '100000');
      } else {
        fs.writeFileSync(path.join(group, 'cpu.max'), '100000 100000');
      }
    } catch (error) {
      if (fs.existsSync(group)) fs.rmdirSync(group);
      return t.skip(`cannot make a cgroup here (${error.code}); it needs root`);
    }
    const child = spawn('sh', ['-c', `echo $$ > ${group}/cgroup.procs && exec "$@"`, 'sh', process.execPath, main],
      { env: { ...process.env, PORT: '0', CHORIPAN_WORKERS: '', CHORIPAN_MODELS: '' } });
    try {
      const port = await listening(child);
      const { models } = await (await fetch(`http://127.0.0.1:${port}/healthz`)).json();
      assert.deepEqual(Object.values(models).map((m) => m.workers), [1]);
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      fs.rmdirSync(group);
    }
  });

  test('choripan serve --model a=… --model b=…: both served, the cores divided between them', { timeout: 120_000 }, async () => {
    const child = spawn(process.execPath, [path.join(root, 'bin', 'choripan.js'), 'serve', '--port', '0',
      '--model', `a=${defaultPackagePath}`, '--model', `b=${defaultModelPath}`], { env: { ...process.env, CHORIPAN_WORKERS: '' } });
    try {
      const port = await listening(child);
      const base = `http://127.0.0.1:${port}`;
      assert.deepEqual((await (await fetch(`${base}/readyz`)).json()).models, ['a', 'b']);
      for (const name of ['a', 'b']) assert.equal((await fetch(`${base}/v2/models/${name}/ready`)).status, 200);
      const { models } = await (await fetch(`${base}/healthz`)).json();
      const cores = require('../../js/binding').native().availableCores();
      assert.equal(models.a.workers + models.b.workers, Math.max(2, cores - (cores % 2)));
      const answer = await post(`${base}/predict?model=b`, photo('chelsea.png'));
      assert.equal((await answer.json()).model, 'b');
    } finally {
      child.kill('SIGTERM');
    }
  });

  test('a bad value stops start-up with one line naming the variable, a model file that cannot be read too', () => {
    for (const [variable, value, message] of [['CHORIPAN_MAX_QUEUE', 'many'], ['PORT', '99999'], ['CHORIPAN_MODELS', 'a=x.pt,a=y.pt'],
      ['CHORIPAN_CORS_ORIGINS', 'https://app.example.com/'],
      ['CHORIPAN_MODEL', 'no-such-model.pt', 'cannot read no-such-model.pt: no such file'],
      ['CHORIPAN_MODELS', `a=${defaultModelPath},b=${os.tmpdir()}`, `cannot read ${os.tmpdir()}: is a directory`]]) {
      const run = spawnSync(process.execPath, [main], { encoding: 'utf8', env: { ...process.env, [variable]: value }, timeout: 60_000 });
      assert.equal(run.status, 2, `${variable}=${value}: ${run.stderr}`);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, new RegExp(`^choripan: ${variable}: `));
      if (message) assert.equal(run.stderr, `choripan: ${variable}: ${message}\n`);
    }
  });
});
