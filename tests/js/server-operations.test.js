'use strict';
// What the service tells the people who run it: /metrics (series for each model, and labels that stay
// bounded whatever the requests), the request id on every answer and log line, and the OpenAPI document
// of exactly the routes it serves. Readiness while the models load is cli.test.js's.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const fs = require('node:fs');
const http = require('node:http');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { photo, defaultPackagePath, listen, postImage: post, twoModels, startServer, stopServers, CAT_LABELS } = require('./helpers');

describe('one app, two models', () => {
  let models;
  let base;
  let server;
  const lines = [];

  before(async () => {
    models = await twoModels();
    const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
    ({ server, base } = await listen(createApp({ models, logger })));
  });
  after(async () => {
    server.close();
    await Promise.all([...models.values()].map((m) => m.dispose()));
  });

  test('/metrics: request, inference, queue-wait and batch histograms, queue gauges, process metrics', async () => {
    await post(`${base}/predict`, photo('chelsea.png'));
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

describe('a package served on other kernels than it was packed for', () => {
  after(stopServers);
  const flags = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1].trim().split(/\s+/) ?? [];
  const avx512 = ['avx512f', 'avx512bw', 'avx512dq', 'avx512vl'].every((flag) => flags.includes(flag));

  test('lone requests run its any-batch model, and the log says why and what to do', {
    timeout: 120_000,
    skip: !avx512 && 'packs weights for AVX-512 kernels (setup compiles the default package here), then holds oneDNN to AVX2: needs AVX-512',
  }, async () => {
    const server = startServer({ ONEDNN_MAX_CPU_ISA: 'AVX2', CHORIPAN_MODEL: defaultPackagePath });
    const port = await server.listening;
    const loaded = server.lines.find((line) => line.msg === 'model loaded');
    assert.equal(loaded.loneBatch, 'model');
    const warning = server.lines.find((line) => line.level === 40 && line.singleMs !== undefined);
    assert.ok(warning.singleMs > warning.batchedMs, JSON.stringify(warning));
    assert.match(warning.msg, /packed for another CPU's kernels, so lone requests and pairs run the any-batch model; export the package on a machine like this one/);
    const answer = await post(`http://127.0.0.1:${port}/predict`, photo('chelsea.png'));
    assert.ok(CAT_LABELS.includes((await answer.json()).label));
    server.child.kill('SIGTERM');
    assert.deepEqual(await server.exited, { status: 0, signal: null });
  });
});
