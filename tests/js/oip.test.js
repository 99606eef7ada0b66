'use strict';
// The Open Inference Protocol's routes against what clients get wrong, over real HTTP: a malformed
// request is refused whole, with a 4xx and the protocol's { "error": "…" }, before anything runs, and
// no request stops the server.

const assert = require('node:assert/strict');
const http = require('node:http');
const zlib = require('node:zlib');
const { test, describe, before, after } = require('node:test');
const fc = require('fast-check');
const pino = require('pino');
const sharp = require('sharp');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { photo, defaultPackagePath } = require('./helpers');

const INFER = '/v2/models/efficientnet-lite0/infer';

function listen(app) {
  return new Promise((resolve) => {
    const server = http.createServer(app).listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** One request on a connection of its own: { status, headers, body: Buffer }. */
function send(port, path, { method = 'POST', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, path, method, headers, agent: false }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) }));
    });
    request.on('error', reject);
    request.end(body);
  });
}

const json = (value) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) });
const nested = (depth, leaf) => `${'['.repeat(depth)}${leaf}${']'.repeat(depth)}`;

/** A valid request for one encoded image, in JSON. */
const imageRequest = (jpeg) => ({ id: 'one', inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [jpeg.toString('base64')] }] });

/** Asserts an answer is the protocol's refusal: `status`, and { error: string }. */
function assertRefused(answer, status, what) {
  const text = answer.body.toString();
  assert.equal(answer.status, status, `${what}: ${answer.status} ${text.slice(0, 300)}`);
  assert.equal(typeof JSON.parse(text).error, 'string', `${what}: ${text.slice(0, 300)}`);
}

/** Resolves once the core holds nothing: no request announced, queued or running. */
async function idle(model) {
  while (model.stats().queued + model.stats().inflight + model.stats().pendingBytes > 0) {
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * The default package loaded with `options` and served, for the tests of one describe: `model`, `port`
 * and a JPEG of the cat, once they run.
 */
function serving(options) {
  const served = {};
  before(async () => {
    served.model = await choripan.load(defaultPackagePath, options);
    served.server = await listen(createApp({ model: served.model, logger: pino({ level: 'silent' }) }));
    served.port = served.server.address().port;
    served.jpeg = await sharp(photo('chelsea.png')).jpeg().toBuffer();
  });
  after(async () => {
    served.server.close();
    await served.model.dispose();
  });
  return served;
}

describe('client errors on /v2', () => {
  const served = serving();

  test('each answers 400 or 415 with { error }, never 500, and runs no forward pass', async () => {
    const { model, port, jpeg } = served;
    const cat = imageRequest(jpeg);
    const text = JSON.stringify(cat);
    const cases = [
      ['an input that is null', INFER, json({ inputs: [null] }), 400],
      ['"outputs" a string, not a list', INFER, json({ ...cat, outputs: 'probabilities' }), 400],
      ['an id that is a number', INFER, json({ ...cat, id: 7 }), 400],
      ['a model name that is not percent-encoding (metadata)', '/v2/models/%ZZ', { method: 'GET' }, 400],
      ['a model name that is not percent-encoding (infer)', '/v2/models/%ZZ/infer', json(cat), 400],
      ['Content-Encoding: compress', INFER, { headers: { 'content-encoding': 'compress' }, body: zlib.gzipSync(text) }, 415],
      // Node 22.15 and later decode zstd: this gzip body is then a corrupt one.
      ['Content-Encoding: zstd', INFER, { headers: { 'content-encoding': 'zstd' }, body: zlib.gzipSync(text) }, zlib.createZstdDecompress ? 400 : 415],
      ['a corrupt gzip body', INFER, { headers: { 'content-encoding': 'gzip' }, body: zlib.gzipSync(text).subarray(0, 40) }, 400],
      ['data nested 100,000 deep', INFER, { body: text.replace(/"data":\[("[^"]*")\]/, (_, image) => `"data":${nested(100_000, image)}`) }, 400],
      ['an id nested 100,000 deep', INFER, { body: text.replace('"id":"one"', `"id":${nested(100_000, '1')}`) }, 400],
      ['a name nested 100,000 deep', INFER, { body: text.replace('"name":"image"', `"name":${nested(100_000, '"image"')}`) }, 400],
    ];
    for (const [what, path, request, status] of cases) {
      const batches = model.stats().batches;
      assertRefused(await send(port, path, request), status, what);
      assert.equal(model.stats().batches, batches, `${what}: a forward pass ran`);
    }
    const answer = await send(port, INFER, { headers: { 'content-encoding': 'gzip' }, body: zlib.gzipSync(text) });
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(JSON.parse(answer.body).id, 'one');
  });

  test('a property: random mutations of valid requests are answered 200 or 4xx with { error }, never 5xx', { timeout: 300_000 }, async () => {
    const { model, port, jpeg } = served;
    const base64 = jpeg.toString('base64');
    const lengthPrefixed = Buffer.concat([Buffer.from(Uint32Array.of(jpeg.length).buffer), jpeg]);
    const plane = Buffer.alloc(3 * 224 * 224 * 4);
    // Valid requests of each kind the server takes: BYTES in JSON (flat and nested) and binary, FP32 binary.
    const valid = [
      () => ({ request: { id: 'a', inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [base64] }],
        outputs: [{ name: 'probabilities', parameters: { classification: 3 } }] } }),
      () => ({ request: { inputs: [{ name: 'image', shape: [2, 1], datatype: 'BYTES', data: [[base64], [base64]] }],
        parameters: { binary_data_output: false } } }),
      () => ({ request: { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: lengthPrefixed.length } }],
        outputs: [{ name: 'probabilities', parameters: { binary_data: true } }] }, binary: lengthPrefixed }),
      () => ({ request: { inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', parameters: { binary_data_size: plane.length } }] },
        binary: plane }),
    ];
    // Values too deep to build as objects here (JSON.stringify would overflow this stack): spliced in as text.
    class Deep {
      constructor(depth, object) {
        Object.assign(this, { depth, object });
      }
      get text() {
        return this.object ? `${'{"a":'.repeat(this.depth)}1${'}'.repeat(this.depth)}` : nested(this.depth, '"aGk="');
      }
    }
    const FIELDS = [[], ['id'], ['parameters'], ['parameters', 'binary_data_output'], ['inputs'], ['inputs', 0], ['inputs', 1],
      ['inputs', 0, 'name'], ['inputs', 0, 'datatype'], ['inputs', 0, 'shape'], ['inputs', 0, 'shape', 0], ['inputs', 0, 'shape', 1],
      ['inputs', 0, 'data'], ['inputs', 0, 'data', 0], ['inputs', 0, 'data', 1], ['inputs', 0, 'parameters'],
      ['inputs', 0, 'parameters', 'binary_data_size'], ['outputs'], ['outputs', 0], ['outputs', 0, 'name'],
      ['outputs', 0, 'parameters'], ['outputs', 0, 'parameters', 'classification'], ['outputs', 0, 'parameters', 'binary_data']];
    const value = fc.oneof(
      fc.constantFrom(null, true, false, 0, -1, 1.5, -0.5, 1e308, -1e308, 2 ** 53 + 2, 2 ** 32, '', 'probabilities', 'image',
        'BYTES', 'FP32', 'INT8', 'FP16', 'BOOL', '%%%', 'aGk=', '====', {}, [], [null], [[]], [1, 2, 3], { name: 'probabilities' }),
      fc.integer({ min: -3, max: 300 }),
      fc.string({ maxLength: 20 }),
      fc.base64String({ maxLength: 200 }),
      fc.array(fc.integer({ min: -2, max: 300 }), { maxLength: 6 }),
      fc.array(fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.constant(null)), { maxLength: 4 }),
      fc.constantFrom(2, 1000, 100_000).chain((depth) => fc.boolean().map((object) => new Deep(depth, object))),
    );
    // Images whose header already says they will not decode: refused before anything of the request runs.
    const junk = fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => Buffer.from(bytes).toString('base64')),
      fc.constantFrom('iVBORw0KGgo=', Buffer.from('GIF89a').toString('base64'), jpeg.subarray(0, 20).toString('base64')));
    const mutation = fc.oneof(
      fc.record({ set: fc.constantFrom(...FIELDS), value }),
      fc.record({ set: fc.constantFrom(['inputs', 0, 'data', 0], ['inputs', 0, 'data', 1], ['inputs', 0, 'data', 1, 0]), value: junk }),
      fc.record({ remove: fc.constantFrom(...FIELDS.filter((path) => path.length)) }),
      fc.record({ headerLength: fc.oneof(fc.constantFrom('-1', 'abc', '1e3', '', '99999999', '0x10'), fc.integer({ min: -50, max: 50 })) }),
      fc.record({ cut: fc.nat() }),
      fc.record({ encoding: fc.constantFrom('gzip', 'deflate', 'br', 'zstd', 'compress', 'identity, gzip') }),
      fc.constant({ gzip: true }),
    );
    const caseOf = fc.record({ kind: fc.nat({ max: valid.length - 1 }), mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }) });

    /** The HTTP request a case makes: a valid request, then each mutation in turn. */
    function build({ kind, mutations }) {
      const { request, binary = null } = valid[kind]();
      const document = { request };
      for (const change of mutations.filter((m) => m.set || m.remove)) {
        const path = ['request', ...(change.set ?? change.remove)];
        const parent = path.slice(0, -1).reduce((at, key) => (at !== null && typeof at === 'object' ? at[key] : undefined), document);
        if (parent === null || typeof parent !== 'object') continue;
        if (change.remove) delete parent[path.at(-1)];
        else parent[path.at(-1)] = change.value;
      }
      const deep = [];
      let header = JSON.stringify(document.request, (key, v) => (v instanceof Deep ? `@@deep${deep.push(v) - 1}@@` : v));
      header = header.replace(/"@@deep(\d+)@@"/g, (_, i) => deep[Number(i)].text);
      let body = binary ? Buffer.concat([Buffer.from(header), binary]) : Buffer.from(header);
      const headers = { 'content-type': 'application/json' };
      if (binary) headers['inference-header-content-length'] = String(Buffer.byteLength(header));
      for (const change of mutations) {
        if (change.headerLength !== undefined) {
          headers['inference-header-content-length'] = typeof change.headerLength === 'number'
            ? String(Buffer.byteLength(header) + change.headerLength) : change.headerLength;
        }
        if (change.cut !== undefined) body = body.subarray(0, change.cut % (body.length + 1));
        if (change.encoding) headers['content-encoding'] = change.encoding;
        if (change.gzip) {
          body = zlib.gzipSync(body);
          headers['content-encoding'] = 'gzip';
        }
      }
      return { headers, body };
    }

    let answered = 0;
    await fc.assert(fc.asyncProperty(caseOf, async (testCase) => {
      const batches = model.stats().batches;
      const answer = await send(port, INFER, build(testCase));
      if (answer.status === 200) {
        answered++;
        assert.ok(Array.isArray(JSON.parse(answer.body.subarray(0, Number(answer.headers['inference-header-content-length'] ?? answer.body.length))).outputs));
        return;
      }
      assert.ok([400, 404, 413, 415].includes(answer.status), `${answer.status} ${answer.body.toString().slice(0, 300)}`);
      assert.equal(typeof JSON.parse(answer.body).error, 'string');
      await idle(model);
      assert.equal(model.stats().batches, batches, `refused with ${answer.status}, but a forward pass ran`);
    }), { seed: 17, numRuns: 600 });
    assert.ok(answered > 10, `only ${answered} mutated requests were still valid: the mutations never keep one whole`);
    const after = await send(port, INFER, json(imageRequest(jpeg)));
    assert.equal(after.status, 200);
    assert.deepEqual([model.stats().queued, model.stats().inflight, model.stats().pendingBytes], [0, 0, 0], 'nothing left in the core');
  });
});

/** A BYTES request for these encoded images, with the binary data extension. */
function imagesRequest(images) {
  const data = Buffer.concat(images.flatMap((image) => [Buffer.from(Uint32Array.of(image.length).buffer), image]));
  const header = JSON.stringify({ inputs: [{ name: 'image', shape: [images.length], datatype: 'BYTES', parameters: { binary_data_size: data.length } }] });
  return { headers: { 'inference-header-content-length': String(Buffer.byteLength(header)) }, body: Buffer.concat([Buffer.from(header), data]) };
}

describe('a request of many images is admitted whole and withdrawn whole', () => {
  const served = serving({ maxBatch: 1 }); // one image a forward pass: the passes count the images that ran

  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

  test('1,000 JPEGs, more than the queue holds, are refused before any runs: a lone client beside them keeps its pace', { timeout: 300_000 }, async () => {
    const { model, port, jpeg } = served;
    const thumbnail = await sharp(photo('chelsea.png')).resize(64).jpeg().toBuffer();
    const many = imagesRequest(Array(1000).fill(thumbnail));
    const lone = async () => {
      const started = performance.now();
      const answer = await send(port, '/predict', { headers: { 'content-type': 'image/jpeg' }, body: jpeg });
      assert.equal(answer.status, 200, answer.body.toString());
      return performance.now() - started;
    };
    const baseline = [];
    for (let i = 0; i < 15; i++) baseline.push(await lone());
    await idle(model);
    const batches = model.stats().batches;
    let refusing = true;
    const beside = [];
    const client = (async () => {
      // Until 2 s after the last refusal: the work a refused request left behind ran for 4–7 s.
      let until = Infinity;
      while (refusing || performance.now() < until) {
        beside.push(await lone());
        if (!refusing && until === Infinity) until = performance.now() + 2000;
      }
    })();
    for (let i = 0; i < 5; i++) {
      const answer = await send(port, INFER, many);
      assertRefused(answer, 413, '1,000 images');
      assert.match(JSON.parse(answer.body).error, /1000 images in one call; the queue holds 256/);
    }
    refusing = false;
    await client;
    await idle(model);
    const ran = model.stats().batches - batches - beside.length;
    assert.ok(ran <= 2, `${ran} forward passes ran for the refused requests`);
    assert.ok(median(beside) < 2 * median(baseline) + 20,
      `the lone client's median went from ${median(baseline).toFixed(1)} ms to ${median(beside).toFixed(1)} ms beside the refusals`);
  });

  test('10 JPEGs whose 3rd is corrupt: 400, and the others are withdrawn before they run', async () => {
    const { model, port, jpeg } = served;
    const images = Array(10).fill(jpeg);
    images[2] = jpeg.subarray(0, Math.floor(jpeg.length * 0.6)); // its header intact: only the core's decoder finds out
    await idle(model);
    const batches = model.stats().batches;
    const answer = await send(port, INFER, imagesRequest(images));
    assertRefused(answer, 400, 'a corrupt 3rd image');
    assert.match(JSON.parse(answer.body).error, /^image 3 of 10: .*(premature end|corrupt)/i);
    assert.equal(model.stats().queued, 0, 'answered with images still queued');
    await idle(model);
    const ran = model.stats().batches - batches;
    assert.ok(ran <= 4, `${ran} forward passes ran for a refused request of 10 images`);
  });
});
