'use strict';
// Cross-origin requests: who corsOrigins (CHORIPAN_CORS_ORIGINS) lets call, the headers on preflights,
// answers and refusals, a list that is not origins refused, and a page of another origin in Chromium.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { root, photo, defaultPackagePath, CAT_LABELS, listening, listen, postImage: post, chromiumPath, launchChromium } = require('./helpers');

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

describe('the server process', () => {
  const main = path.join(root, 'js', 'server', 'main.js');

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
});
