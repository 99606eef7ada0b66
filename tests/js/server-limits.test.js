'use strict';
// The service's limits and what happens at them: a body declared over the limit refused on its headers, a
// deadline a request asks for (and the default answer past it), a full queue's 503 with Retry-After, and
// what clients that retry get.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { root, photo, defaultPackagePath, listening, listen, postImage: post } = require('./helpers');

describe('one model, with a default answer', () => {
  let model;
  let server;
  let base;

  before(async () => {
    model = await choripan.load(defaultPackagePath, { workers: 1 });
    ({ server, base } = await listen(createApp({ models: new Map([['lite0', model]]), logger: pino({ level: 'silent' }), defaultLabel: 'unknown' })));
  });
  after(async () => {
    server.close();
    await model.dispose();
  });

  test('a declared 20 MB body is refused on its headers: 413 JSON and the connection closed, before any byte of it', async () => {
    const net = require('node:net');
    const { port } = server.address();
    const answer = await new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.write('POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 20971520\r\n\r\n');
      });
      let text = '';
      socket.on('data', (chunk) => { text += chunk; });
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
      socket.setTimeout(5000, () => reject(new Error('no answer within 5 s: the server waited for the body')));
    });
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.match(answer, /connection: close/i);
    assert.equal(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).error.code, 'E_TOO_LARGE');
  });

  test('a request may ask for less time, and past it gets the default label, counted', async () => {
    const response = await post(`${base}/predict`, photo('chelsea.png'), { 'x-request-timeout-ms': '1' });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json().then(({ label, default: isDefault }) => ({ label, isDefault })), { label: 'unknown', isDefault: true });
    assert.match(await (await fetch(`${base}/metrics`)).text(), /^choripan_default_answers_total\{model="lite0",version="1"\} 1/m);
    const bad = await post(`${base}/predict`, photo('chelsea.png'), { 'x-request-timeout-ms': 'soon' });
    assert.equal(bad.status, 400);
  });
});

describe('a full queue', () => {
  const main = path.join(root, 'js', 'server', 'main.js');

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
