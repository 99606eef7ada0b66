'use strict';
// Tracing (js/server/tracing.js, trace-requests.js): the spans are received over OTLP/HTTP by a real
// receiver on a loopback port, JSON from a service in this process and protobuf from `choripan serve`,
// and checked against the caller's traceparent and against the core's own timings.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const sharp = require('sharp');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { readConfig, readTracing, ConfigError } = require('../../js/server/config');
const { root, photo, defaultModelPath, CAT_LABELS } = require('./helpers');

const CAT = fs.readFileSync(path.join(root, 'examples', 'cat.jpg')); // a JPEG the core decodes itself
const SERVER = 2; // OTLP's SpanKind
const INTERNAL = 1;
const ERROR = 2; // OTLP's StatusCode

/** What every test gets of a span, whichever encoding it came in. */
function span({ traceId, spanId, parentSpanId, name, kind, start, end, attributes, status, resource }) {
  return { traceId, spanId, parentSpanId: parentSpanId || '', name, kind, start: BigInt(start), end: BigInt(end), attributes,
    status: { code: status?.code ?? 0, message: status?.message ?? '' }, resource };
}

/** OTLP/JSON: ids in hex, times as decimal strings. */
function fromJson(body) {
  const value = (v) => v.stringValue ?? v.boolValue ?? v.doubleValue ?? (v.intValue === undefined ? undefined : Number(v.intValue));
  const attributes = (list = []) => Object.fromEntries(list.map(({ key, value: v }) => [key, value(v)]));
  return JSON.parse(body).resourceSpans.flatMap(({ resource, scopeSpans }) => scopeSpans.flatMap(({ spans }) => spans.map((s) =>
    span({ ...s, start: s.startTimeUnixNano, end: s.endTimeUnixNano, attributes: attributes(s.attributes),
      resource: attributes(resource.attributes) }))));
}

/** The protobuf wire format, as far as an ExportTraceServiceRequest needs: [field, value] pairs. */
function* fields(bytes) {
  let at = 0;
  const varint = () => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = bytes[at++];
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value;
    }
  };
  while (at < bytes.length) {
    const key = Number(varint());
    const width = { 1: 8, 5: 4 }[key & 7];
    if ((key & 7) === 0) {
      yield [key >> 3, varint()];
    } else if (width || (key & 7) === 2) {
      const length = width ?? Number(varint());
      yield [key >> 3, bytes.subarray(at, at + length)];
      at += length;
    } else {
      throw new Error(`protobuf wire type ${key & 7}`);
    }
  }
}

/** opentelemetry/proto/collector/trace/v1's ExportTraceServiceRequest, the fields the tests read. */
function fromProtobuf(body) {
  const anyValue = (bytes) => {
    for (const [field, v] of fields(bytes)) {
      if (field === 1) return v.toString('utf8');
      if (field === 2) return v === 1n;
      if (field === 3) return Number(BigInt.asIntN(64, v));
      if (field === 4) return v.readDoubleLE(0);
    }
    return undefined;
  };
  const keyValue = (bytes) => {
    const pair = {};
    for (const [field, v] of fields(bytes)) {
      if (field === 1) pair.key = v.toString('utf8');
      if (field === 2) pair.value = anyValue(v);
    }
    return [pair.key, pair.value];
  };
  const spans = [];
  for (const [field, resourceSpans] of fields(body)) {
    if (field !== 1) continue;
    let resource = {};
    const scopes = [];
    for (const [f, v] of fields(resourceSpans)) {
      if (f === 1) resource = Object.fromEntries([...fields(v)].filter(([k]) => k === 1).map(([, kv]) => keyValue(kv)));
      if (f === 2) scopes.push(v);
    }
    for (const scope of scopes) {
      for (const [f, bytes] of fields(scope)) {
        if (f !== 2) continue;
        const s = { attributes: {}, resource };
        for (const [k, v] of fields(bytes)) {
          if (k === 1) s.traceId = v.toString('hex');
          if (k === 2) s.spanId = v.toString('hex');
          if (k === 4) s.parentSpanId = v.toString('hex');
          if (k === 5) s.name = v.toString('utf8');
          if (k === 6) s.kind = Number(v);
          if (k === 7) s.start = v.readBigUInt64LE(0);
          if (k === 8) s.end = v.readBigUInt64LE(0);
          if (k === 9) Object.assign(s.attributes, Object.fromEntries([keyValue(v)]));
          if (k === 15) {
            s.status = {};
            for (const [sf, sv] of fields(v)) {
              if (sf === 2) s.status.message = sv.toString('utf8');
              if (sf === 3) s.status.code = Number(sv);
            }
          }
        }
        spans.push(span(s));
      }
    }
  }
  return spans;
}

/** An OTLP/HTTP receiver on a loopback port: every span posted to /v1/traces, in either encoding. */
async function startReceiver() {
  const spans = [];
  const contentTypes = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') return res.writeHead(404).end();
      const type = req.headers['content-type'];
      contentTypes.add(type);
      const body = Buffer.concat(chunks);
      if (type === 'application/json') {
        spans.push(...fromJson(body));
        return res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      }
      spans.push(...fromProtobuf(body));
      return res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { spans, contentTypes, server, url: `http://127.0.0.1:${server.address().port}` };
}

/** A caller's span: a traceparent, sampled unless `sampled` is false. */
function caller({ sampled = true } = {}) {
  const traceId = crypto.randomBytes(16).toString('hex');
  const spanId = crypto.randomBytes(8).toString('hex');
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-${sampled ? '01' : '00'}` };
}

const ms = (nanoseconds) => Number(nanoseconds) / 1e6;

/** Within a microsecond: the spans' times are nanoseconds, the core's figures doubles of milliseconds. */
function sameMs(actual, expected, what) {
  assert.ok(Math.abs(actual - expected) < 1e-3, `${what}: ${actual} ms, the core said ${expected} ms`);
}

describe('a service traced in this process (OTLP/JSON)', () => {
  const env = {};
  let receiver;
  let tracing;
  let model;
  let server;
  let base;
  const predictions = [];
  const lines = [];

  before(async () => {
    receiver = await startReceiver();
    Object.assign(env, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/v1/traces`, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' });
    Object.assign(process.env, env); // the exporter reads its endpoint itself
    const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
    tracing = require('../../js/server/tracing').startTracing(readTracing(process.env), logger);
    model = await choripan.load(defaultModelPath);
    model.on('prediction', (timings) => predictions.push(timings));
    server = http.createServer(createApp({ model, logger, tracer: tracing.tracer }));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${server.address().port}`;
  });

  after(async () => {
    server.close();
    await tracing.shutdown();
    receiver.server.close();
    await model.dispose();
  });

  /** The spans of a trace once `count` have arrived: a span ends when its answer is written, not read. */
  async function spansOf(traceId, count) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      await tracing.forceFlush();
      const found = receiver.spans.filter((s) => s.traceId === traceId);
      if (found.length >= count || Date.now() > deadline) return found;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** One request; its status, body and the 'prediction' events the model emitted for it. */
  async function request(route, init = {}) {
    const before = predictions.length;
    const response = await fetch(`${base}${route}`, init);
    const body = await response.json();
    return { status: response.status, body, predictions: predictions.slice(before) };
  }

  test('a traceparent continues the caller\'s trace: the server span is its child, named and described as HTTP servers\' are', async () => {
    const { traceId, spanId, traceparent } = caller();
    const answer = await request('/predict', { method: 'POST', body: photo('chelsea.png'),
      headers: { 'content-type': 'image/png', traceparent, 'x-request-id': 'traced-1', 'user-agent': 'tracing-test' } });
    assert.equal(answer.status, 200);
    assert.ok(CAT_LABELS.includes(answer.body.label));
    const spans = await spansOf(traceId, 3);
    const [request_] = spans.filter((s) => s.kind === SERVER);
    assert.ok(request_, JSON.stringify(spans.map((s) => s.name)));
    assert.equal(request_.parentSpanId, spanId);
    assert.equal(request_.name, 'POST /predict');
    assert.deepEqual(request_.status, { code: 0, message: '' });
    const port = Number(new URL(base).port);
    assert.deepEqual(request_.attributes, {
      'http.request.method': 'POST', 'url.path': '/predict', 'url.scheme': 'http', 'network.protocol.version': '1.1',
      'server.address': '127.0.0.1', 'server.port': port, 'client.address': '127.0.0.1', 'user_agent.original': 'tracing-test',
      'http.route': '/predict', 'http.response.status_code': 200, 'choripan.model.name': 'efficientnet-lite0',
      'choripan.model.version': '1', 'choripan.batch.size': answer.predictions[0].batchSize, 'choripan.request.id': 'traced-1',
    });
    assert.equal(request_.resource['service.name'], 'choripan');
    const line = lines.find((l) => l.id === 'traced-1');
    assert.equal(line.trace_id, traceId, 'the log line names the trace');
    assert.equal(line.span_id, request_.spanId);
  });

  test('under it, choripan.queue then choripan.forward, as long as the core\'s queueMs and forwardMs', async () => {
    const { traceId, traceparent } = caller();
    const answer = await request('/predict', { method: 'POST', body: CAT, headers: { 'content-type': 'image/jpeg', traceparent } });
    assert.equal(answer.status, 200);
    assert.equal(answer.predictions.length, 1);
    const [{ queueMs, forwardMs, batchSize }] = answer.predictions;
    const spans = await spansOf(traceId, 4);
    assert.equal(spans.length, 4, JSON.stringify(spans.map((s) => s.name)));
    const server_ = spans.find((s) => s.kind === SERVER);
    const queue = spans.find((s) => s.name === 'choripan.queue');
    const forward = spans.find((s) => s.name === 'choripan.forward');
    for (const child of [queue, forward]) {
      assert.equal(child.parentSpanId, server_.spanId);
      assert.equal(child.kind, INTERNAL);
      assert.deepEqual(child.attributes, { 'choripan.model.name': 'efficientnet-lite0', 'choripan.model.version': '1', 'choripan.batch.size': batchSize });
    }
    sameMs(ms(queue.end - queue.start), queueMs, 'choripan.queue');
    sameMs(ms(forward.end - forward.start), forwardMs, 'choripan.forward');
    assert.equal(queue.end, forward.start, 'the forward pass starts as the queue ends');
    assert.ok(server_.start <= queue.start && forward.end <= server_.end, 'both within the request');
  });

  test('choripan.decode: a JPEG the core decoded, timed by the core within the queue; a PNG decoded by sharp, before it', async () => {
    for (const [body, type, decoder] of [[CAT, 'image/jpeg', 'core-jpeg'], [photo('chelsea.png'), 'image/png', 'sharp']]) {
      const { traceId, traceparent } = caller();
      const answer = await request('/predict', { method: 'POST', body, headers: { 'content-type': type, traceparent } });
      assert.equal(answer.status, 200);
      const [timing] = answer.predictions;
      assert.equal(timing.decoder, decoder);
      assert.ok(timing.decodeMs > 0, `${decoder}: ${timing.decodeMs} ms`);
      const spans = await spansOf(traceId, 4);
      const server_ = spans.find((s) => s.kind === SERVER);
      const decode = spans.find((s) => s.name === 'choripan.decode');
      const queue = spans.find((s) => s.name === 'choripan.queue');
      assert.ok(decode, `${decoder}: ${JSON.stringify(spans.map((s) => s.name))}`);
      assert.equal(decode.parentSpanId, server_.spanId);
      assert.equal(decode.kind, INTERNAL);
      assert.deepEqual(decode.attributes, { 'choripan.model.name': 'efficientnet-lite0', 'choripan.model.version': '1', 'choripan.decoder': decoder });
      assert.ok(decode.end > decode.start, decoder);
      sameMs(ms(decode.end - decode.start), timing.decodeMs, `${decoder}'s choripan.decode`);
      assert.ok(server_.start <= decode.start && decode.end <= server_.end, `${decoder}: within the request`);
      if (decoder === 'core-jpeg') {
        assert.ok(timing.decodeStartMs >= 0 && timing.decodeStartMs + timing.decodeMs <= timing.queueMs, JSON.stringify(timing));
        assert.ok(queue.start <= decode.start && decode.end <= queue.end, 'the core decodes while the request waits for its forward pass');
      } else {
        assert.ok(timing.decodeStartMs <= -timing.decodeMs, JSON.stringify(timing));
        assert.ok(decode.end <= queue.start, 'sharp decodes before the pixels are submitted');
      }
    }
  });

  test('a preprocessed tensor was decoded by no one: no choripan.decode', async () => {
    const { traceId, traceparent } = caller();
    const crop = model.metadata.preprocessing.crop;
    const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, crop, crop], datatype: 'FP32', data: new Array(3 * crop * crop).fill(0) }] });
    const answer = await request('/v2/models/efficientnet-lite0/infer', { method: 'POST', body, headers: { 'content-type': 'application/json', traceparent } });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.predictions[0].decoder, undefined);
    const spans = await spansOf(traceId, 3);
    assert.deepEqual(spans.map((s) => s.name).sort(), ['POST /v2/models/:name/infer', 'choripan.forward', 'choripan.queue']);
  });

  test('an inference request of two images: a queue and a forward span for each, as the core timed each', async () => {
    const { traceId, traceparent } = caller();
    const images = [photo('chelsea.png'), await sharp(photo('coffee.png')).jpeg().toBuffer()];
    const body = JSON.stringify({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: images.map((i) => i.toString('base64')) }] });
    const answer = await request('/v2/models/efficientnet-lite0/infer', { method: 'POST', body, headers: { 'content-type': 'application/json', traceparent } });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.predictions.length, 2);
    const spans = await spansOf(traceId, 7);
    const server_ = spans.find((s) => s.kind === SERVER);
    assert.equal(server_.name, 'POST /v2/models/:name/infer');
    assert.equal(server_.attributes['http.route'], '/v2/models/:name/infer');
    assert.equal(server_.attributes['choripan.batch.size'], Math.max(...answer.predictions.map((p) => p.batchSize)));
    const lengths = (name) => spans.filter((s) => s.name === name).map((s) => {
      assert.equal(s.parentSpanId, server_.spanId);
      return ms(s.end - s.start);
    }).sort((a, b) => a - b);
    const expected = (key) => answer.predictions.map((p) => p[key]).sort((a, b) => a - b);
    lengths('choripan.queue').forEach((length, i) => sameMs(length, expected('queueMs')[i], 'choripan.queue'));
    lengths('choripan.forward').forEach((length, i) => sameMs(length, expected('forwardMs')[i], 'choripan.forward'));
    lengths('choripan.decode').forEach((length, i) => sameMs(length, expected('decodeMs')[i], 'choripan.decode'));
    assert.equal(lengths('choripan.queue').length, 2);
    assert.deepEqual(spans.filter((s) => s.name === 'choripan.decode').map((s) => s.attributes['choripan.decoder']).sort(), ['core-jpeg', 'sharp']);
  });

  test('without a traceparent, a request starts a trace of its own', async () => {
    const answer = await request('/predict', { method: 'POST', body: photo('coffee.png'), headers: { 'content-type': 'image/png', 'x-request-id': 'untraced' } });
    assert.equal(answer.status, 200);
    const traceId = lines.find((l) => l.id === 'untraced').trace_id;
    const spans = await spansOf(traceId, 4);
    const server_ = spans.find((s) => s.kind === SERVER);
    assert.equal(server_.parentSpanId, '');
    assert.equal(spans.filter((s) => s.parentSpanId === server_.spanId).length, 3);
  });

  test('behind a trusted proxy, client.address is the client X-Forwarded-For names, network.peer.address the proxy', async () => {
    const proxied = http.createServer(createApp({ model, logger: pino({ level: 'silent' }), tracer: tracing.tracer, trustProxy: 'loopback' }));
    await new Promise((resolve) => proxied.listen(0, '127.0.0.1', resolve));
    try {
      const spanOf = async (headers) => {
        const { traceId, traceparent } = caller();
        const response = await fetch(`http://127.0.0.1:${proxied.address().port}/v2`, { headers: { traceparent, ...headers } });
        assert.equal(response.status, 200);
        await response.arrayBuffer();
        const [served] = await spansOf(traceId, 1);
        return served.attributes;
      };
      const behind = await spanOf({ 'x-forwarded-for': '198.51.100.7, 203.0.113.9' });
      assert.equal(behind['client.address'], '203.0.113.9');
      assert.equal(behind['network.peer.address'], '127.0.0.1');
      const direct = await spanOf({});
      assert.equal(direct['client.address'], '127.0.0.1');
      assert.equal(direct['network.peer.address'], undefined, 'no proxy between');
    } finally {
      proxied.close();
    }
  });

  test('a caller that does not sample: answered, logged with its trace id, and no span is sent', async () => {
    const { traceId, traceparent } = caller({ sampled: false });
    const answer = await request('/predict', { method: 'POST', body: CAT, headers: { 'content-type': 'image/jpeg', traceparent, 'x-request-id': 'unsampled' } });
    assert.equal(answer.status, 200);
    assert.equal(lines.find((l) => l.id === 'unsampled').trace_id, traceId);
    await tracing.forceFlush();
    assert.deepEqual(receiver.spans.filter((s) => s.traceId === traceId), []);
  });

  test('the probes and the metrics scrape are not traced: logged, but no span', async () => {
    const { traceId, traceparent } = caller();
    for (const route of ['/healthz', '/readyz', '/v2/health/live', '/v2/health/ready']) {
      assert.equal((await request(route, { headers: { traceparent } })).status, 200, route);
    }
    const scrape = await fetch(`${base}/metrics`, { headers: { traceparent } });
    assert.equal(scrape.status, 200);
    await scrape.text();
    const probe = await request('/v2', { headers: { traceparent } }); // the protocol's server metadata is traced
    assert.equal(probe.status, 200);
    assert.deepEqual((await spansOf(traceId, 1)).map((s) => s.name), ['GET /v2']);
    assert.ok(lines.some((l) => l.path === '/readyz' && l.trace_id === undefined));
  });

  test('failures: a 4xx leaves the status unset and says its code; a 5xx is an error of its code; an unknown route has no route', async () => {
    const bad = caller();
    const decode = await request('/predict', { method: 'POST', body: Buffer.from('not an image'), headers: { 'content-type': 'image/jpeg', traceparent: bad.traceparent } });
    assert.equal(decode.status, 400);
    const [refused] = await spansOf(bad.traceId, 1);
    assert.equal(refused.attributes['http.response.status_code'], 400);
    assert.equal(refused.attributes['choripan.error.code'], 'E_DECODE');
    assert.equal(refused.attributes['error.type'], undefined);
    assert.equal(refused.status.code, 0);

    const late = caller();
    const timeout = await request('/predict', { method: 'POST', body: CAT,
      headers: { 'content-type': 'image/jpeg', traceparent: late.traceparent, 'x-request-timeout-ms': '1' } });
    assert.equal(timeout.status, 504);
    const [expired] = (await spansOf(late.traceId, 1)).filter((s) => s.kind === SERVER);
    assert.equal(expired.attributes['http.response.status_code'], 504);
    assert.equal(expired.attributes['error.type'], 'E_TIMEOUT');
    assert.deepEqual(expired.status, { code: ERROR, message: 'E_TIMEOUT' });

    const lost = caller();
    const missing = await request('/nowhere', { headers: { traceparent: lost.traceparent } });
    assert.equal(missing.status, 404);
    const [unrouted] = await spansOf(lost.traceId, 1);
    assert.equal(unrouted.name, 'GET');
    assert.equal(unrouted.attributes['http.route'], undefined);
  });
});

describe('choripan serve with OTEL_* set (OTLP/protobuf, the default)', () => {
  test('the spans of a request with a traceparent arrive with the right parents, as long as its metrics say; sent as it stops', { timeout: 120_000 }, async () => {
    const receiver = await startReceiver();
    const child = spawn(process.execPath, [path.join(root, 'bin', 'choripan.js'), 'serve', '--port', '0'], {
      cwd: root,
      env: { ...withoutOtel(process.env), OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'vision' },
    });
    try {
      const port = await require('./helpers').listening(child);
      const exited = new Promise((resolve) => child.on('exit', (status) => resolve(status)));
      const { traceId, spanId, traceparent } = caller();
      const response = await fetch(`http://127.0.0.1:${port}/predict`, { method: 'POST', body: photo('chelsea.png'),
        headers: { 'content-type': 'image/png', traceparent } });
      assert.equal(response.status, 200);
      // The model's one answer, as its 'prediction' event gave it to the metrics.
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const sum = (name) => Number(metrics.match(new RegExp(`^${name}_sum\\{model="efficientnet-lite0",version="1"\\} (\\S+)$`, 'm'))[1]) * 1000;
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.deepEqual([...receiver.contentTypes], ['application/x-protobuf']);
      const spans = receiver.spans.filter((s) => s.traceId === traceId);
      const server_ = spans.find((s) => s.kind === SERVER);
      assert.equal(server_.parentSpanId, spanId);
      assert.equal(server_.name, 'POST /predict');
      assert.equal(server_.resource['service.name'], 'vision', 'OTEL_SERVICE_NAME is the SDK\'s to read');
      const queue = spans.find((s) => s.name === 'choripan.queue');
      const forward = spans.find((s) => s.name === 'choripan.forward');
      assert.equal(queue.parentSpanId, server_.spanId);
      assert.equal(forward.parentSpanId, server_.spanId);
      sameMs(ms(queue.end - queue.start), sum('choripan_queue_wait_duration_seconds'), 'choripan.queue');
      sameMs(ms(forward.end - forward.start), sum('choripan_inference_duration_seconds'), 'choripan.forward');
    } finally {
      child.kill('SIGKILL');
      receiver.server.close();
    }
  });

  test('a collector that takes connections and never answers: requests are answered, and a stop waits 2 s for it, no more', { timeout: 120_000 }, async () => {
    const held = [];
    const collector = net.createServer((socket) => held.push(socket));
    await new Promise((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const child = spawn(process.execPath, [path.join(root, 'bin', 'choripan.js'), 'serve', '--port', '0'], {
      cwd: root, env: { ...withoutOtel(process.env), OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.address().port}`, OTEL_BSP_SCHEDULE_DELAY: '50' },
    });
    try {
      let log = '';
      child.stdout.on('data', (chunk) => (log += chunk));
      const port = await require('./helpers').listening(child);
      for (let i = 0; i < 3; i++) {
        const response = await fetch(`http://127.0.0.1:${port}/predict`, { method: 'POST', body: CAT, headers: { 'content-type': 'image/jpeg' } });
        assert.equal(response.status, 200);
        await response.arrayBuffer();
      }
      while (held.length === 0) await new Promise((resolve) => setTimeout(resolve, 20)); // an export is stuck
      const exited = new Promise((resolve) => child.on('exit', (status) => resolve(status)));
      const stopping = performance.now();
      child.kill('SIGTERM');
      assert.equal(await exited, 0, log);
      const took = performance.now() - stopping;
      assert.ok(took >= 1_900 && took < 6_000, `stopped in ${took} ms`);
      assert.match(log, /"msg":"tracing: the last spans were not sent"/);
      assert.doesNotMatch(log, /requests still running/);
    } finally {
      child.kill('SIGKILL');
      collector.close();
      held.forEach((socket) => socket.destroy());
    }
  });

  test('a value it cannot honour stops start-up with one line naming the variable (exit status 2)', () => {
    const run = spawnSync(process.execPath, [path.join(root, 'bin', 'choripan.js'), 'serve'], {
      cwd: root, encoding: 'utf8', env: { ...withoutOtel(process.env), OTEL_TRACES_EXPORTER: 'zipkin' },
    });
    assert.equal(run.status, 2);
    assert.equal(run.stderr, "choripan: OTEL_TRACES_EXPORTER: expected otlp or none, got 'zipkin' (this service sends OTLP only)\n");
  });
});

/** The environment without OpenTelemetry's variables, whatever the one running the tests sets. */
function withoutOtel(env) {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('OTEL_')));
}

test('with no OTEL_* set, the server loads none of OpenTelemetry: no SDK, no exporter, no tracing of its own', { timeout: 120_000 }, () => {
  const script = `const { serve } = require('./js/server/main');
    const { readConfig } = require('./js/server/config');
    serve(readConfig({ ...process.env, PORT: '0' })).then(() => {
      const loaded = Object.keys(require.cache);
      console.error(JSON.stringify({
        packages: [...new Set(loaded.map((f) => f.match(/node_modules\\/(@opentelemetry\\/[^/]+)/)?.[1]).filter(Boolean))],
        tracing: loaded.filter((f) => /js\\/server\\/trac/.test(f)),
      }));
      process.exit(0);
    });`;
  const run = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', env: withoutOtel(process.env) });
  assert.equal(run.status, 0, run.stderr);
  const { packages, tracing } = JSON.parse(run.stderr.trim().split('\n').at(-1));
  // prom-client's CPU metric reads @opentelemetry/api for its exemplars: the API alone, a no-op.
  assert.deepEqual(packages, ['@opentelemetry/api']);
  assert.deepEqual(tracing, []);
});

describe('readTracing: OpenTelemetry\'s variables as its specification means them', () => {
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };

  test('nothing set, or nothing that asks for an exporter: no tracing', () => {
    assert.equal(readTracing({}), null);
    assert.equal(readTracing({ OTEL_SERVICE_NAME: 'vision', OTEL_TRACES_SAMPLER: 'always_on' }), null);
    assert.equal(readTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_TRACES_EXPORTER: '' }), null, 'empty is unset');
    assert.equal(readConfig({}).tracing, null);
  });

  test('an endpoint, or OTEL_TRACES_EXPORTER=otlp (to the default endpoint), trace over http/protobuf unless the protocol says json', () => {
    assert.deepEqual(readTracing(endpoint), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://collector/v1/traces' }), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ OTEL_TRACES_EXPORTER: 'OTLP' }), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }), { protocol: 'http/json' });
    assert.deepEqual(readTracing({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' }),
      { protocol: 'http/json' }, 'the traces\' own variable wins');
    assert.deepEqual(readConfig(endpoint).tracing, { protocol: 'http/protobuf' });
  });

  test('OTEL_SDK_DISABLED=true (any case) and OTEL_TRACES_EXPORTER=none turn it off, whatever else is set', () => {
    assert.equal(readTracing({ ...endpoint, OTEL_SDK_DISABLED: 'TRUE' }), null);
    assert.equal(readTracing({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' }), null);
    assert.deepEqual(readTracing({ ...endpoint, OTEL_SDK_DISABLED: 'false' }), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ ...endpoint, OTEL_SDK_DISABLED: 'yes' }), { protocol: 'http/protobuf' }, 'only "true" is true');
  });

  test('another exporter, gRPC, or an endpoint that is no http URL: a ConfigError naming the variable', () => {
    const refused = (env, variable, message) => assert.throws(() => readTracing(env), (error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.variable, variable);
      assert.match(error.message, message);
      return true;
    });
    refused({ OTEL_TRACES_EXPORTER: 'otlp,console' }, 'OTEL_TRACES_EXPORTER', /expected otlp or none, got 'console'/);
    refused({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, 'OTEL_EXPORTER_OTLP_PROTOCOL', /expected http\/protobuf or http\/json, got 'grpc'/);
    refused({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, 'OTEL_EXPORTER_OTLP_ENDPOINT', /expected an http:\/\/ or https:\/\/ URL/);
  });
});
