'use strict';
// native/core/vocabulary.json owns the error codes, the stats fields and the load options; everything
// that repeats them must agree with it.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { test } = require('node:test');
const choripan = require('choripan');
const { root, env, defaultModelPath, rejection } = require('./helpers');

const vocabulary = require('../../native/core/vocabulary.json');

test('the generated header, index.d.ts and docs/api.md are up to date', () => {
  const run = spawnSync(process.execPath, [path.join(root, 'scripts', 'vocabulary.js'), '--check'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
});

test("the stats the service exports are named as Prometheus names them: a counter's name ends in _total", () => {
  for (const { name, metric } of vocabulary.stats.filter((s) => s.metric)) {
    assert.match(metric.name, /^choripan_[a-z_]+$/, name);
    assert.equal(metric.name.endsWith('_total'), metric.type === 'counter', metric.name);
  }
});

test('the codes the package exports are the vocabulary, and the service answers each with its status', () => {
  assert.deepEqual(Object.keys(choripan.codes), vocabulary.errors.map((e) => e.code));
  const { STATUS } = require('../../js/errors');
  for (const { code, status } of vocabulary.errors) assert.equal(STATUS[code], status, code);
});

test("docs/service.md's table of failures gives each code the vocabulary's status", () => {
  const table = fs.readFileSync(path.join(root, 'docs', 'service.md'), 'utf8');
  const rows = [...table.matchAll(/^\| (\d{3}) \| `(E_[A-Z_]+)` \|/gm)];
  assert.ok(rows.length >= 9, `${rows.length} rows`);
  const status = Object.fromEntries(vocabulary.errors.map((e) => [e.code, e.status]));
  for (const [, code, name] of rows) assert.equal(Number(code), status[name], name);
});

test('stats() returns exactly the vocabulary fields, in order, and Python the same in snake_case', async () => {
  const model = await choripan.load(defaultModelPath, { warmup: false });
  assert.deepEqual(Object.keys(model.stats()), vocabulary.stats.map((s) => s.name));
  await model.dispose();
  const python = spawnSync(env.python, ['-c', `import choripan_core, json
m = choripan_core.Model(${JSON.stringify(defaultModelPath)}, warmup=False)
print(json.dumps(list(m.stats())))
m.dispose()`], { encoding: 'utf8' });
  assert.equal(python.status, 0, python.stderr);
  const snake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  assert.deepEqual(JSON.parse(python.stdout), vocabulary.stats.map((s) => snake(s.name)));
});

test('errors the binding raises are ChoripanErrors built natively, not re-wrapped', async () => {
  const error = await rejection(choripan.load(path.join(os.tmpdir(), 'no-such-model.pt')));
  assert.ok(error instanceof choripan.ChoripanError);
  assert.equal(error.code, 'E_MODEL_LOAD');
  assert.equal(error.cause, undefined);
  assert.match(error.stack, /vocabulary\.test\.js/); // points at the caller
});

test('without an addon, E_ADDON names the platform and the two ways out', () => {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-unbuilt-'));
  try {
    fs.cpSync(path.join(root, 'js'), path.join(copy, 'js'), { recursive: true });
    fs.mkdirSync(path.join(copy, 'native', 'core'), { recursive: true });
    fs.copyFileSync(path.join(root, 'native', 'core', 'vocabulary.json'), path.join(copy, 'native', 'core', 'vocabulary.json'));
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'));
    const script = `require(${JSON.stringify(path.join(copy, 'js'))}).load('m.pt').catch((e) => console.log(JSON.stringify({ code: e.code, message: e.message })))`;
    const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    const { code, message } = JSON.parse(run.stdout);
    assert.equal(code, 'E_ADDON');
    assert.match(message, /^choripan's native addon is not available on linux-x64-gnu \(Node v[\d.]+\): the prebuilt package @choripan\/linux-x64-gnu is not installed/);
    assert.match(message, /`npm install choripan --build-from-source`/);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
});

test('what a refusal at an image limit says agrees with the limit', () => {
  const limits = Object.fromEntries(vocabulary.limits.map((l) => [l.name, l]));
  assert.equal(limits.maxPixels.refusal, `at most ${limits.maxPixels.value / 1e6} megapixels are decoded`);
  assert.equal(limits.maxAspectRatio.refusal, `aspect ratios beyond ${limits.maxAspectRatio.value}:1 are refused`);
});

test('every code has a gRPC status, and RESOURCE_EXHAUSTED is a code that never fits or a client past its rate', () => {
  const { status } = require('@grpc/grpc-js');
  const { GRPC_STATUS, toGrpcError } = require('../../js/server/http-error');
  const served = vocabulary.errors.filter((e) => e.layer !== 'export');  // export's codes end a Python command
  assert.deepEqual(Object.keys(GRPC_STATUS).sort(), served.map((e) => e.code).sort());
  assert.deepEqual(Object.keys(GRPC_STATUS).filter((code) => GRPC_STATUS[code] === status.RESOURCE_EXHAUSTED), ['E_TOO_LARGE', 'E_RATE_LIMITED']);
  const full = toGrpcError(new choripan.ChoripanError('E_QUEUE_FULL', 'full'));
  assert.deepEqual([full.grpcCode, full.status, full.retryAfter], [status.UNAVAILABLE, 503, 1]);
  assert.equal(toGrpcError(new Error('boom')).grpcCode, status.INTERNAL);
});
