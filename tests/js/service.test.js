'use strict';
// What the service adds for the people who run it: metrics, readiness, deadlines with a default answer,
// several models, embedding in another Express app, the OpenAPI document, the configuration, cross-origin
// requests. The page has its own file (page.test.js).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const http = require('node:http');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { test, describe, before, after } = require('node:test');
const express = require('express');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { root, photo, defaultModelPath, defaultPackagePath, CAT_LABELS, listening, chromiumPath, launchChromium } = require('./helpers');

function listen(app) {
  return new Promise((resolve) => {
    const server = http.createServer(app).listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${server.address().port}` }));
  });
}

const post = (url, body, headers = {}) => fetch(url, { method: 'POST', body, headers: { 'content-type': 'image/png', ...headers } });

describe('one app, two models', () => {
  let models;
  let base;
  let server;
  const lines = [];

  before(async () => {
    models = new Map([
      ['lite0', await choripan.load(defaultPackagePath, { workers: 1 })],
      ['traced', await choripan.load(defaultModelPath, { workers: 1 })],
    ]);
    const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
    ({ server, base } = await listen(createApp({ models, logger, defaultLabel: 'unknown' })));
  });
  after(async () => {
    server.close();
    await Promise.all([...models.values()].map((m) => m.dispose()));
  });

  test('?model= picks the model; the first is the default; an unknown one is 400', async () => {
    const [first, second, unknown] = await Promise.all(['', '?model=traced', '?model=nope']
      .map((query) => post(`${base}/predict${query}`, photo('chelsea.png'))));
    assert.equal((await first.json()).model, 'lite0');
    const traced = await second.json();
    assert.equal(traced.model, 'traced');
    assert.ok(CAT_LABELS.includes(traced.label));
    assert.equal(unknown.status, 400);
    assert.equal((await unknown.json()).error.code, 'E_INVALID_ARGUMENT');
  });

  test('/metrics: request, inference, queue-wait and batch histograms, queue gauges, process metrics', async () => {
    await post(`${base}/predict?model=traced`, photo('coffee.png'));
    const text = await (await fetch(`${base}/metrics`)).text();
    for (const series of [
      /^choripan_http_requests_total\{route="\/predict",method="POST",status="200"\} \d+/m,
      /^choripan_http_request_duration_seconds_bucket\{le="0\.1",route="\/predict",method="POST"\} \d+/m,
      /^choripan_inference_duration_seconds_count\{model="traced",version="1"\} [1-9]/m,
      /^choripan_queue_wait_duration_seconds_count\{model="lite0",version="1"\} [1-9]/m,
      /^choripan_batch_size_bucket\{le="1",model="traced",version="1"\} [1-9]/m,
      /^choripan_queue_depth\{model="lite0",version="1"\} 0/m,
      /^choripan_inflight\{model="traced",version="1"\} 0/m,
      /^choripan_process_resident_memory_bytes \d+/m,
    ]) {
      assert.match(text, series);
    }
    // The counts read from stats(): named, typed and explained as the vocabulary says.
    const { vocabulary, statMeaning } = require('../../js/vocabulary');
    const exported = vocabulary.stats.filter((s) => s.metric);
    assert.deepEqual(exported.map((s) => s.metric.name).sort(),
      ['choripan_inflight', 'choripan_pending_bytes', 'choripan_queue_depth', 'choripan_rejected_total']);
    for (const stat of exported) {
      assert.ok(text.includes(`# HELP ${stat.metric.name} ${statMeaning(stat)}\n# TYPE ${stat.metric.name} ${stat.metric.type}\n`), stat.name);
    }
    assert.match(text, /^choripan_rejected_total\{model="traced",version="1"\} 0$/m);
  });

  test('a request may ask for less time, and past it gets the default label, counted', async () => {
    const response = await post(`${base}/predict`, photo('chelsea.png'), { 'x-request-timeout-ms': '1' });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json().then(({ label, default: isDefault }) => ({ label, isDefault })), { label: 'unknown', isDefault: true });
    assert.match(await (await fetch(`${base}/metrics`)).text(), /^choripan_default_answers_total\{model="lite0",version="1"\} 1/m);
    const bad = await post(`${base}/predict`, photo('chelsea.png'), { 'x-request-timeout-ms': 'soon' });
    assert.equal(bad.status, 400);
  });

  test('every answer carries a request id: the one given, or a new one, and the log line has it', async () => {
    const given = await fetch(`${base}/healthz`, { headers: { 'x-request-id': 'abc-123' } });
    assert.equal(given.headers.get('x-request-id'), 'abc-123');
    const made = await fetch(`${base}/healthz`);
    assert.match(made.headers.get('x-request-id'), /^[0-9a-f-]{36}$/);
    assert.ok(lines.some((line) => line.id === 'abc-123' && line.path === '/healthz'));
  });

  test('/openapi.json documents every route the app serves, and only those', async () => {
    const spec = await (await fetch(`${base}/openapi.json`)).json();
    const documented = new Set(Object.entries(spec.paths).flatMap(([p, ops]) => Object.keys(ops).filter((m) => m !== 'parameters').map((m) => `${m} ${p}`)));
    const served = new Set();
    const walk = (stack) => {
      for (const layer of stack) {
        if (layer.route) {
          for (const method of Object.keys(layer.route.methods)) {
            served.add(`${method} ${layer.route.path.replace(/:(\w+)/g, '{$1}')}`);
          }
        } else if (layer.handle?.stack) {
          walk(layer.handle.stack);
        }
      }
    };
    walk(createApp({ models }).router.stack);
    for (const route of ['get /page.js', 'get /page.css', 'get /favicon.ico']) served.delete(route); // the page's own files
    assert.deepEqual([...served].sort(), [...documented].sort());
  });
});

describe('metrics of requests no route matched', () => {
  test('2,000 distinct 8 KB paths refused on their headers (413) or unknown (404), in every method: /metrics stays small', { timeout: 120_000 }, async () => {
    const model = await choripan.load(defaultPackagePath, { workers: 1, warmup: false });
    const { server } = await listen(createApp({ model, logger: pino({ level: 'silent' }) }));
    const { port } = server.address();
    const send = (method, route, headers) => new Promise((resolve, reject) => {
      const request = http.request({ host: '127.0.0.1', port, path: route, method, headers, agent: false }, (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode));
      });
      request.on('error', reject);
      request.end();
    });
    try {
      const methods = http.METHODS.filter((method) => method !== 'CONNECT'); // a tunnel, not a request Express sees
      const statuses = new Set();
      for (let i = 0; i < 1000; i++) {
        const route = `/${i}-${'x'.repeat(8 * 1024)}`;
        statuses.add(await send('POST', route, { 'content-length': String(2 ** 30) }));
        statuses.add(await send(methods[i % methods.length], `${route}/404`));
      }
      assert.deepEqual([...statuses].sort(), [404, 413]);
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const series = text.split('\n').filter((line) => line.startsWith('choripan_http_requests_total{'));
      const labels = (name) => [...new Set(series.map((line) => line.match(new RegExp(`${name}="([^"]*)"`))[1]))].sort();
      const routes = labels('route');
      assert.ok(routes.length === 1 && routes[0] === 'unmatched', `${routes.length} route labels`);
      assert.deepEqual(labels('method'), ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'other']);
      assert.ok(text.length < 100_000, `/metrics is ${text.length} bytes`);
    } finally {
      server.close();
      await model.dispose();
    }
  });
});

describe('mounted in another Express app', () => {
  test('its routes answer under the prefix, logged with it; other paths stay the host app\'s', async () => {
    const model = await choripan.load(defaultPackagePath, { workers: 1 });
    const lines = [];
    const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
    const host = express();
    host.get('/hello', (req, res) => res.send('hello from the host'));
    host.use('/vision', createApp({ model, logger }));
    host.use((req, res) => res.status(404).send('the host app\'s own 404'));
    const { server, base } = await listen(host);
    try {
      assert.equal(await (await fetch(`${base}/hello`)).text(), 'hello from the host');
      const answer = await post(`${base}/vision/predict`, photo('chelsea.png'));
      assert.ok(CAT_LABELS.includes((await answer.json()).label));
      assert.ok(lines.some((line) => line.path === '/vision/predict' && line.status === 200));
      const elsewhere = await fetch(`${base}/vision/not-ours`);
      assert.equal(elsewhere.status, 404);
      assert.equal(await elsewhere.text(), 'the host app\'s own 404');
      assert.equal((await fetch(`${base}/nowhere`)).status, 404);
    } finally {
      server.close();
      await model.dispose();
    }
  });
});

/** The port a server child logs that it listens on. */
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

  test('CHORIPAN_CORS_ORIGINS: the server lets those origins call it', { timeout: 120_000 }, async () => {
    const origin = 'https://app.example.com';
    const child = spawn(process.execPath, [main], { env: { ...process.env, PORT: '0', CHORIPAN_CORS_ORIGINS: `http://localhost:3000,${origin}` } });
    try {
      const port = await listening(child);
      const allowed = await fetch(`http://127.0.0.1:${port}/predict`, { method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
      assert.equal(allowed.status, 204);
      assert.equal(allowed.headers.get('access-control-allow-origin'), origin);
    } finally {
      child.kill('SIGTERM');
    }
  });

  test('CHORIPAN_MAX_QUEUE=2 CHORIPAN_MAX_BATCH=1: 40 at once get 200s and 503s with Retry-After, nothing else', { timeout: 120_000 }, async () => {
    const child = spawn(process.execPath, [main], { env: { ...process.env, PORT: '0', CHORIPAN_MAX_QUEUE: '2', CHORIPAN_MAX_BATCH: '1', CHORIPAN_WORKERS: '1' } });
    try {
      const port = await listening(child);
      const answers = await Promise.all(Array.from({ length: 40 }, () => post(`http://127.0.0.1:${port}/predict`, photo('chelsea.png'))
        .then(async (r) => ({ status: r.status, retry: r.headers.get('retry-after'), body: await r.json() }))));
      const statuses = new Set(answers.map((a) => a.status));
      assert.ok(statuses.has(200) && statuses.has(503), [...statuses].join());
      assert.deepEqual([...statuses].sort(), [200, 503]);
      for (const a of answers.filter((x) => x.status === 503)) {
        assert.match(a.retry, /^[1-9][0-9]*$/);
        assert.equal(a.body.error.code, 'E_QUEUE_FULL');
      }
    } finally {
      child.kill('SIGTERM');
    }
  });
});

describe('overload', () => {
  test('a client that retries a refusal at once, on the same connection, waits there for a place and is answered', { timeout: 60_000 }, async () => {
    const sharp = require('sharp');
    const jpeg = await sharp(photo('chelsea.png')).jpeg().toBuffer();
    // 6 megapixels: preprocessed on the model's own thread for about 100 ms, and counted in the queue meanwhile.
    const large = await sharp(photo('chelsea.png')).resize(3000).jpeg().toBuffer();
    const model = await choripan.load(defaultPackagePath, { maxQueue: 1, workers: 1 });
    const { server } = await listen(createApp({ model, logger: pino({ level: 'silent' }) }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 }); // one connection, reused
    const send = (body, via) => new Promise((resolve, reject) => {
      const request = http.request({ host: '127.0.0.1', port: server.address().port, path: '/predict', method: 'POST', agent: via,
        headers: { 'content-type': 'image/jpeg' } }, (response) => {
        response.resume();
        response.on('end', () => resolve({ status: response.statusCode, retryAfter: response.headers['retry-after'], socket: request.socket }));
      });
      request.on('error', reject);
      request.end(body);
    });
    try {
      const filling = send(large, false);
      while (model.stats().queued === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      const refused = await send(jpeg, agent);
      assert.equal(refused.status, 503);
      assert.match(refused.retryAfter, /^[1-9][0-9]*$/);
      const retried = await send(jpeg, agent);
      assert.equal(retried.socket, refused.socket, 'the retry went on the refused connection');
      assert.equal(retried.status, 200, 'the retry was held until a place freed, and answered');
      assert.equal((await filling).status, 200);
    } finally {
      agent.destroy();
      server.close();
      await model.dispose();
    }
  });

  // 32 clients that retry a refusal at once, or after the Retry-After they were given, against a queue of
  // 4, beside the same clients against a deep queue that never refuses (the capacity), A B C A B C.
  // Refusals come before decoding, and a retry that comes before its Retry-After, on the connection that
  // was refused, waits there for a place instead of spinning the event loop: goodput stays near capacity.
  test('a retry storm on a short queue keeps goodput near the deep-queue capacity', { timeout: 300_000 }, async () => {
    const sharp = require('sharp');
    const jpeg = await sharp(photo('chelsea.png')).jpeg().toBuffer();
    const seconds = 3;
    const storm = async (maxQueue, honourRetryAfter) => {
      const model = await choripan.load(defaultPackagePath, { maxQueue });
      const { server } = await listen(createApp({ model, logger: pino({ level: 'silent' }) }));
      const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
      const post = () => new Promise((resolve, reject) => {
        const request = http.request({ host: '127.0.0.1', port: server.address().port, path: '/predict', method: 'POST', agent,
          headers: { 'content-type': 'image/jpeg' } }, (response) => {
          response.resume();
          response.on('end', () => resolve({ status: response.statusCode, retryAfter: response.headers['retry-after'] }));
        });
        request.on('error', reject);
        request.end(jpeg);
      });
      const counts = { 200: 0, 503: 0 };
      const until = performance.now() + seconds * 1000;
      try {
        await Promise.all(Array.from({ length: 32 }, async () => {
          while (performance.now() < until) {
            const { status, retryAfter } = await post();
            assert.ok(status === 200 || status === 503, String(status));
            counts[status]++;
            if (status === 503) {
              assert.match(retryAfter, /^[1-9][0-9]*$/);
              if (honourRetryAfter) await new Promise((resolve) => setTimeout(resolve, Number(retryAfter) * 1000));
            }
          }
        }));
      } finally {
        agent.destroy();
        server.close();
        await model.dispose();
      }
      return { goodput: counts[200] / seconds, refusedPerSecond: counts[503] / seconds };
    };
    const runs = { deep: [], atOnce: [], honouring: [] };
    for (let round = 0; round < 2; round++) {
      runs.deep.push(await storm(256, false));
      runs.atOnce.push(await storm(4, false));
      runs.honouring.push(await storm(4, true));
    }
    const goodput = (name) => runs[name].reduce((sum, run) => sum + run.goodput, 0) / runs[name].length;
    const ratio = (name) => goodput(name) / goodput('deep');
    console.log(`retry storm, 32 clients: deep queue ${goodput('deep').toFixed(1)} req/s; maxQueue 4 retrying at once ` +
      `${goodput('atOnce').toFixed(1)} req/s (${ratio('atOnce').toFixed(2)}×, ` +
      `${runs.atOnce.map((run) => run.refusedPerSecond.toFixed(0)).join(', ')} refusals/s); honouring Retry-After ` +
      `${goodput('honouring').toFixed(1)} req/s (${ratio('honouring').toFixed(2)}×)`);
    assert.ok(runs.atOnce.every((run) => run.refusedPerSecond > 0), 'the short queue was never full: no storm');
    // Before refusals came ahead of decoding, this storm got 0.05× of capacity; before early retries were
    // held, 0.49–0.56× (docs/benchmark.md, Retry storms).
    assert.ok(ratio('atOnce') > 0.8, `retrying at once: ${ratio('atOnce').toFixed(2)}× the deep queue's goodput`);
    assert.ok(ratio('honouring') > 0.7, `honouring Retry-After: ${ratio('honouring').toFixed(2)}× the deep queue's goodput`);
  });
});

describe('cross-origin requests (CORS)', () => {
  const origin = 'https://app.example.com';
  const silent = pino({ level: 'silent' });
  let model;
  before(async () => {
    model = await choripan.load(defaultPackagePath, { workers: 1 });
  });
  after(() => model.dispose());
  const preflight = (url, from, headers = 'content-type,x-request-timeout-ms') => fetch(url, { method: 'OPTIONS',
    headers: { origin: from, 'access-control-request-method': 'POST', 'access-control-request-headers': headers } });

  test('corsOrigins lists who may call: their preflights pass, their answers and refusals carry the headers; no one else\'s', async () => {
    const { server, base } = await listen(createApp({ model, logger: silent, corsOrigins: `${origin}, http://localhost:3000` }));
    try {
      const allowed = await preflight(`${base}/predict`, origin);
      assert.equal(allowed.status, 204);
      assert.equal(allowed.headers.get('access-control-allow-origin'), origin);
      assert.equal(allowed.headers.get('access-control-allow-methods'), 'GET,HEAD,POST');
      assert.equal(allowed.headers.get('access-control-allow-headers'), 'content-type,x-request-timeout-ms');
      assert.equal(allowed.headers.get('access-control-max-age'), '600');
      assert.equal(allowed.headers.get('access-control-allow-credentials'), null, 'the service takes no credentials');
      assert.match(allowed.headers.get('vary'), /Origin/);
      const infer = await preflight(`${base}/v2/models/efficientnet-lite0/infer`, 'http://localhost:3000');
      assert.equal(infer.headers.get('access-control-allow-origin'), 'http://localhost:3000');

      const answer = await post(`${base}/predict`, photo('chelsea.png'), { origin });
      assert.equal(answer.status, 200);
      assert.equal(answer.headers.get('access-control-allow-origin'), origin);
      assert.equal(answer.headers.get('access-control-expose-headers'), 'X-Request-Id,Retry-After,RateLimit,RateLimit-Policy,WWW-Authenticate');
      for (const [refusal, status] of [[post(`${base}/predict`, 'hello', { origin, 'content-type': 'text/plain' }), 415],
        [fetch(`${base}/nowhere`, { headers: { origin } }), 404]]) {
        const response = await refusal;
        assert.equal(response.status, status);
        assert.equal(response.headers.get('access-control-allow-origin'), origin, `a ${status} is readable by the caller too`);
      }
      // Refused on its headers, before anything else looks at it.
      const declared = await new Promise((resolve, reject) => {
        const request = http.request(`${base}/predict`, { method: 'POST',
          headers: { origin, 'content-type': 'image/png', 'content-length': String(2 ** 30) } }, (response) => {
          request.destroy();
          resolve(response);
        });
        request.on('error', reject);
        request.flushHeaders();
      });
      assert.equal(declared.statusCode, 413);
      assert.equal(declared.headers['access-control-allow-origin'], origin, 'a 413 is readable by the caller too');

      for (const stranger of ['https://evil.example', 'https://app.example.com.evil.example', 'null']) {
        const refused = await preflight(`${base}/predict`, stranger);
        assert.equal(refused.headers.get('access-control-allow-origin'), null, stranger);
        const answered = await post(`${base}/predict`, photo('chelsea.png'), { origin: stranger });
        assert.equal(answered.headers.get('access-control-allow-origin'), null, stranger);
      }
    } finally {
      server.close();
    }
  });

  test("'*' lets any origin call; without corsOrigins no answer carries an Access-Control header", async () => {
    const any = await listen(createApp({ model, logger: silent, corsOrigins: '*' }));
    const none = await listen(createApp({ model, logger: silent }));
    try {
      assert.equal((await preflight(`${any.base}/predict`, 'https://anyone.example')).headers.get('access-control-allow-origin'), '*');
      const refused = await preflight(`${none.base}/predict`, origin);
      assert.equal(refused.headers.get('access-control-allow-origin'), null);
      const answered = await post(`${none.base}/predict`, photo('chelsea.png'), { origin });
      assert.equal(answered.status, 200);
      assert.deepEqual([...answered.headers.keys()].filter((name) => name.startsWith('access-control-')), []);
    } finally {
      any.server.close();
      none.server.close();
    }
  });

  test('a list that is not origins is refused, naming the entry', () => {
    for (const [list, message] of [['https://app.example.com/', /'https:\/\/app\.example\.com\/' \(did you mean https:\/\/app\.example\.com\?\)/],
      ['https://App.example.com:443', /did you mean https:\/\/app\.example\.com\?/], ['app.example.com', /got 'app\.example\.com'$/],
      ['ftp://files.example', /got 'ftp:\/\/files\.example'/], ['*, https://app.example.com', /'\*' allows every origin/]]) {
      assert.throws(() => createApp({ model, corsOrigins: list }), (error) => error instanceof TypeError && /^corsOrigins: /.test(error.message) &&
        message.test(error.message), list);
    }
  });

  test('in Chromium, a page of a listed origin calls POST /predict and reads the answer; from elsewhere it cannot', {
    skip: !chromiumPath && 'Chromium is not installed here', timeout: 120_000 }, async () => {
    const site = await listen((req, res) => res.end('<!doctype html><title>an app of another origin</title>'));
    const allowing = await listen(createApp({ model, logger: silent, corsOrigins: site.base }));
    const closed = await listen(createApp({ model, logger: silent }));
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(site.base);
      const call = (url, bytes) => page.evaluate(([target, body]) => fetch(target, { method: 'POST', body: new Uint8Array(body),
        headers: { 'Content-Type': 'image/png', 'X-Request-Timeout-Ms': '20000' } })
        .then(async (r) => ({ status: r.status, body: await r.json(), id: r.headers.get('x-request-id') }), (error) => ({ failed: error.name })),
      [url, [...bytes]]);
      const answer = await call(`${allowing.base}/predict`, photo('chelsea.png'));
      assert.equal(answer.status, 200, JSON.stringify(answer));
      assert.ok(CAT_LABELS.includes(answer.body.label));
      assert.match(answer.id, /^[0-9a-f-]{36}$/, 'X-Request-Id is exposed');
      const refusal = await call(`${allowing.base}/predict`, Buffer.from('not an image'));
      assert.deepEqual([refusal.status, refusal.body.error.code], [400, 'E_DECODE']);
      assert.deepEqual(await call(`${closed.base}/predict`, photo('chelsea.png')), { failed: 'TypeError' });
    } finally {
      await browser.close();
      for (const { server } of [site, allowing, closed]) server.close();
    }
  });
});

describe('no input hurts the service', () => {
  test('300 bad requests of every kind mixed with good ones, OIP included: coded answers, good ones served, memory and sockets back', { timeout: 300_000 }, async () => {
    const crypto = require('node:crypto');
    const net = require('node:net');
    const model = await choripan.load(defaultPackagePath, { workers: 1 });
    const { server } = await listen(createApp({ model, logger: pino({ level: 'silent' }) }));
    const { port } = server.address();
    const send = (route, { method = 'POST', headers = {}, body } = {}) => new Promise((resolve, reject) => {
      const request = http.request({ host: '127.0.0.1', port, path: route, method, headers, agent: false }, (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode, text: Buffer.concat(chunks).toString() }));
      });
      request.on('error', reject);
      request.end(body);
    });
    const json = (value) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) });
    const infer = '/v2/models/efficientnet-lite0/infer';
    const png = photo('chelsea.png');
    const kinds = [
      () => send('/predict', { headers: { 'content-type': 'image/jpeg' }, body: crypto.randomBytes(2000) }),
      () => send('/predict', { headers: { 'content-type': 'image/png' }, body: png.subarray(0, png.length / 3) }),
      () => send('/predict', { headers: { 'content-type': 'image/png' }, body: Buffer.concat([png.subarray(0, 33), crypto.randomBytes(500)]) }),
      () => send('/predict', { headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x\r\ngarbage' }),
      () => send('/predict', { headers: { 'content-type': 'text/plain' }, body: 'hello' }),
      () => send('/predict?model=none', { headers: { 'content-type': 'image/png' }, body: png }),
      () => send(infer, { headers: { 'content-type': 'application/json' }, body: '{"inputs": [' }),
      () => send(infer, json({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: ['aGk='] }] })),
      () => send(infer, json({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: ['not base64!'] }] })),
      () => send(infer, json({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [crypto.randomBytes(300).toString('base64')] }] })),
      () => send(infer, json({ inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', data: [1, 2, 3] }] })),
      () => send(infer, json({ inputs: [{ name: 'input', shape: [1, 3, 2, 2], datatype: 'FP32', data: Array(12).fill(0) }] })),
      () => send(infer, json({ inputs: [{ name: 'x', shape: [1], datatype: 'INT64', data: [1] }] })),
      () => send(infer, json({ inputs: [{ name: 'x', shape: 'wide', datatype: 'BYTES', data: [] }] })),
      () => send(infer, json({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: ['aGk='] }], outputs: [{ name: 'nope' }] })),
      () => {
        const header = JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: 10_000 } }] });
        return send(infer, { headers: { 'inference-header-content-length': String(header.length) }, body: `${header}short` });
      },
      () => send(infer, { headers: { 'inference-header-content-length': '99999' }, body: '{}' }),
      () => send('/v2/models/none/infer', json({})),
      () => new Promise((resolve) => { // a client that declares a body and goes away
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.write('POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\nabc');
          socket.destroy();
          resolve({ status: 499, text: '{"error":"client gone"}' });
        });
      }),
    ];
    const good = () => send('/predict', { headers: { 'content-type': 'image/png' }, body: png }).then((answer) => ({ ...answer, good: true }));
    for (let i = 0; i < 10; i++) await send('/predict', { headers: { 'content-type': 'image/png' }, body: png });
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    const answers = [];
    for (let round = 0; round < 30; round++) {
      const bad = Array.from({ length: 10 }, (_, j) => kinds[(round * 10 + j) % kinds.length]());
      answers.push(...await Promise.all([...bad, good(), good()]));
    }
    for (const { status, text, good: wasGood } of answers) {
      if (wasGood) {
        assert.equal(status, 200, text);
        assert.ok(CAT_LABELS.includes(JSON.parse(text).label), text);
        continue;
      }
      assert.ok(status >= 400 && status < 600 && status !== 500, `${status} ${text}`);
      const { error } = JSON.parse(text);
      assert.ok(typeof error === 'string' || (typeof error.code === 'string' && typeof error.message === 'string'), text);
    }
    assert.equal((await send('/healthz', { method: 'GET' })).status, 200);
    const after = await send('/predict', { headers: { 'content-type': 'image/png' }, body: png });
    assert.ok(CAT_LABELS.includes(JSON.parse(after.text).label));
    const growth = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    assert.ok(growth < 200, `RSS grew by ${growth.toFixed(0)} MB`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const open = await new Promise((resolve) => server.getConnections((error, count) => resolve(count)));
    assert.equal(open, 0, 'every connection closed');
    assert.equal(model.stats().queued + model.stats().inflight + model.stats().pendingBytes, 0, 'nothing left in the core');
    server.close();
    await model.dispose();
  });
});
