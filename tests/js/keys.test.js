'use strict';
// API keys and rate limits (createApp's apiKeys, metricsAuth, rateLimit, trustProxy; CHORIPAN_API_KEYS_FILE,
// CHORIPAN_METRICS_AUTH, CHORIPAN_RATE_LIMIT, CHORIPAN_TRUST_PROXY): who may call which route, what a
// refusal says in each route family's shape, that keys are compared in constant time and never written
// to the log, that buckets refill, stay apart and stay few, and who the client is behind a proxy (and
// over gRPC: its peer; the gRPC calls' limit itself is tests/python/test_grpc.py's). Real
// servers on ephemeral loopback ports, called with fetch.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { test, describe, before, after } = require('node:test');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { keyring, parseKeysFile } = require('../../js/server/api-keys');
const { createBuckets, clientOf, MAX_BUCKETS } = require('../../js/server/rate-limit');
const { accessOf } = require('../../js/server/paths');
const { peerAddress } = require('../../js/server/trust-proxy');
const { root, photo, defaultPackagePath, CAT_LABELS } = require('./helpers');

const INFER_KEY = 'infer-0123456789abcdef0123456789';
const ADMIN_KEY = 'admin-fedcba9876543210fedcba9876';
const OTHER_KEY = 'infer-another-key-of-some-length';
const KEYS = [{ key: INFER_KEY, scope: 'infer' }, { key: ADMIN_KEY, scope: 'admin' }, { key: OTHER_KEY, scope: 'infer' }];
const MODEL = 'efficientnet-lite0';
const main = path.join(root, 'js', 'server', 'main.js');

function listen(app, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const server = http.createServer(app).listen(0, host, () => resolve({ server, base: `http://${host}:${server.address().port}` }));
  });
}

const bearer = (key) => ({ authorization: `Bearer ${key}` });
const predict = (base, headers = {}) => fetch(`${base}/predict`, { method: 'POST', body: photo('chelsea.png'), headers: { 'content-type': 'image/png', ...headers } });
const infer = (base, headers = {}) => fetch(`${base}/v2/models/${MODEL}/infer`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [photo('chelsea.png').toString('base64')] }],
    outputs: [{ name: 'probabilities', parameters: { classification: 1 } }] }) });

/** A request from a given loopback address (127.0.0.2, …), so that one test can be several clients. */
function getFrom(localAddress, url, headers = {}) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { localAddress, headers, agent: false }, (response) => {
      response.resume();
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers }));
    });
    request.on('error', reject);
  });
}

/** The `RateLimit` field's r and t (draft-ietf-httpapi-ratelimit-headers), and the policy it names. */
function rateLimitOf(response) {
  const field = response.headers.get?.('ratelimit') ?? response.headers.ratelimit;
  const match = /^"([\w-]+)";r=(\d+);t=(\d+)$/.exec(field);
  assert.ok(match, `RateLimit: ${field}`);
  return { policy: match[1], remaining: Number(match[2]), reset: Number(match[3]) };
}

describe('keys: units', () => {
  test('every key is compared with crypto.timingSafeEqual on SHA-256 digests, whichever matches, and whether any does', (t) => {
    const keys = keyring(KEYS);
    const compare = t.mock.method(crypto, 'timingSafeEqual');
    for (const [header, expected] of [[`Bearer ${INFER_KEY}`, { id: 0, scope: 'infer' }], [`Bearer ${ADMIN_KEY}`, { id: 1, scope: 'admin' }],
      [`bearer ${OTHER_KEY}`, { id: 2, scope: 'infer' }], [`Bearer ${INFER_KEY.slice(0, -1)}`, null], ['Bearer x', null],
      [`Bearer ${'z'.repeat(5000)}`, null]]) {
      compare.mock.resetCalls();
      assert.deepEqual(keys.find(header), expected, header.slice(0, 40));
      assert.equal(compare.mock.callCount(), KEYS.length, 'no early exit: every key is compared');
      for (const call of compare.mock.calls) {
        assert.deepEqual(call.arguments.map((b) => b.length), [32, 32], 'digests of one length, whatever the key\'s');
      }
    }
    compare.mock.resetCalls();
    for (const header of [undefined, '', `Basic ${INFER_KEY}`, INFER_KEY, `Bearer ${INFER_KEY} extra`]) assert.equal(keys.find(header), null, header);
  });

  test('a malformed keys file is refused with the line it is on, never with a key in the message', () => {
    const secret = 'a-secret-key-nobody-must-read';
    for (const [text, message] of [
      [`${secret} superuser\n`, 'line 1: the scope is not one of infer, admin'],
      [`infer ${secret}\n`, 'line 1: the scope is not one of infer, admin'], // swapped: the key is where the scope goes
      [`# keys\n\n${secret} infer\n${secret} admin\n`, 'line 4: the same key as line 3'],
      [`${secret} infer\n   admin\n`, 'line 2: expected KEY SCOPE, got 1 field'],
      [`${secret} infer extra\n`, 'line 1: expected KEY SCOPE, got 3 fields'],
      ['short-key infer\n', 'line 1: a key of 9 characters; keys need at least 16 (openssl rand -hex 32 makes one)'],
      [`${secret}"; infer\n`, 'line 1: a key holds only letters, digits and - . _ ~ + / (= at its end), as a Bearer token does'],
      ['# only a comment\n', 'lists no key'],
    ]) {
      assert.throws(() => keyring(parseKeysFile(text)), (error) => {
        assert.equal(error.message, message);
        assert.ok(!error.message.includes(secret));
        return true;
      }, text);
    }
    assert.deepEqual(parseKeysFile(`# comment\n${INFER_KEY} infer\r\n  ${ADMIN_KEY}\tadmin  \n`),
      [{ key: INFER_KEY, scope: 'infer', line: 2 }, { key: ADMIN_KEY, scope: 'admin', line: 3 }]);
  });

  test('which paths need which key: probes and the page open, /metrics unless closed, the repository admin, the rest infer', () => {
    const open = { metricsOpen: true };
    for (const route of ['/healthz', '/readyz', '/metrics', '/', '/page.js', '/page.css', '/favicon.ico', '/v2/health/live', '/v2/health/ready']) {
      assert.equal(accessOf(route, open), 'open', route);
    }
    assert.equal(accessOf('/metrics', { metricsOpen: false }), 'infer');
    for (const route of ['/predict', '/openapi.json', '/v2', `/v2/models/${MODEL}`, `/v2/models/${MODEL}/infer`, '/nowhere', '/v2/repositoryx']) {
      assert.equal(accessOf(route, open), 'infer', route);
    }
    for (const route of ['/v2/repository', '/v2/repository/index', `/v2/repository/models/${MODEL}/load`]) assert.equal(accessOf(route, open), 'admin', route);
  });
});

describe('rate limits: units', () => {
  test('a bucket of BURST refills at RATE a second; RateLimit\'s r and t say where it stands', () => {
    let now = 0;
    const buckets = createBuckets({ rate: 2, burst: 3, now: () => now });
    assert.deepEqual(buckets.take('a'), { allowed: true, remaining: 2, resetSeconds: 1 });
    assert.deepEqual(buckets.take('a'), { allowed: true, remaining: 1, resetSeconds: 1 });
    assert.deepEqual(buckets.take('a'), { allowed: true, remaining: 0, resetSeconds: 2 }); // 1.5 s to fill
    assert.deepEqual(buckets.take('a'), { allowed: false, remaining: 0, resetSeconds: 1 }); // 0.5 s to one request, at least 1
    assert.deepEqual(buckets.take('b'), { allowed: true, remaining: 2, resetSeconds: 1 }, 'another client, another bucket');
    now += 500;
    assert.equal(buckets.take('a').allowed, true, 'half a second at 2/s refills one request');
    assert.equal(buckets.take('a').allowed, false);
    now += 60_000;
    assert.deepEqual(buckets.take('a'), { allowed: true, remaining: 2, resetSeconds: 1 }, 'never more than BURST');
  });

  test('buckets stay few: full ones expire as requests come, and past the cap the least recently used goes', () => {
    let now = 0;
    const buckets = createBuckets({ rate: 10, burst: 5, maxBuckets: 1000, now: () => now });
    for (let i = 0; i < 100_000; i++) buckets.take(`client ${i}`); // an attacker cycling addresses
    assert.equal(buckets.size, 1000);
    now += 1000; // every bucket is full again
    for (let i = 0; i < 600; i++) buckets.take('one client');
    assert.equal(buckets.size, 1, 'the full buckets expired, two at each request');
    assert.equal(MAX_BUCKETS, 10_000);
  });

  test('a client is its address; IPv4 in IPv6 is IPv4; an IPv6 host is its /64', () => {
    assert.equal(clientOf('127.0.0.1'), '127.0.0.1');
    assert.equal(clientOf('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(clientOf('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(clientOf('2001:db8:1:2::9'), '2001:db8:1:2::/64');
    assert.equal(clientOf('2001:0db8:0001:0002:ffff::1'), '2001:db8:1:2::/64');
    assert.equal(clientOf('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(clientOf('::1'), '0:0:0:0::/64');
    assert.equal(clientOf('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(clientOf('64:ff9b::1.2.3.4'), '64:ff9b:0:0::/64');
  });

  test('a gRPC call\'s client is its peer\'s address, in each form gRPC writes it; a peer without one is \'\'', () => {
    // @grpc/grpc-js's ADDRESS:PORT, an IPv6 address unbracketed; gRPC core's ipv4: and ipv6:[…].
    const peers = {
      '127.0.0.1:50051': '127.0.0.1', '::1:50051': '::1', '::ffff:10.1.2.3:443': '::ffff:10.1.2.3',
      '2001:db8:1:2::9:8080': '2001:db8:1:2::9', 'fe80::1%eth0:9': 'fe80::1%eth0', '10.0.0.1': '10.0.0.1',
      'ipv4:10.0.0.1:80': '10.0.0.1', 'ipv6:[2001:db8::1]:80': '2001:db8::1', '[::1]:80': '::1',
      unknown: '', 'unix:/run/choripan.sock': '', 'ipv6:[not-an-address]:80': '', '10.0.0.1:port': '', '': '',
    };
    for (const [peer, address] of Object.entries(peers)) assert.equal(peerAddress(peer), address, peer);
    // As clientOf then reads it: the same bucket as HTTP's for that address.
    assert.equal(clientOf(peerAddress('::ffff:10.1.2.3:443')), '10.1.2.3');
    assert.equal(clientOf(peerAddress('2001:db8:1:2::9:8080')), clientOf('2001:db8:1:2::7'));
  });
});

describe('keys: a served app', () => {
  let model;
  let base;
  let server;
  const logged = [];

  before(async () => {
    model = await choripan.load(defaultPackagePath, { workers: 1 });
    const logger = pino({ level: 'info' }, { write: (line) => logged.push(line) });
    ({ server, base } = await listen(createApp({ model, logger, apiKeys: KEYS })));
  });
  after(async () => {
    server.close();
    await model.dispose();
  });

  test('no key, a wrong one, a malformed one: 401 with the challenge, in each route family\'s error shape', async () => {
    for (const [headers, challenge] of [[{}, 'Bearer realm="choripan"'], [bearer('wrong-key-of-enough-length'), 'Bearer realm="choripan", error="invalid_token"'],
      [{ authorization: `Basic ${Buffer.from(`u:${INFER_KEY}`).toString('base64')}` }, 'Bearer realm="choripan", error="invalid_token"'],
      [bearer(ADMIN_KEY.toUpperCase()), 'Bearer realm="choripan", error="invalid_token"']]) {
      const refused = await predict(base, headers);
      assert.equal(refused.status, 401);
      assert.equal(refused.headers.get('www-authenticate'), challenge);
      assert.equal((await refused.json()).error.code, 'E_UNAUTHORIZED');
      const protocol = await infer(base, headers);
      assert.equal(protocol.status, 401);
      assert.equal(protocol.headers.get('www-authenticate'), challenge);
      assert.equal(typeof (await protocol.json()).error, 'string', 'the protocol\'s shape: { error: "…" }');
      for (const route of ['/v2', `/v2/models/${MODEL}`, `/v2/models/${MODEL}/ready`, '/openapi.json', '/nowhere']) {
        assert.equal((await fetch(`${base}${route}`, { headers })).status, 401, route);
      }
    }
  });

  test('a key of either scope infers, over /predict and the protocol', async () => {
    for (const key of [INFER_KEY, ADMIN_KEY, OTHER_KEY]) {
      const answer = await predict(base, bearer(key));
      assert.equal(answer.status, 200);
      assert.ok(CAT_LABELS.includes((await answer.json()).label));
      const protocol = await infer(base, bearer(key));
      assert.equal(protocol.status, 200);
      assert.match((await protocol.json()).outputs[0].data[0], /:(tiger cat|Egyptian cat|tabby)$/);
      assert.equal((await fetch(`${base}/v2/models/${MODEL}`, { headers: bearer(key) })).status, 200);
    }
  });

  test('the probes, /metrics and the page answer without a key', async () => {
    for (const route of ['/healthz', '/readyz', '/metrics', '/v2/health/live', '/v2/health/ready', '/', '/page.js']) {
      const response = await fetch(`${base}${route}`);
      assert.equal(response.status, 200, route);
      assert.equal(response.headers.get('www-authenticate'), null, route);
    }
  });

  test('the repository needs an admin key: 401 without a key, 403 with an infer key, past the check with an admin key', async () => {
    const call = (headers) => fetch(`${base}/v2/repository/index`, { method: 'POST', headers });
    const none = await call({});
    assert.equal(none.status, 401);
    const lesser = await call(bearer(INFER_KEY));
    assert.equal(lesser.status, 403);
    assert.equal(lesser.headers.get('www-authenticate'), 'Bearer realm="choripan", error="insufficient_scope", scope="admin"');
    assert.equal(typeof (await lesser.json()).error, 'string');
    // Past the keys: the index of the models served.
    assert.equal((await call(bearer(ADMIN_KEY))).status, 200);
  });

  test('no key reaches the log, valid or not', async () => {
    await predict(base, bearer(INFER_KEY));
    await predict(base, bearer('a-wrong-key-tried-by-someone'));
    await fetch(`${base}/v2/repository/index`, { method: 'POST', headers: bearer(INFER_KEY) });
    const text = logged.join('');
    assert.ok(logged.length > 10 && text.includes('"status":401') && text.includes('"status":403'), 'the requests were logged');
    for (const secret of [INFER_KEY, ADMIN_KEY, OTHER_KEY, 'a-wrong-key-tried-by-someone']) assert.ok(!text.includes(secret), secret);
  });

  test('/openapi.json: the bearer scheme, required on every guarded operation, 401 answers in the family\'s shape', async () => {
    const spec = await (await fetch(`${base}/openapi.json`, { headers: bearer(INFER_KEY) })).json();
    assert.deepEqual(spec.components.securitySchemes.apiKey, { type: 'http', scheme: 'bearer', description: spec.components.securitySchemes.apiKey.description });
    assert.deepEqual(spec.paths['/predict'].post.security, [{ apiKey: [] }]);
    assert.equal(spec.paths['/predict'].post.responses[401].content['application/json'].schema.$ref, '#/components/schemas/Error');
    assert.equal(spec.paths['/v2/models/{name}/infer'].post.responses[401].content['application/json'].schema.$ref, '#/components/schemas/OipError');
    assert.deepEqual(spec.paths['/healthz'].get.security, []);
    assert.equal(spec.paths['/healthz'].get.responses[401], undefined);
    assert.equal(spec.paths['/predict'].post.responses[429], undefined, 'no limit, no 429');
  });

  test('a browser app of a listed origin may send its key: the preflight passes without one, the challenge is readable', async () => {
    const origin = 'https://app.example.com';
    const cross = await listen(createApp({ model, logger: pino({ level: 'silent' }), apiKeys: KEYS, corsOrigins: origin }));
    try {
      const preflight = await fetch(`${cross.base}/predict`, { method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } });
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get('access-control-allow-headers'), 'authorization,content-type');
      const refused = await predict(cross.base, { origin });
      assert.equal(refused.status, 401);
      assert.equal(refused.headers.get('access-control-allow-origin'), origin);
      assert.match(refused.headers.get('access-control-expose-headers'), /WWW-Authenticate/);
      assert.equal((await predict(cross.base, { origin, ...bearer(INFER_KEY) })).status, 200);
    } finally {
      cross.server.close();
    }
  });

  test('createApp refuses bad keys by option name, and metricsAuth without keys', () => {
    assert.throws(() => createApp({ model, apiKeys: [{ key: INFER_KEY, scope: 'root' }] }), /^TypeError: apiKeys: apiKeys\[0\]: the scope is not one of infer, admin$/);
    assert.throws(() => createApp({ model, apiKeys: [] }), /^TypeError: apiKeys: lists no key$/);
    assert.throws(() => createApp({ model, metricsAuth: true }), /^TypeError: metricsAuth: closing \/metrics needs apiKeys$/);
    assert.throws(() => createApp({ model, rateLimit: '0:5' }), /^TypeError: rateLimit: expected RATE:BURST/);
  });
});

describe('limits: a served app', () => {
  let model;
  before(async () => {
    model = await choripan.load(defaultPackagePath, { workers: 1 });
  });
  after(() => model.dispose());
  const silent = pino({ level: 'silent' });

  test('past its rate a client gets 429 with Retry-After and the RateLimit fields, counted, and is let through after the refill', { timeout: 30_000 }, async () => {
    const { server, base } = await listen(createApp({ model, logger: silent, apiKeys: KEYS, rateLimit: '1:3' }));
    try {
      const metadata = (key) => fetch(`${base}/v2/models/${MODEL}`, { headers: bearer(key) });
      for (const remaining of [2, 1, 0]) {
        const allowed = await metadata(INFER_KEY);
        assert.equal(allowed.status, 200);
        assert.equal(allowed.headers.get('ratelimit-policy'), '"per-key";q=3;w=3');
        assert.equal(rateLimitOf(allowed).remaining, remaining);
      }
      const refused = await predict(base, bearer(INFER_KEY));
      assert.equal(refused.status, 429);
      assert.equal(refused.headers.get('retry-after'), '1');
      assert.deepEqual(rateLimitOf(refused), { policy: 'per-key', remaining: 0, reset: 1 });
      assert.equal((await refused.json()).error.code, 'E_RATE_LIMITED');
      const protocol = await infer(base, bearer(INFER_KEY));
      assert.equal(protocol.status, 429);
      assert.match((await protocol.json()).error, /rate limit/, 'the protocol\'s shape');
      // Each key has its own bucket.
      assert.equal((await metadata(OTHER_KEY)).status, 200);
      assert.equal((await predict(base, bearer(ADMIN_KEY))).status, 200);
      const spec = await (await fetch(`${base}/openapi.json`, { headers: bearer(ADMIN_KEY) })).json();
      const limited = spec.paths['/predict'].post.responses[429];
      assert.deepEqual(Object.keys(limited.headers), ['Retry-After', 'RateLimit', 'RateLimit-Policy']);
      assert.equal(spec.paths['/v2/models/{name}/infer'].post.responses[429].content['application/json'].schema.$ref, '#/components/schemas/OipError');
      assert.equal(spec.paths['/metrics'].get.responses[429], undefined);
      // The probes and /metrics are not limited, and the refusals are counted there.
      const text = await (await fetch(`${base}/metrics`)).text();
      assert.match(text, /^choripan_rate_limited_total 2$/m);
      assert.equal((await fetch(`${base}/healthz`)).headers.get('ratelimit'), null);
      await new Promise((resolve) => setTimeout(resolve, Number(refused.headers.get('retry-after')) * 1000));
      assert.equal((await metadata(INFER_KEY)).status, 200, 'refilled');
      // Unauthenticated requests are refused on their key, before any bucket.
      assert.equal((await metadata('not-a-key-of-this-server')).status, 401);
    } finally {
      server.close();
    }
  });

  test('without keys, each client address has its own bucket, /openapi.json counted too', async (t) => {
    const { server } = await listen(createApp({ model, logger: silent, rateLimit: '0.5:2' }));
    const url = (route) => `http://127.0.0.1:${server.address().port}${route}`;
    try {
      const statuses = [];
      for (const route of [`/v2/models/${MODEL}`, '/openapi.json', `/v2/models/${MODEL}`]) statuses.push((await getFrom('127.0.0.1', url(route))).status);
      assert.deepEqual(statuses, [200, 200, 429]);
      assert.equal((await getFrom('127.0.0.1', url('/healthz'))).status, 200, 'the probes are not limited');
      // Linux answers on all of 127.0.0.0/8: another loopback address is another client.
      const other = await getFrom('127.0.0.2', url(`/v2/models/${MODEL}`)).catch((error) => error);
      if (other instanceof Error) return t.skip(`no second loopback address here (${other.code})`);
      assert.equal(other.status, 200, 'another address, another bucket');
      assert.equal(other.headers['ratelimit-policy'], '"per-address";q=2;w=4');
      assert.deepEqual(rateLimitOf(other), { policy: 'per-address', remaining: 1, reset: 2 });
    } finally {
      server.close();
    }
  });

  describe('behind a proxy (trustProxy)', () => {
    const route = `/v2/models/${MODEL}`;
    /** A served app of a bucket of one request, and the clients its log lines name. */
    async function served(options) {
      const lines = [];
      const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
      const { server } = await listen(createApp({ model, logger, rateLimit: '0.01:1', ...options }));
      const url = `http://127.0.0.1:${server.address().port}${route}`;
      const from = async (forwardedFor, localAddress = '127.0.0.1') => {
        const headers = forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor };
        const { status } = await getFrom(localAddress, url, headers);
        return status;
      };
      const clients = () => lines.filter((l) => l.path === route).map((l) => l.client);
      return { server, from, clients };
    }

    test('off (the default): X-Forwarded-For names no one, every value shares the connection\'s bucket', async () => {
      const { server, from, clients } = await served({});
      try {
        assert.deepEqual([await from('203.0.113.1'), await from('203.0.113.2')], [200, 429]);
        assert.deepEqual(clients(), ['127.0.0.1', '127.0.0.1']);
      } finally {
        server.close();
      }
    });

    test('loopback trusted: each address the proxy forwards has its own bucket, in the log and the limit alike', async () => {
      const { server, from, clients } = await served({ trustProxy: 'loopback' });
      try {
        assert.deepEqual([await from('203.0.113.1'), await from('203.0.113.2'), await from('203.0.113.1')], [200, 200, 429]);
        // What the client wrote before the proxy's entry is the client's own say, never trusted.
        assert.equal(await from('198.51.100.9, 203.0.113.2'), 429, 'a forged first entry: still 203.0.113.2');
        // An IPv6 client by its /64, as without a proxy.
        assert.deepEqual([await from('2001:db8::1'), await from('2001:db8::2')], [200, 429]);
        // A port the proxy appends (Azure's Application Gateway) is not part of the client: no new bucket.
        assert.deepEqual([await from('203.0.113.3:4711'), await from('203.0.113.3:4712'), await from('[2001:db8:1::1]:4711')],
          [200, 429, 200]);
        assert.deepEqual(clients(), ['203.0.113.1', '203.0.113.2', '203.0.113.1', '203.0.113.2', '2001:db8::1', '2001:db8::2',
          '203.0.113.3', '203.0.113.3', '2001:db8:1::1']);
      } finally {
        server.close();
      }
    });

    test('hostile headers: what is no address counts as the proxy, a long chain is read to its last hop, an oversized one refused', async () => {
      const { server, from, clients } = await served({ trustProxy: 'loopback' });
      try {
        assert.equal(await from('not-an-address'), 200);
        assert.equal(await from('203.0.113.1 , <script>'), 429, 'the proxy\'s bucket again');
        assert.equal(await from('203.0.113.1, unknown'), 429, 'nginx\'s word for an address it does not know');
        assert.equal(await from('203.0.113.1:70000'), 429, 'no port: the proxy\'s bucket');
        assert.equal(await from('[203.0.113.1]:80'), 429, 'an IPv4 address in brackets');
        const chain = Array.from({ length: 1000 }, (_, i) => `10.${i >> 8}.${i & 255}.1`).join(', ');
        assert.equal(await from(`${chain}, 203.0.113.7`), 200, 'its own bucket: the last hop');
        assert.deepEqual(clients(), ['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.1', '203.0.113.7']);
        assert.equal(await from('203.0.113.8,'.repeat(2000)), 431, 'past Node\'s header limit: refused before the app');
      } finally {
        server.close();
      }
    });

    test('a hop not trusted cannot name a client: only the listed proxy\'s header counts', async (t) => {
      const { server, from, clients } = await served({ trustProxy: '127.0.0.2' });
      try {
        const proxied = await from('203.0.113.1', '127.0.0.2').catch((error) => error);
        if (proxied instanceof Error) return t.skip(`no second loopback address here (${proxied.code})`);
        assert.equal(proxied, 200);
        assert.equal(await from('203.0.113.2'), 200, 'from 127.0.0.1: its own address');
        assert.equal(await from('203.0.113.3'), 429, 'the same client whatever it forwards');
        assert.deepEqual(clients(), ['203.0.113.1', '127.0.0.1', '127.0.0.1']);
      } finally {
        server.close();
      }
    });

    test('createApp refuses a proxy setting it cannot read, or one that trusts every hop, by option name', () => {
      for (const [trustProxy, message] of [['true', /trusting every hop/], ['0', /count of hops from 1 to 10/], ['10.0.0.0/33', /invalid range/],
        ['loopback,proxy.example', /invalid IP address: proxy\.example/]]) {
        assert.throws(() => createApp({ model, trustProxy }), (error) => error instanceof TypeError && /^trustProxy: /.test(error.message) &&
          message.test(error.message), trustProxy);
      }
    });
  });
});

describe('the server (js/server/main.js) with keys and limits', () => {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-keys-'));
  after(() => fs.rmSync(folder, { recursive: true, force: true }));
  const file = (name, text) => {
    const where = path.join(folder, name);
    fs.writeFileSync(where, text);
    return where;
  };

  /** The server's log lines until it is ready, and its port. */
  function start(env) {
    const child = spawn(process.execPath, [main], { env: { ...process.env, PORT: '0', CHORIPAN_MODELS: '', CHORIPAN_WORKERS: '1', ...env } });
    const lines = [];
    const ready = new Promise((resolve, reject) => {
      let buffered = '';
      child.stdout.on('data', (chunk) => {
        buffered += chunk;
        for (let end; (end = buffered.indexOf('\n')) >= 0; buffered = buffered.slice(end + 1)) {
          lines.push(buffered.slice(0, end));
          const port = JSON.parse(buffered.slice(0, end)).port;
          if (port) resolve(port);
        }
      });
      child.on('exit', (code) => reject(new Error(`the server exited with ${code}: ${lines.join('\n')}`)));
    });
    return { child, lines, ready };
  }

  test('a malformed keys file, a bad limit, or /metrics closed without keys stop start-up: one line naming the variable, exit 2', () => {
    const secret = 'this-key-must-stay-secret-0001';
    for (const [variable, value, env = {}] of [
      ['CHORIPAN_API_KEYS_FILE', file('scope', `${secret} root\n`)],
      ['CHORIPAN_API_KEYS_FILE', file('empty-key', ' infer\n')],
      ['CHORIPAN_API_KEYS_FILE', file('twice', `${secret} infer\n${secret} admin\n`)],
      ['CHORIPAN_API_KEYS_FILE', path.join(folder, 'missing')],
      ['CHORIPAN_API_KEYS_FILE', folder],
      ['CHORIPAN_RATE_LIMIT', '20'], ['CHORIPAN_RATE_LIMIT', '0:40'], ['CHORIPAN_RATE_LIMIT', '20:0'],
      ['CHORIPAN_METRICS_AUTH', 'yes'], ['CHORIPAN_METRICS_AUTH', 'true'],
      ['CHORIPAN_TRUST_PROXY', 'true'], ['CHORIPAN_TRUST_PROXY', '11'], ['CHORIPAN_TRUST_PROXY', '10.0.0.0/8;loopback'],
    ]) {
      const run = spawnSync(process.execPath, [main], { encoding: 'utf8', env: { ...process.env, ...env, [variable]: value }, timeout: 60_000 });
      assert.equal(run.status, 2, `${variable}=${value}: ${run.stderr}`);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, new RegExp(`^choripan: ${variable}: `));
      assert.ok(!run.stderr.includes(secret), run.stderr);
    }
  });

  test('keys from the file, /metrics closed by CHORIPAN_METRICS_AUTH, and no key in the log', { timeout: 60_000 }, async () => {
    const keys = file('keys', `# who may call\n${INFER_KEY} infer\n${ADMIN_KEY} admin\n`);
    const server = start({ HOST: '127.0.0.1', CHORIPAN_API_KEYS_FILE: keys, CHORIPAN_METRICS_AUTH: 'true', CHORIPAN_RATE_LIMIT: '100:100' });
    try {
      const base = `http://127.0.0.1:${await server.ready}`;
      assert.equal((await predict(base)).status, 401);
      assert.equal((await predict(base, bearer(INFER_KEY))).status, 200);
      assert.equal((await fetch(`${base}/metrics`)).status, 401);
      const metrics = await fetch(`${base}/metrics`, { headers: bearer(INFER_KEY) });
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /^choripan_http_requests_total\{route="\/predict",method="POST",status="200"\} 1$/m);
      assert.equal((await fetch(`${base}/readyz`)).status, 200);
      await predict(base, bearer('guessing-at-the-key-of-this'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const log = server.lines.join('\n');
      assert.match(log, /"status":401/);
      for (const secret of [INFER_KEY, ADMIN_KEY, 'guessing-at-the-key-of-this']) assert.ok(!log.includes(secret), secret);
      assert.ok(!/"level":40/.test(log), 'no warning: loopback, and keys');
    } finally {
      server.child.kill('SIGTERM');
    }
  });

  test('on an address open to the network without keys, a warning at start', { timeout: 60_000 }, async () => {
    const server = start({ HOST: '0.0.0.0', CHORIPAN_API_KEYS_FILE: '' });
    try {
      await server.ready;
      const warning = server.lines.map((line) => JSON.parse(line)).find((line) => line.level === 40);
      assert.match(warning?.msg ?? '', /open to the network and takes no API keys.*CHORIPAN_API_KEYS_FILE/);
    } finally {
      server.child.kill('SIGTERM');
    }
  });
});
