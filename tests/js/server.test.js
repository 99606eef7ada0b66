'use strict';
// The Express service over real HTTP on ephemeral loopback ports.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const http = require('node:http');
const crypto = require('node:crypto');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { photo, defaultModelPath, CAT_LABELS } = require('./helpers');

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

describe('POST /predict and GET /predict', () => {
  let model;
  let server;
  let base;
  let images;
  let imagesPort;
  const lines = [];

  before(async () => {
    // A second local server plays the remote host that GET /predict?url= fetches from.
    images = http.createServer((req, res) => {
      if (req.url === '/cat.png') return res.end(photo('chelsea.png'));
      if (req.url === '/redirect') return res.writeHead(302, { location: '/cat.png' }).end();
      if (req.url === '/elsewhere') return res.writeHead(302, { location: 'http://127.0.0.2:1/x.png' }).end();
      if (req.url === '/to-file') return res.writeHead(302, { location: 'file:///etc/passwd' }).end();
      if (req.url === '/huge') return res.end(Buffer.alloc(11 * 1024 * 1024));
      res.writeHead(404).end();
    });
    imagesPort = await listen(images);
    model = await choripan.load(defaultModelPath);
    const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
    server = http.createServer(createApp({ model, logger, urlAllowlist: `127.0.0.1:${imagesPort}` }));
    base = `http://127.0.0.1:${await listen(server)}`;
  });

  after(async () => {
    server.close();
    images.close();
    await model.dispose();
  });

  async function post(body, contentType) {
    const headers = contentType ? { 'content-type': contentType } : {};
    const response = await fetch(`${base}/predict`, { method: 'POST', body, headers });
    return { status: response.status, body: await response.json() };
  }

  test('a raw image/png body → the cat, with model and elapsedMs', async () => {
    const { status, body } = await post(photo('chelsea.png'), 'image/png');
    assert.equal(status, 200);
    assert.ok(CAT_LABELS.includes(body.label));
    assert.equal(body.top.length, 5);
    assert.equal(body.model, 'efficientnet-lite0');
    assert.ok(body.elapsedMs > 0);
    const line = lines.find((l) => l.label === body.label);
    assert.ok(line, 'one log line with the label');
    assert.equal(line.status, 200);
    assert.ok(line.ms > 0);
  });

  test('a raw application/octet-stream body: the format is read from the bytes → the cat, the espresso', async () => {
    const jpeg = await require('sharp')(photo('chelsea.png')).jpeg().toBuffer();
    const cat = await post(jpeg, 'application/octet-stream');
    assert.equal(cat.status, 200, JSON.stringify(cat.body));
    assert.ok(CAT_LABELS.includes(cat.body.label));
    const coffee = await post(photo('coffee.png'), 'application/octet-stream');
    assert.equal(coffee.body.label, 'espresso');
    const bitmap = await post(Buffer.concat([Buffer.from('BM'), crypto.randomBytes(200)]), 'application/octet-stream');
    assert.equal(bitmap.status, 415);
    assert.match(bitmap.body.error.message, /^BMP images are not supported/, 'refused for what the bytes are, not for their type');
  });

  test('a multipart field named image → the espresso', async () => {
    const form = new FormData();
    form.append('image', new Blob([photo('coffee.png')], { type: 'image/png' }), 'coffee.png');
    const response = await fetch(`${base}/predict`, { method: 'POST', body: form });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).label, 'espresso');
  });

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

  test('/readyz answers 200 while serving', async () => {
    const response = await fetch(`${base}/readyz`);
    assert.equal(response.status, 200);
    assert.equal((await response.json()).status, 'ready');
  });

  async function get(url) {
    const response = await fetch(`${base}/predict?url=${encodeURIComponent(url)}`);
    return { status: response.status, body: await response.json() };
  }

  test('GET ?url= on an allow-listed host fetches and classifies, following a redirect', async () => {
    for (const path of ['/cat.png', '/redirect']) {
      const { status, body } = await get(`http://127.0.0.1:${imagesPort}${path}`);
      assert.equal(status, 200);
      assert.ok(CAT_LABELS.includes(body.label));
    }
  });

  test('GET ?url= elsewhere → 403 E_URL_NOT_ALLOWED, redirects included', async () => {
    for (const url of ['http://example.com/cat.png', `http://localhost:${imagesPort}/cat.png`, `http://127.0.0.1:${imagesPort}/elsewhere`]) {
      const { status, body } = await get(url);
      assert.equal(status, 403, url);
      assert.equal(body.error.code, 'E_URL_NOT_ALLOWED');
    }
  });

  test('GET ?url= failures: missing url 400, not http 400, 404 upstream 502, huge 413, redirect to file: 502', async () => {
    const missing = await fetch(`${base}/predict`);
    assert.equal(missing.status, 400);
    assert.equal((await get('file:///etc/passwd')).status, 400);
    const notFound = await get(`http://127.0.0.1:${imagesPort}/missing.png`);
    assert.equal(notFound.status, 502);
    assert.equal(notFound.body.error.code, 'E_FETCH');
    const huge = await get(`http://127.0.0.1:${imagesPort}/huge`);
    assert.equal(huge.status, 413);
    const toFile = await get(`http://127.0.0.1:${imagesPort}/to-file`);
    assert.equal(toFile.status, 502);
    assert.equal(toFile.body.error.code, 'E_FETCH');
  });

  test('unknown routes → 404 JSON', async () => {
    const response = await fetch(`${base}/nothing`);
    assert.equal(response.status, 404);
    assert.equal((await response.json()).error.code, 'E_NOT_FOUND');
  });
});

describe('without CHORIPAN_URL_ALLOWLIST', () => {
  test('GET ?url= → 403', async () => {
    const model = await choripan.load(defaultModelPath, { warmup: false });
    const server = http.createServer(createApp({ model, logger: pino({ level: 'silent' }), urlAllowlist: undefined }));
    const port = await listen(server);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/predict?url=${encodeURIComponent(`http://127.0.0.1:${port}/x.png`)}`);
      assert.equal(response.status, 403);
      assert.equal((await response.json()).error.code, 'E_URL_NOT_ALLOWED');
    } finally {
      server.close();
      await model.dispose();
    }
  });
});
