'use strict';
// The predict lane (js/server/predict.js): POST /predict's raw image bodies answered without the app's
// router where nothing stands in front of the route. Each request goes to the same app served twice,
// by Express alone and as the server serves it (lane first): the answers, log lines and metrics must be
// the same, and the lane must have taken exactly the requests it is for.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const http = require('node:http');
const crypto = require('node:crypto');
const { Writable } = require('node:stream');
const zlib = require('node:zlib');
const pino = require('pino');
const { trace } = require('@opentelemetry/api');
const choripan = require('choripan');
const { createApp, serverHandler } = require('choripan/server');
const { photo, defaultPackagePath } = require('./helpers');

const MAX_BODY = 256 * 1024;

/** The log's lines, parsed. */
function collectingLogger() {
  const lines = [];
  const stream = new Writable({
    write(chunk, encoding, done) {
      lines.push(...chunk.toString().trim().split('\n').map((line) => JSON.parse(line)));
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

/** One request on a connection of its own, as its bytes go out (no client rewrites them). */
function send(port, { method = 'POST', path = '/predict', headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => resolve({ response, text: Buffer.concat(chunks).toString() }));
    });
    request.on('error', reject);
    request.end(body);
  });
}

/** What must be the same, whichever way a request was answered. */
function comparable({ response, text }, sentId) {
  const body = JSON.parse(text);
  delete body.elapsedMs;
  const { headers } = response;
  return {
    status: response.statusCode,
    body,
    contentType: headers['content-type'],
    contentLength: Number(headers['content-length']) - (text.match(/"elapsedMs":[\d.]+/)?.[0].length ?? 0),
    retryAfter: headers['retry-after'],
    connection: headers.connection,
    requestId: sentId ? headers['x-request-id'] === sentId : /^[\w.:-]{1,128}$/.test(headers['x-request-id']),
  };
}

describe('the predict lane answers as the app does', () => {
  let model;
  let app;
  let lines;
  let express;
  let served;
  let taken = 0;

  before(async () => {
    model = await choripan.load(defaultPackagePath, { workers: 1 });
    ({ logger: app, lines } = collectingLogger());
    app = createApp({ model, logger: app, maxBodyBytes: MAX_BODY });
    const lane = app.locals.predictLane;
    assert.equal(typeof lane, 'function', 'nothing in front of the route: the app has a lane');
    app.locals.predictLane = (req, res) => {
      const took = lane(req, res);
      if (took) taken++;
      return took;
    };
    express = http.createServer(app).listen(0, '127.0.0.1');
    served = http.createServer(serverHandler(app)).listen(0, '127.0.0.1');
    await Promise.all([express, served].map((server) => new Promise((resolve) => server.once('listening', resolve))));
  });

  after(async () => {
    express.close();
    served.close();
    await model.dispose();
  });

  const jpeg = () => photo('rocket.jpg');
  const requests = [
    ['a JPEG', true, { headers: { 'content-type': 'image/jpeg' }, body: jpeg() }],
    ['a PNG as application/octet-stream, with a request id', true, { headers: { 'content-type': 'application/octet-stream', 'x-request-id': 'lane-1' }, body: photo('chelsea.png') }],
    ['random bytes', true, { headers: { 'content-type': 'image/jpeg' }, body: crypto.randomBytes(4096) }],
    ['an empty body', true, { headers: { 'content-type': 'image/png', 'content-length': '0' }, body: '' }],
    // Declared, never sent: the server answers on the headers, and closes.
    ['a body declared over the limit', true, { headers: { 'content-type': 'image/jpeg', 'content-length': String(MAX_BODY + 1) }, body: null }],
    ['a chunked body over the limit', true, { headers: { 'content-type': 'image/jpeg', 'transfer-encoding': 'chunked' }, body: crypto.randomBytes(MAX_BODY + 1) }],
    ['a bad X-Request-Timeout-Ms', true, { headers: { 'content-type': 'image/jpeg', 'x-request-timeout-ms': 'soon' }, body: jpeg() }],
    ['a deadline of 1 ms', true, { headers: { 'content-type': 'image/jpeg', 'x-request-timeout-ms': '1' }, body: jpeg() }],
    ['?model= (the router)', false, { path: '/predict?model=nope', headers: { 'content-type': 'image/jpeg' }, body: jpeg() }],
    ['a gzip body (the router)', false, { headers: { 'content-type': 'image/jpeg', 'content-encoding': 'gzip' }, body: zlib.gzipSync(jpeg()) }],
    ['text/plain (the router)', false, { headers: { 'content-type': 'text/plain' }, body: 'a cat' }],
    ['a multipart body (the router)', false, { headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x\r\nContent-Disposition: form-data; name="other"\r\n\r\n1\r\n--x--\r\n' }],
  ];

  for (const [what, laned, request] of requests) {
    test(what, async () => {
      const sentId = request.headers['x-request-id'];
      const before = { taken, lines: lines.length };
      const viaExpress = comparable(await send(express.address().port, request), sentId);
      assert.equal(taken, before.taken, 'Express alone: never the lane');
      const viaServer = comparable(await send(served.address().port, request), sentId);
      assert.equal(taken - before.taken, laned ? 1 : 0, laned ? 'taken by the lane' : 'left to the app');
      assert.deepEqual(viaServer, viaExpress);
      assert.ok(viaServer.requestId, 'the request id, echoed or made');
      await new Promise((resolve) => setImmediate(resolve));
      // All but what differs between two answers: the time, the id made for each, the process.
      const [a, b] = lines.slice(before.lines).filter((line) => line.status !== undefined).map((line) => {
        const same = { ...line, msg: line.msg.replace(/ in [\d.]+ ms$/, ''), id: sentId ? line.id === sentId : typeof line.id };
        for (const field of ['ms', 'time', 'pid', 'hostname']) delete same[field];
        return same;
      });
      assert.deepEqual(b, a, 'the same log line');
    });
  }

  test('after a body over the limit, its connection carries the next request', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const port = served.address().port;
    const ask = (headers, body) => new Promise((resolve, reject) => {
      const request = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/predict', headers, agent }, (response) => {
        response.resume();
        response.on('end', () => resolve({ status: response.statusCode, socket: request.socket }));
      });
      request.on('error', reject);
      request.end(body);
    });
    try {
      const before = taken;
      const refused = await ask({ 'content-type': 'image/jpeg', 'transfer-encoding': 'chunked' }, crypto.randomBytes(2 * MAX_BODY));
      const answered = await ask({ 'content-type': 'image/jpeg' }, jpeg());
      assert.deepEqual([refused.status, answered.status], [413, 200]);
      assert.equal(answered.socket, refused.socket, 'one connection');
      assert.equal(taken - before, 2);
    } finally {
      agent.destroy();
    }
  });

  test('the metrics count the lane\'s requests as the route\'s', async () => {
    const text = await (await fetch(`http://127.0.0.1:${served.address().port}/metrics`)).text();
    const count = (status, route = '/predict') => Number(new RegExp(`^choripan_http_requests_total\\{route="${route}",method="POST",status="${status}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    // Each request twice, once each way.
    assert.deepEqual([200, 504, 400, 413, 415].map((status) => count(status)), [
      2 * 3 + 1, // the JPEG, the PNG, the gzip body; and the request after a refused body on one connection
      2, // the 1 ms deadline
      2 * 5, // random bytes, the empty body, the bad timeout, ?model=nope, the multipart body without an image
      2 + 1, // the chunked body over the limit; and the one before a request on the same connection
      2, // text/plain
    ]);
    assert.equal(count(413, 'unmatched'), 2, 'refused on its headers: no route\'s');
  });

  test('while the server drains, the app answers, and closes each connection', async () => {
    app.locals.draining = true;
    try {
      const before = taken;
      const { response } = await send(served.address().port, { headers: { 'content-type': 'image/jpeg' }, body: jpeg() });
      assert.equal(response.statusCode, 200);
      assert.equal(response.headers.connection, 'close');
      assert.equal(taken, before);
    } finally {
      app.locals.draining = false;
    }
  });
});

test('with API keys, CORS origins, a rate limit, a trusted proxy or a tracer, the app has no lane', async () => {
  const model = await choripan.load(defaultPackagePath, { workers: 1, warmup: false });
  const logger = pino({ level: 'silent' });
  try {
    assert.equal(typeof createApp({ model, logger }).locals.predictLane, 'function');
    for (const options of [{ apiKeys: [{ key: 'k'.repeat(32), scope: 'infer' }] }, { corsOrigins: 'https://app.example.com' },
      { rateLimit: '5:10' }, { trustProxy: 'loopback' }, { tracer: trace.getTracer('choripan-test') }]) {
      assert.equal(createApp({ model, logger, ...options }).locals.predictLane, null, JSON.stringify(Object.keys(options)));
    }
  } finally {
    await model.dispose();
  }
});
