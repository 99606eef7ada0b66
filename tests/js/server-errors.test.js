'use strict';
// How the service refuses: every failure a JSON answer with its code and status, after which it keeps
// serving; an unknown route; what Node's own HTTP parser refuses (in the server process); and no mix of
// bad inputs, OIP's included, hurts it.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const http = require('node:http');
const crypto = require('node:crypto');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { photo, defaultModelPath, defaultPackagePath, CAT_LABELS, listen, startServer, stopServers } = require('./helpers');

after(stopServers); // a failed test must not leave its server running

describe('refused requests, each answered with its code', () => {
  let model;
  let server;
  let base;

  before(async () => {
    model = await choripan.load(defaultModelPath);
    ({ server, base } = await listen(createApp({ model, logger: pino({ level: 'silent' }) })));
  });

  after(async () => {
    server.close();
    await model.dispose();
  });

  async function post(body, contentType) {
    const headers = contentType ? { 'content-type': contentType } : {};
    const response = await fetch(`${base}/predict`, { method: 'POST', body, headers });
    return { status: response.status, body: await response.json() };
  }

  const failures = [
    ['an empty image body', () => post(Buffer.alloc(0), 'image/png'), 400, 'E_INVALID_ARGUMENT'],
    ['random bytes as image/jpeg', () => post(crypto.randomBytes(2048), 'image/jpeg'), 400, 'E_DECODE'],
    ['text as image/png', () => post('hello', 'image/png'), 400, 'E_DECODE'],
    ['random bytes as application/octet-stream', () => post(crypto.randomBytes(2048), 'application/octet-stream'), 400, 'E_DECODE'],
    ['application/json', () => post('{"a":1}', 'application/json'), 415, 'E_UNSUPPORTED_FORMAT'],
    ['no content type', () => post(photo('coffee.png')), 415, 'E_UNSUPPORTED_FORMAT'],
    ['a body over 10 MB', () => post(crypto.randomBytes(10 * 1024 * 1024 + 1), 'image/jpeg'), 413, 'E_TOO_LARGE'],
    ['multipart without an image field', async () => {
      const form = new FormData();
      form.append('photo', new Blob([photo('coffee.png')]), 'coffee.png');
      const response = await fetch(`${base}/predict`, { method: 'POST', body: form });
      return { status: response.status, body: await response.json() };
    }, 400, 'E_INVALID_ARGUMENT'],
    ['multipart without a boundary', () => post('--x\r\n', 'multipart/form-data'), 400, 'E_INVALID_ARGUMENT'],
    ['a truncated multipart body', () => post('--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nabc',
      'multipart/form-data; boundary=b'), 400, 'E_INVALID_ARGUMENT'],
    ['an unknown Content-Encoding', async () => {
      const response = await fetch(`${base}/predict`, { method: 'POST', body: photo('coffee.png'),
        headers: { 'content-type': 'image/png', 'content-encoding': 'foo' } });
      return { status: response.status, body: await response.json() };
    }, 415, 'E_UNSUPPORTED_FORMAT'],
    ['a gzip Content-Encoding on a multipart body', async () => {
      const form = new FormData();
      form.append('image', new Blob([photo('coffee.png')]), 'coffee.png');
      const request = new Request(`${base}/predict`, { method: 'POST', body: form });
      const response = await fetch(`${base}/predict`, { method: 'POST', body: await request.arrayBuffer(),
        headers: { 'content-type': request.headers.get('content-type'), 'content-encoding': 'gzip' } });
      return { status: response.status, body: await response.json() };
    }, 415, 'E_UNSUPPORTED_FORMAT'],
    ['multipart over 10 MB', async () => {
      const form = new FormData();
      form.append('image', new Blob([crypto.randomBytes(10 * 1024 * 1024 + 1)]), 'big.jpg');
      const response = await fetch(`${base}/predict`, { method: 'POST', body: form });
      return { status: response.status, body: await response.json() };
    }, 413, 'E_TOO_LARGE'],
  ];
  for (const [name, send, status, code] of failures) {
    test(`${name} → ${status} ${code}, and the server keeps serving`, async () => {
      const answer = await send();
      assert.equal(answer.status, status);
      assert.equal(answer.body.error.code, code);
      assert.equal(typeof answer.body.error.message, 'string');
      const next = await post(photo('coffee.png'), 'image/png');
      assert.equal(next.status, 200);
    });
  }

  test('a Content-Type that is refused: the message says which are accepted', async () => {
    const { status, body } = await post('hello', 'text/plain');
    assert.equal(status, 415);
    assert.match(body.error.message, /^Content-Type text\/plain is not accepted: send image bytes with Content-Type image\/\* or application\/octet-stream, or multipart/);
  });

  test('unknown routes → 404 JSON', async () => {
    const response = await fetch(`${base}/nothing`);
    assert.equal(response.status, 404);
    assert.equal((await response.json()).error.code, 'E_NOT_FOUND');
  });
});

test("Node's own parse errors are answered in JSON", { timeout: 60_000 }, async () => {
const net = require('node:net');
const server = startServer();
const port = await server.listening;
const raw = (text) => new Promise((resolve, reject) => {
  const socket = net.connect(port, '127.0.0.1', () => socket.end(text));
  let answer = '';
  socket.on('data', (chunk) => { answer += chunk; });
  socket.on('close', () => resolve(answer));
  socket.on('error', reject);
});
for (const request of [
  'NOT A REQUEST LINE\r\n\r\n',
  'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
]) {
  const answer = await raw(request);
  assert.match(answer, /^HTTP\/1\.1 400 /, request);
  assert.equal(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).error.code, 'E_INVALID_ARGUMENT');
}
const hugeHeader = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100_000)}\r\n\r\n`);
assert.match(hugeHeader, /^HTTP\/1\.1 431 /);
assert.equal(JSON.parse(hugeHeader.slice(hugeHeader.indexOf('\r\n\r\n') + 4)).error.code, 'E_TOO_LARGE');
server.child.kill('SIGTERM');
assert.deepEqual(await server.exited, { status: 0, signal: null });
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
