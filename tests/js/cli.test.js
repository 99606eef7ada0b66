'use strict';
// The `choripan` command, run as a user runs it: bin/choripan.js in a process of its own, its exit
// status, what it prints on stdout and stderr.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { test, describe, before, after } = require('node:test');
const { root, photoPath, defaultModelPath, defaultPackagePath } = require('./helpers');

const bin = path.join(root, 'bin', 'choripan.js');
// The server's variables would change what these runs do.
const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(CHORIPAN_|PORT$|HOST$)/.test(name)));

/** The command, run to its end: exit status, stdout, stderr, and stderr's lines. */
function run(args) {
  const done = spawnSync(process.execPath, [bin, ...args], { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
  return { status: done.status, stdout: done.stdout, stderr: done.stderr, errors: done.stderr.split('\n').filter(Boolean) };
}

const jsonLines = (text) => text.split('\n').filter(Boolean).map((line) => JSON.parse(line));

/** Resolves to what `child` wrote on stdout once it matches `pattern`; rejects if it exits first, or after a minute. */
function output(child, pattern) {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within a minute: ${text}`)), 60_000);
    child.stdout.on('data', (chunk) => {
      text += chunk;
      if (pattern.test(text)) {
        clearTimeout(timer);
        resolve(text);
      }
    });
    child.once('exit', (status) => reject(new Error(`exited with ${status}: ${text}`)));
  });
}

let dir;
let broken;
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-cli-'));
  broken = path.join(dir, 'broken.pt');
  fs.writeFileSync(broken, crypto.randomBytes(4096)); // a file, but no model
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('choripan serve', () => {
  test('a port in use: one line, exit 1, before any model loads', async () => {
    const taken = net.createServer();
    await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address();
    try {
      const served = run(['serve', '--port', String(port)]);
      assert.equal(served.status, 1, served.stderr);
      assert.deepEqual(served.errors, [`choripan: cannot listen on 127.0.0.1:${port}: EADDRINUSE (another process listens there)`]);
      assert.equal(served.stdout, '', 'no model was loaded, nothing was logged');
    } finally {
      taken.close();
    }
  });

  test('an address this machine does not have: one line, exit 1', () => {
    const served = run(['serve', '--port', '0', '--host', '192.0.2.1']); // TEST-NET-1: on no interface
    assert.equal(served.status, 1, served.stderr);
    assert.deepEqual(served.errors, ['choripan: cannot listen on 192.0.2.1:0: EADDRNOTAVAIL (this machine has no such address)']);
    assert.equal(served.stdout, '');
  });

  test('a model that does not load: the line predict prints for it, on stderr, exit 1', () => {
    const predicted = run(['predict', '--model', broken, photoPath('coffee.png')]);
    assert.equal(predicted.status, 1);
    assert.equal(predicted.errors.length, 1, predicted.stderr);
    assert.match(predicted.errors[0], /^choripan: E_MODEL_LOAD: cannot load model .*broken\.pt: /);
    const served = run(['serve', '--port', '0', '--model', broken]);
    assert.equal(served.status, 1, served.stderr);
    assert.deepEqual(served.errors, predicted.errors);
    assert.deepEqual(jsonLines(served.stdout).map((line) => [line.level, line.msg.replace(/:\d+;/, ':N;')]),
      [[30, 'listening on http://127.0.0.1:N; loading the model']]);
  });

  test('listens before the models load: 503 and Retry-After until they are ready', { timeout: 120_000 }, async () => {
    // Two models, loaded one after the other: time enough to ask while they load.
    const child = spawn(process.execPath, [bin, 'serve', '--port', '0', '--model', `a=${defaultPackagePath}`, '--model', `b=${defaultModelPath}`],
      { env });
    const ready = output(child, /"port":\d+/);
    ready.catch(() => {}); // awaited below, unless a test fails first
    try {
      const { url } = jsonLines(await output(child, /\n/))[0];
      const ask = async (route, init) => {
        const answer = await fetch(`${url}${route}`, init);
        return { status: answer.status, retryAfter: answer.headers.get('retry-after'), body: await answer.json() };
      };
      const loading = await Promise.all([ask('/readyz'), ask('/healthz'), ask('/v2/health/ready'),
        ask('/predict', { method: 'POST', body: fs.readFileSync(photoPath('coffee.png')), headers: { 'content-type': 'image/png' } })]);
      assert.deepEqual(loading, [
        { status: 503, retryAfter: '1', body: { status: 'loading' } },
        { status: 503, retryAfter: '1', body: { status: 'loading' } },
        { status: 503, retryAfter: '1', body: { error: 'The server is loading its models: retry in a moment' } },
        { status: 503, retryAfter: '1', body: { error: { code: 'E_NOT_READY', message: 'The server is loading its models: retry in a moment' } } },
      ]);
      const { port } = jsonLines(await ready).at(-1);
      assert.equal(url, `http://127.0.0.1:${port}`);
      const loaded = await ask('/readyz');
      assert.deepEqual([loaded.status, loaded.body], [200, { status: 'ready', models: ['a', 'b'] }]);
    } finally {
      child.kill('SIGTERM');
    }
  });

  test('on a terminal, the log is for a person: pino-pretty, not JSON', { timeout: 120_000 }, async (t) => {
    if (spawnSync('script', ['--version']).error) return t.skip('no `script` (util-linux) to run it on a terminal');
    // script(1) runs the command on a pseudo-terminal of its own.
    const child = spawn('script', ['-qfec', `${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} serve --port 0`, '/dev/null'],
      { env, detached: true });
    let text;
    try {
      text = await output(child, /ready: serving/);
    } finally {
      process.kill(-child.pid, 'SIGTERM'); // script, and with its terminal gone, the server
    }
    const lines = text.replace(/\x1b\[[0-9;]*m/g, '').split(/\r?\n/).filter(Boolean); // eslint-disable-line no-control-regex
    assert.ok(lines.length >= 3, text);
    for (const line of lines) assert.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: /);
    assert.match(lines[0], /INFO: listening on http:\/\/127\.0\.0\.1:\d+; loading the model/);
  });
});
