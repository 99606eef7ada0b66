'use strict';
// The public JS API: predict(), load(), Model, errors.

const assert = require('node:assert/strict');
const { test, describe, after } = require('node:test');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');
const sharp = require('sharp');
const choripan = require('choripan');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { root, env, rewriteMetadata, photo, photoPath, defaultModelPath, defaultPackagePath, CAT_LABELS, rejection } = require('./helpers');

describe('predict() with the default model', () => {
  test('labels a real cat photo as a cat, with the top 5', async () => {
    const result = await choripan.predict(photo('chelsea.png'));
    assert.ok(CAT_LABELS.includes(result.label), `got ${result.label}`);
    assert.equal(result.top.length, 5);
    assert.equal(result.top[0].label, result.label);
    assert.equal(result.top[0].probability, result.probability);
    for (let i = 1; i < 5; i++) assert.ok(result.top[i - 1].probability >= result.top[i].probability);
    assert.ok(result.top.every((entry) => entry.probability > 0 && entry.probability < 1));
  });

  test('labels an espresso and a missile', async () => {
    assert.equal((await choripan.predict(photo('coffee.png'))).label, 'espresso');
    assert.equal((await choripan.predict(photo('rocket.jpg'))).label, 'missile');
  });

  test('honours topK', async () => {
    const result = await choripan.predict(photo('coffee.png'), { topK: 2 });
    assert.equal(result.top.length, 2);
  });

  test('takes the old name topk, with one DeprecationWarning (CHORIPAN_DEP0001) however often it is used', () => {
    const script = `const fs = require('node:fs');
      const choripan = require(${JSON.stringify(root)});
      (async () => {
        for (let i = 0; i < 3; i++) console.log((await choripan.predict(fs.readFileSync(${JSON.stringify(photoPath('coffee.png'))}), { topk: 2 })).top.length);
      })();`;
    const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(run.stdout.trim().split('\n'), ['2', '2', '2']);
    const warnings = run.stderr.split('\n').filter((line) => line.includes('DeprecationWarning'));
    assert.equal(warnings.length, 1, run.stderr);
    assert.match(warnings[0], /\[CHORIPAN_DEP0001\] DeprecationWarning: predict\(\) option topk is deprecated: use topK/);
  });

  test('takes WebP and JPEG encodings of the same photo', async () => {
    const webp = await sharp(photo('chelsea.png')).webp({ quality: 95 }).toBuffer();
    const jpeg = await sharp(photo('chelsea.png')).jpeg({ quality: 95 }).toBuffer();
    for (const bytes of [webp, jpeg]) {
      assert.ok(CAT_LABELS.includes((await choripan.predict(bytes)).label));
    }
  });

  test('applies EXIF orientation: a rotated JPEG tagged to display upright answers like the upright one', async () => {
    const upright = await sharp(photo('chelsea.png')).jpeg({ quality: 100 }).toBuffer();
    // Stored rotated 90° clockwise; Orientation 8 tells viewers to rotate it back.
    const rotated = await sharp(photo('chelsea.png')).rotate(90).jpeg({ quality: 100 }).withMetadata({ orientation: 8 }).toBuffer();
    const [a, b] = await Promise.all([choripan.predict(upright), choripan.predict(rotated)]);
    assert.equal(a.label, b.label);
    assert.ok(Math.abs(a.probability - b.probability) < 0.05);
  });
});

// A bad call is thrown as Node's own APIs throw one, a TypeError or a RangeError, and is a ChoripanError
// with the code E_INVALID_ARGUMENT all the same; the core's refusals of load()'s options included.
describe('bad calls throw a TypeError or a RangeError with E_INVALID_ARGUMENT, each a ChoripanError', () => {
  // models/default.pt2, its metadata saying it runs batches of at most 4 (the checksum leaves the metadata
  // out): made by the first case that loads it.
  let smallDir;
  const smallPackage = () => {
    if (smallDir) return path.join(smallDir, 'default.pt2');
    smallDir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-batch4-'));
    rewriteMetadata(defaultPackagePath, path.join(smallDir, 'default.pt2'), 'doc["runtime"]["models"]["model"]["batch"] = [1, 4]');
    return path.join(smallDir, 'default.pt2');
  };
  after(() => smallDir && fs.rmSync(smallDir, { recursive: true, force: true }));
  const cases = [
    ['a string instead of bytes', TypeError, () => choripan.predict('chelsea.png'), /Expected a Buffer or Uint8Array .* for image but received "chelsea.png" of type string/],
    ['an empty buffer', RangeError, () => choripan.predict(Buffer.alloc(0)), /empty buffer/],
    ['options that are not an object', TypeError, () => choripan.predict(photo('coffee.png'), 5), /^Expected an object for options but received 5 of type number$/],
    ['topK 0', RangeError, () => choripan.predict(photo('coffee.png'), { topK: 0 }), /Expected an integer between 1 and 1000 for options.topK but received 0/],
    ['topK over the label count', RangeError, () => choripan.predict(photo('coffee.png'), { topK: 1001 }), /Expected an integer between 1 and 1000 for options.topK but received 1001/],
    ['topK as a string', TypeError, () => choripan.predict(photo('coffee.png'), { topK: '3' }), /^Expected an integer between 1 and 1000 for options.topK but received "3" of type string$/],
    ['the old name topk, named as given', RangeError, () => choripan.predict(photo('coffee.png'), { topk: 0 }), /Expected an integer between 1 and 1000 for options.topk but received 0/],
    ['topK and topk at once', TypeError, () => choripan.predict(photo('coffee.png'), { topK: 3, topk: 3 }), /^options.topk is the old name of options.topK: give topK alone$/],
    ['a misspelled option', TypeError, () => choripan.predict(photo('coffee.png'), { top_k: 3 }), /Unknown option 'top_k' for predict\(\)\. Did you mean 'topK'\?/],
    ['a signal that is not an AbortSignal', TypeError, () => choripan.predict(photo('coffee.png'), { signal: {} }), /AbortSignal/],
    ['a negative timeoutMs', RangeError, () => choripan.predict(photo('coffee.png'), { timeoutMs: -1 }), /for options.timeoutMs but received -1 of type number$/],
    ['a Float32Array of the wrong length', RangeError, async () => {
      const model = await choripan.load(defaultModelPath, { warmup: false });
      try {
        return await model.probabilities(new Float32Array(10));
      } finally {
        await model.dispose();
      }
    }, /^Expected 3 × (\d+) × \1 = \d+ floats, got 10$/],
    ['a misspelled load option', TypeError, () => choripan.load(defaultModelPath, { maxbatch: 4 }), /Did you mean 'maxBatch'\?/],
    ['maxBatch 0', RangeError, () => choripan.load(defaultModelPath, { maxBatch: 0 }), /^Expected an integer between 1 and 1024 for options.maxBatch but received 0 of type number$/],
    ['maxBatch 2.5', RangeError, () => choripan.load(defaultModelPath, { maxBatch: 2.5 }), /^Expected an integer between 1 and 1024 for options.maxBatch but received 2.5 of type number$/],
    ['maxBatch as a string', TypeError, () => choripan.load(defaultModelPath, { maxBatch: '4' }), /^Expected an integer between 1 and 1024 for options.maxBatch but received "4" of type string$/],
    ['maxBatch past what the package runs, named as JS spells it', RangeError, () => choripan.load(smallPackage(), { maxBatch: 8, warmup: false }),
      /^maxBatch is 8 but \S+default\.pt2 runs batches of at most 4$/],
    ['an unknown device', TypeError, () => choripan.load(defaultModelPath, { device: 'tpu' }), /'cpu' or 'cuda' for options.device/],
    ['warmup of another type, in the one shape', TypeError, () => choripan.load(defaultModelPath, { warmup: 'yes' }),
      /^Expected a boolean for options.warmup but received "yes" of type string$/],
    ['a path that is not a string', TypeError, () => choripan.load(42), /for path but received 42 of type number/],
  ];
  for (const [name, kind, call, message] of cases) {
    test(`${name}: a ${kind.name}`, async () => {
      const error = await rejection(call());
      assert.equal(error.constructor.name, `Choripan${kind.name}`);
      assert.ok(error instanceof kind, `${error.name}: ${error.message}`);
      assert.equal(error.name, kind.name);
      assert.ok(error instanceof choripan.ChoripanError);
      assert.equal(error.code, 'E_INVALID_ARGUMENT');
      assert.match(error.message, message);
    });
  }

  test("the core's refusal of an option points at the caller, as Node prints its own", async () => {
    const error = await rejection(choripan.load(defaultModelPath, { maxBatch: 0 }));
    assert.match(error.stack, /^RangeError \[E_INVALID_ARGUMENT\]: Expected an integer between 1 and 1024/);
    assert.match(error.stack, /api\.test\.js/);
  });

  test('what is not a bad call stays a ChoripanError proper: the image, the queue, the file', async () => {
    const strip = await sharp({ create: { width: 2000, height: 10, channels: 3, background: '#808080' } }).png().toBuffer();
    for (const [code, failure] of [
      ['E_INVALID_ARGUMENT', choripan.predict(strip)],
      ['E_DECODE', choripan.predict(crypto.randomBytes(4096))],
      ['E_MODEL_LOAD', choripan.load('/nonexistent/model.pt')],
    ]) {
      const error = await rejection(failure);
      assert.equal(error.code, code);
      assert.equal(error.constructor, choripan.ChoripanError, `${code} is no TypeError or RangeError`);
      assert.ok(!(error instanceof TypeError) && !(error instanceof RangeError));
    }
    assert.ok(!(new TypeError('not ours') instanceof choripan.ChoripanError), 'an error without our class is not ours');
    assert.ok(!(Object.assign(new RangeError('a code alone'), { code: 'E_INVALID_ARGUMENT' }) instanceof choripan.ChoripanError));
  });

  test("the service answers a bad call's TypeError and RangeError as it answers E_INVALID_ARGUMENT: HTTP 400, gRPC INVALID_ARGUMENT", async () => {
    // js/server is loaded here on purpose: its mapping of the library's own errors is what is checked.
    const { toHttpError, toGrpcError } = require('../../js/server/http-error');
    const { status: grpc } = require('@grpc/grpc-js');
    const typeError = await rejection(choripan.predict(photo('coffee.png'), { signal: {} }));
    const rangeError = await rejection(choripan.load(defaultModelPath, { maxBatch: 0 }));
    for (const error of [typeError, rangeError]) {
      const expected = { status: 400, code: 'E_INVALID_ARGUMENT', message: error.message };
      assert.deepEqual(toHttpError(error), expected);
      assert.deepEqual(toHttpError(new choripan.ChoripanError('E_INVALID_ARGUMENT', error.message)), expected);
      assert.deepEqual(toGrpcError(error), { ...expected, grpcCode: grpc.INVALID_ARGUMENT });
    }
  });
});

describe('expected failures carry a code', () => {
  test('random bytes → E_DECODE', async () => {
    const error = await rejection(choripan.predict(crypto.randomBytes(4096)));
    assert.equal(error.code, 'E_DECODE');
  });

  test('a truncated JPEG → E_DECODE', async () => {
    const jpeg = await sharp(photo('chelsea.png')).jpeg().toBuffer();
    const error = await rejection(choripan.predict(jpeg.subarray(0, jpeg.length / 2)));
    assert.equal(error.code, 'E_DECODE');
  });

  test('an artifact whose decode policy predates GIF, TIFF and CMYK refuses them, in Node as in Python', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-policy-'));
    const old = path.join(dir, 'old.pt');
    const gif = path.join(dir, 'cat.gif');
    const cmyk = path.join(dir, 'cat.jpg');
    // The same artifact, its metadata saying what artifacts said before (formats JPEG, PNG, WebP; CMYK refused).
    rewriteMetadata(defaultModelPath, old, 'doc["preprocessing"]["decode"].update(formats=["JPEG", "PNG", "WEBP"], cmyk="reject")', 'old');
    fs.writeFileSync(gif, await sharp(photo('chelsea.png')).gif().toBuffer());
    fs.writeFileSync(cmyk, await sharp(photo('chelsea.png')).toColourspace('cmyk').jpeg().toBuffer());
    const model = await choripan.load(old, { workers: 1 });
    try {
      for (const file of [gif, cmyk]) {
        const error = await rejection(model.predict(fs.readFileSync(file)));
        assert.equal(error.code, 'E_UNSUPPORTED_FORMAT');
        assert.match(error.message, /decode policy/);
        const python = spawnSync(env.python, ['-m', 'choripan', 'predict', '--model', old, file], { encoding: 'utf8' });
        assert.equal(python.status, 2);
        assert.match(python.stderr, /E_UNSUPPORTED_FORMAT/);
      }
    } finally {
      await model.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('SVG is never rendered', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>');
    const error = await rejection(choripan.predict(svg));
    assert.equal(error.code, 'E_UNSUPPORTED_FORMAT');
  });

  test('an image 200 times wider than high → E_INVALID_ARGUMENT from the core', async () => {
    const strip = await sharp({ create: { width: 2000, height: 10, channels: 3, background: '#808080' } }).png().toBuffer();
    const error = await rejection(choripan.predict(strip));
    assert.equal(error.code, 'E_INVALID_ARGUMENT');
    assert.match(error.message, /aspect ratio/);
  });

  test('a missing model file → E_MODEL_LOAD naming the path', async () => {
    const error = await rejection(choripan.load('/nonexistent/model.pt'));
    assert.equal(error.code, 'E_MODEL_LOAD');
    assert.match(error.message, /\/nonexistent\/model\.pt/);
    assert.match(error.stack, /api\.test\.js/, 'the stack points at the caller');
  });
});

describe('load() and Model', () => {
  let model;
  after(() => model?.dispose());

  test('loads an artifact with its metadata', async () => {
    model = await choripan.load(defaultModelPath, { maxBatch: 4, workers: 1 });
    assert.equal(model.name, 'efficientnet-lite0');
    assert.equal(model.labels.length, 1000);
    assert.equal(model.metadata.format, 'choripan.artifact');
    assert.equal(model.metadata.preprocessing.crop, 224);
    assert.equal(model.metadata.output.kind, 'probabilities');
  });

  test('predict on a loaded model matches the default predict()', async () => {
    const same = await choripan.load(choripan.DEFAULT_MODEL_PATH);
    const [a, b] = await Promise.all([same.predict(photo('coffee.png')), choripan.predict(photo('coffee.png'))]);
    await same.dispose();
    assert.deepEqual(a, b);
  });

  test("loneBatch: which of a package's models runs a batch of one, as its warm-up timed them; null otherwise", async () => {
    const timed = await choripan.load(defaultPackagePath, { workers: 1 });
    const untimed = await choripan.load(defaultPackagePath, { workers: 1, warmup: false });
    const traced = await choripan.load(defaultModelPath, { workers: 1 });
    try {
      const { model: chosen, singleMs, batchedMs } = timed.loneBatch;
      assert.ok(Object.isFrozen(timed.loneBatch));
      assert.ok(singleMs > 0 && batchedMs > 0);
      // The any-batch model only where the batch-1 model is clearly slower (docs/runtime.md).
      assert.equal(chosen, singleMs <= 1.5 * batchedMs ? 'batch1' : 'model');
      assert.equal(untimed.loneBatch, null);
      assert.equal(traced.loneBatch, null, 'TorchScript has one model');
    } finally {
      await Promise.all([timed.dispose(), untimed.dispose(), traced.dispose()]);
    }
  });

  test('the default model is the AOTInductor package that setup compiled, the TorchScript one its twin', async () => {
    assert.equal(choripan.DEFAULT_MODEL_PATH, defaultPackagePath);
    const [a, b] = await Promise.all([model.predict(photo('coffee.png')), choripan.predict(photo('coffee.png'))]);
    assert.deepEqual(a.top.map((t) => t.label), b.top.map((t) => t.label));
    for (const [i, t] of a.top.entries()) assert.ok(Math.abs(t.probability - b.top[i].probability) < 1e-5);
  });

  test('an aborted signal rejects with E_ABORTED', async () => {
    const error = await rejection(model.predict(photo('coffee.png'), { signal: AbortSignal.abort() }));
    assert.equal(error.code, 'E_ABORTED');
  });

  test('a signal that aborts while sharp decodes rejects at once, and nothing is queued', async () => {
    const sharp = require('sharp');
    // Turned by EXIF: sharp decodes it, not the core.
    const large = await sharp(photo('chelsea.png')).resize(6000, 4000).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const before = model.stats().requests;
    const error = await rejection(model.predict(large, { signal: AbortSignal.timeout(30) }));
    assert.equal(error.code, 'E_ABORTED');
    await new Promise((resolve) => setTimeout(resolve, 1500)); // the decode finishes in the background
    assert.equal(model.stats().requests, before);
  });

  test('a signal that aborts while the core decodes a large JPEG rejects at once, and it never runs', async () => {
    const sharp = require('sharp');
    const large = await sharp(photo('chelsea.png')).resize(6000, 4000).jpeg().toBuffer(); // over kOffWorkerPixels
    const before = model.stats();
    const started = performance.now();
    const error = await rejection(model.predict(large, { signal: AbortSignal.timeout(30) }));
    assert.equal(error.code, 'E_ABORTED');
    assert.ok(performance.now() - started < 500, `rejected after ${performance.now() - started} ms`);
    let after = model.stats();
    for (const give = performance.now() + 5000; after.pendingBytes > 0 && performance.now() < give;) {
      await new Promise((resolve) => setTimeout(resolve, 20)); // until the preprocessing thread lets it go
      after = model.stats();
    }
    assert.deepEqual([after.requests, after.failed, after.completed, after.batches, after.queued, after.pendingBytes],
      [before.requests + 1, before.failed + 1, before.completed, before.batches, 0, 0]);
  });

  test('stats() counts requests', async () => {
    const before = model.stats().requests;
    await model.predict(photo('coffee.png'));
    const stats = model.stats();
    assert.equal(stats.requests, before + 1);
    assert.ok(stats.batches >= 1);
    assert.equal(stats.queued, 0);
  });

  test('after dispose(), predict rejects with E_DISPOSED', async () => {
    const disposing = model.dispose();
    assert.equal(model.dispose(), disposing, 'a second call waits for the same disposal');
    await disposing;
    assert.equal(model.disposed, true);
    const error = await rejection(model.predict(photo('coffee.png')));
    assert.equal(error.code, 'E_DISPOSED');
    await model.dispose(); // idempotent
  });
});

describe('topIndices() and availableCores()', () => {
  test('topIndices() ranks a probabilities() row as predict() ranks its top; ties go to the lower index', async () => {
    const model = await choripan.getDefaultModel();
    const bytes = photo('coffee.png');
    const [row, answer] = await Promise.all([model.probabilities(bytes), model.predict(bytes, { topK: 3 })]);
    const ranked = choripan.topIndices(row, 3).map(([index, probability]) => ({ label: model.labels[index], probability }));
    assert.deepEqual(ranked, answer.top);
    assert.deepEqual(choripan.topIndices([0.1, 0.6, 0.3, 0.6], 9), [[1, 0.6], [3, 0.6], [2, 0.3], [0, 0.1]]);
  });

  test('topIndices() refuses a row that is not numbers (TypeError), and a k that is not a positive integer (RangeError when a number), with E_INVALID_ARGUMENT', () => {
    for (const [args, kind, message] of [
      [['0.5', 1], TypeError, /^Expected a Float32Array or an array of numbers for probabilities but received "0.5" of type string$/],
      [[[0.5, '0.5'], 1], TypeError, /for probabilities but received Array of type object$/],
      [[[0.5], '3'], TypeError, /^Expected a positive integer for k but received "3" of type string$/],
      [[[0.5], 0], RangeError, /^Expected a positive integer for k but received 0 of type number$/],
      [[new Float32Array(2), 1.5], RangeError, /for k but received 1.5 of type number$/],
    ]) {
      assert.throws(() => choripan.topIndices(...args), (error) => error instanceof kind && error instanceof choripan.ChoripanError &&
        error.code === 'E_INVALID_ARGUMENT' && message.test(error.message));
    }
  });

  test('availableCores() counts the cores that workers: 0 gives a model: a worker on each for a package, one on all for TorchScript', async () => {
    const cores = choripan.availableCores();
    assert.ok(Number.isInteger(cores) && cores >= 1, String(cores));
    for (const [artifact, schedule] of [[defaultPackagePath, [cores, 1]], [defaultModelPath, [1, cores]]]) {
      const model = await choripan.load(artifact, { warmup: false });
      try {
        const { workers, intraOpThreads } = model.stats();
        assert.deepEqual([workers, intraOpThreads], schedule, artifact);
      } finally {
        await model.dispose();
      }
    }
  });
});

describe('module resolution', () => {
  test("import('choripan') resolves to the same API", async () => {
    const imported = await import('choripan');
    assert.equal(imported.default.predict, choripan.predict);
    assert.equal(typeof imported.load, 'function');
  });
});

test("require('choripan') loads none of the service's packages: a library user pays for no server", () => {
  const script = `require('choripan');
    const loaded = Object.keys(require.cache).map((file) => file.split('/node_modules/')[1]?.split('/')[0]).filter(Boolean);
    console.log(JSON.stringify([...new Set(loaded)]));`;
  const run = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const loaded = JSON.parse(run.stdout);
  assert.ok(loaded.includes('sharp'), loaded.join(' ')); // the probe sees packages at all
  for (const server of ['express', 'multer', 'pino', 'prom-client', 'commander', 'cors', '@opentelemetry']) {
    assert.ok(!loaded.includes(server), `${server} is loaded by require('choripan')`);
  }
});
