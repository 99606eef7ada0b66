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

describe('choripan predict', () => {
  const coffee = photoPath('coffee.png');

  test('prints the top 5 labels of each image, or with --json one JSON line each', () => {
    const human = run(['predict', coffee]);
    assert.equal(human.status, 0, human.stderr);
    const lines = human.stdout.trim().split('\n');
    assert.equal(lines.length, 5);
    assert.match(lines[0], new RegExp(`^${coffee.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: espresso \\(0\\.\\d{3}\\)$`));
    const json = run(['predict', '--json', coffee, photoPath('chelsea.png')]);
    assert.equal(json.status, 0, json.stderr);
    const answers = jsonLines(json.stdout);
    assert.deepEqual(answers.map((a) => [a.file, a.top.length]), [[coffee, 5], [photoPath('chelsea.png'), 5]]);
    assert.equal(answers[0].label, 'espresso');
  });

  test('--top-k K, and --topk K as its alias; more than the model has is all of them, as the default 5 is cut', () => {
    const topK = (args) => {
      const answer = run(['predict', '--json', ...args, coffee]);
      assert.equal(answer.status, 0, answer.stderr);
      return jsonLines(answer.stdout)[0].top.length;
    };
    assert.equal(topK(['--top-k', '2']), 2);
    assert.equal(topK(['--topk', '3']), 3);
    assert.equal(topK(['--top-k', '5000']), 1000); // the default model's 1000 labels
    assert.match(run(['predict', '--help']).stdout.replace(/\s+/g, ' '), /more than the model has prints them all/);
  });

  test('an image that fails: its own line (stderr, or a JSON line with --json), the others answered, exit 1', () => {
    const corrupt = path.join(dir, 'corrupt.jpg');
    fs.writeFileSync(corrupt, crypto.randomBytes(3000));
    const human = run(['predict', corrupt, coffee]);
    assert.equal(human.status, 1);
    assert.match(human.errors.join('\n'), new RegExp(`^${corrupt.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: E_DECODE: The bytes are not an image`));
    assert.equal(human.errors.length, 1);
    assert.match(human.stdout, /espresso/);
    const json = run(['predict', '--json', corrupt, coffee]);
    assert.equal(json.status, 1);
    assert.equal(json.stderr, '');
    const [failed, answered] = jsonLines(json.stdout);
    assert.deepEqual(Object.keys(failed), ['file', 'error']);
    assert.equal(failed.file, corrupt);
    assert.equal(failed.error.code, 'E_DECODE');
    assert.match(failed.error.message, /^The bytes are not an image/);
    assert.equal(answered.label, 'espresso');
  });

  test('a file that cannot be read: worded once, before the model loads, and nothing is run (exit 2)', () => {
    const missing = run(['predict', coffee, 'missing.jpg']);
    assert.equal(missing.status, 2);
    assert.deepEqual(missing.errors, ['choripan: cannot read missing.jpg: no such file']);
    assert.equal(missing.stdout, '', 'coffee.png was not classified either');
    const folder = run(['predict', dir]);
    assert.deepEqual([folder.status, folder.errors], [2, [`choripan: cannot read ${dir}: is a directory`]]);
    // The broken model would fail to load (exit 1): it is never reached.
    const model = run(['predict', '--model', dir, coffee]);
    assert.deepEqual([model.status, model.errors], [2, [`choripan: cannot read ${dir}: is a directory`]]);
    const beforeLoad = run(['predict', '--model', broken, 'missing.jpg']);
    assert.deepEqual([beforeLoad.status, beforeLoad.errors], [2, ['choripan: cannot read missing.jpg: no such file']]);
    const json = run(['predict', '--json', 'missing.jpg', dir]);
    assert.equal(json.status, 2);
    assert.equal(json.stderr, '');
    assert.deepEqual(jsonLines(json.stdout), [
      { file: 'missing.jpg', error: { code: 'E_INVALID_ARGUMENT', message: 'cannot read missing.jpg: no such file' } },
      { file: dir, error: { code: 'E_INVALID_ARGUMENT', message: `cannot read ${dir}: is a directory` } },
    ]);
  });
});

describe('usage', () => {
  test('a usage error is one line that says where to read more, and what was meant when it was misspelt (exit 2)', () => {
    const image = photoPath('coffee.png');
    for (const [args, line] of [
      [[], 'a command is needed: serve or predict; see `choripan --help`'],
      [['prdict', image], "unknown command 'prdict' (did you mean predict?); see `choripan --help`"],
      [['--verison'], "unknown option '--verison' (did you mean --version?); see `choripan --help`"],
      [['predict', '--top', '3', image], "unknown option '--top' (did you mean --top-k?); see `choripan predict --help`"],
      [['predict', '--jsn', image], "unknown option '--jsn' (did you mean --json?); see `choripan predict --help`"],
      [['predict'], "missing required argument 'image'; see `choripan predict --help`"],
      [['predict', '--top-k', 'abc', image], "--top-k: expected a positive integer, got 'abc'; see `choripan predict --help`"],
      [['predict', '--top-k', '0', image], "--top-k: expected a positive integer, got '0'; see `choripan predict --help`"],
      [['predict', '--top-k', '2', '--topk', '3', image], '--topk is --top-k: give it once; see `choripan predict --help`'],
      [['predict', '--model', 'a.pt', '--model', 'b.pt', image], 'predict takes one --model; see `choripan predict --help`'],
      [['serve', '--prot', '8080'], "unknown option '--prot' (did you mean --port?); see `choripan serve --help`"],
      [['serve', '--port', 'abc'], "--port: expected an integer from 0 to 65535, got 'abc'; see `choripan serve --help`"],
      [['serve', '--port', '65536'], "--port: expected an integer from 0 to 65535, got '65536'; see `choripan serve --help`"],
      [['serve', 'model.pt'], "too many arguments for 'serve'. Expected 0 arguments but got 1; see `choripan serve --help`"],
      [['serve', '--model', 'a=x.pt', '--model', 'y.pt'], "--model: several models need a name each (NAME=PATH), got 'y.pt'; see `choripan serve --help`"],
    ]) {
      const usage = run(args);
      assert.equal(usage.status, 2, `${args.join(' ')}: ${usage.stderr}`);
      assert.deepEqual(usage.errors, [`choripan: ${line}`], args.join(' '));
      assert.equal(usage.stdout, '');
    }
  });

  test('--model checked before the port is taken: a folder is not a model (exit 2)', () => {
    const served = run(['serve', '--port', '0', '--model', dir]);
    assert.deepEqual([served.status, served.errors, served.stdout], [2, [`choripan: cannot read ${dir}: is a directory`], '']);
  });

  test('--version prints the package version', () => {
    for (const flag of ['--version', '-v']) {
      const printed = run([flag]);
      assert.deepEqual([printed.status, printed.stdout], [0, `${require('../../package.json').version}\n`]);
    }
  });

  test('a reader that stops early is no error: nothing on stderr', () => {
    for (const args of [['serve', '--help'], ['--help'], ['predict', photoPath('chelsea.png'), photoPath('coffee.png')]]) {
      // `true` has exited before the command writes, so every write meets a closed pipe.
      const piped = spawnSync('sh', ['-c', `"${process.execPath}" "${bin}" ${args.map((a) => `'${a}'`).join(' ')} | true`],
        { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
      assert.equal(piped.stderr, '', args.join(' '));
    }
  });

  test('each command has its own help (serve\'s lists the variables: server-config.test.js)', () => {
    const [global, serve, predict] = [['--help'], ['serve', '--help'], ['predict', '--help']].map(run);
    for (const help of [global, serve, predict]) assert.equal(help.status, 0, help.stderr);
    assert.match(global.stdout, /^Usage: choripan \[options\] \[command\]/);
    assert.match(serve.stdout, /^Usage: choripan serve \[options\]/);
    assert.match(predict.stdout, /^Usage: choripan predict \[options\] <image\.\.\.>/);
    assert.match(global.stdout, /^ {2}serve .*\n {2}predict /m);
    assert.match(serve.stdout, /^ {2}CHORIPAN_URL_ALLOWLIST /m);
    assert.doesNotMatch(predict.stdout, /CHORIPAN_URL_ALLOWLIST/);
    assert.equal(run(['help', 'predict']).stdout, predict.stdout);
  });
});
