'use strict';
// POST /predict and GET /predict?url=: what the service takes (raw bytes, multipart, a URL it fetches) and
// what it answers, on one model or several (?model=), and mounted in another Express app. Its refusals
// are server-errors.test.js's.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const crypto = require('node:crypto');
const express = require('express');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { photo, defaultModelPath, defaultPackagePath, CAT_LABELS, listen, postImage, twoModels } = require('./helpers');

describe('POST /predict and GET /predict', () => {
  let model;
  let server;
  let base;
  let images;
  let imagesPort;
  const lines = [];

  before(async () => {
    // A second local server plays the remote host that GET /predict?url= fetches from.
    ({ server: images } = await listen((req, res) => {
      if (req.url === '/cat.png') return res.end(photo('chelsea.png'));
      if (req.url === '/redirect') return res.writeHead(302, { location: '/cat.png' }).end();
      if (req.url === '/elsewhere') return res.writeHead(302, { location: 'http://127.0.0.2:1/x.png' }).end();
      if (req.url === '/to-file') return res.writeHead(302, { location: 'file:///etc/passwd' }).end();
      if (req.url === '/huge') return res.end(Buffer.alloc(11 * 1024 * 1024));
      res.writeHead(404).end();
    }));
    imagesPort = images.address().port;
    model = await choripan.load(defaultModelPath);
    const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
    ({ server, base } = await listen(createApp({ model, logger, urlAllowlist: `127.0.0.1:${imagesPort}` })));
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
});

describe('without CHORIPAN_URL_ALLOWLIST', () => {
  test('GET ?url= → 403', async () => {
    const model = await choripan.load(defaultModelPath, { warmup: false });
    const { server } = await listen(createApp({ model, logger: pino({ level: 'silent' }), urlAllowlist: undefined }));
    const { port } = server.address();
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

describe('one app, two models', () => {
  let models;
  let base;
  let server;

  before(async () => {
    models = await twoModels();
    ({ server, base } = await listen(createApp({ models, logger: pino({ level: 'silent' }) })));
  });
  after(async () => {
    server.close();
    await Promise.all([...models.values()].map((m) => m.dispose()));
  });

  test('?model= picks the model; the first is the default; an unknown one is 400', async () => {
    const [first, second, unknown] = await Promise.all(['', '?model=traced', '?model=nope']
      .map((query) => postImage(`${base}/predict${query}`, photo('chelsea.png'))));
    assert.equal((await first.json()).model, 'lite0');
    const traced = await second.json();
    assert.equal(traced.model, 'traced');
    assert.ok(CAT_LABELS.includes(traced.label));
    assert.equal(unknown.status, 400);
    assert.equal((await unknown.json()).error.code, 'E_INVALID_ARGUMENT');
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
      const answer = await postImage(`${base}/vision/predict`, photo('chelsea.png'));
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
