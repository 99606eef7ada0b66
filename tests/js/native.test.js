'use strict';
// The native runtime under load and misuse: batching, backpressure, lifecycle, load errors, threads.

const assert = require('node:assert/strict');
const { test, describe, after } = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { monitorEventLoopDelay } = require('node:perf_hooks');
const { Worker } = require('node:worker_threads');
const { spawnSync } = require('node:child_process');
const choripan = require('choripan');
const { native } = require('../../js/binding');
const { photo, defaultModelPath, CAT_LABELS, rejection, root, env } = require('./helpers');

const cat = photo('chelsea.png');

function codeOf(promise) {
  return promise.then(() => 'ok', (error) => error.code);
}

describe('concurrency', () => {
  test('200 concurrent predictions: all correct, event loop free, requests batched', async () => {
    const model = await choripan.load(defaultModelPath);
    try {
      const histogram = monitorEventLoopDelay({ resolution: 5 });
      histogram.enable();
      const results = await Promise.all(Array.from({ length: 200 }, () => model.predict(cat)));
      histogram.disable();
      assert.ok(results.every((r) => CAT_LABELS.includes(r.label)));
      const probabilities = results.map((r) => r.probability);
      const spread = Math.max(...probabilities) - Math.min(...probabilities);
      assert.ok(spread < 1e-5, `batch sizes changed the answer by ${spread}`);
      const p99 = histogram.percentile(99) / 1e6;
      assert.ok(p99 < 50, `event-loop delay p99 ${p99.toFixed(1)} ms`);
      const stats = model.stats();
      assert.equal(stats.requests, 200);
      assert.equal(stats.completed, 200);
      assert.ok(stats.meanBatchSize > 1.5, `mean batch size ${stats.meanBatchSize}`);
      assert.ok(stats.latencyP99Ms >= stats.latencyP50Ms && stats.latencyP50Ms > 0);
      assert.deepEqual([stats.queued, stats.inflight], [0, 0]);
    } finally {
      await model.dispose();
    }
  });

  test('loading does not block the event loop', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const model = await choripan.load(defaultModelPath, { maxBatch: 8 });
    clearInterval(timer);
    assert.ok(ticks >= 5, `only ${ticks} timer ticks while loading`);
    await model.dispose();
  });

  test('past maxQueue, calls reject at once with E_QUEUE_FULL', async () => {
    const model = await choripan.load(defaultModelPath, { maxQueue: 2, maxBatch: 1 });
    try {
      const codes = await Promise.all(Array.from({ length: 50 }, () => codeOf(model.predict(cat))));
      assert.ok(codes.includes('ok') && codes.includes('E_QUEUE_FULL'), codes.join());
      assert.deepEqual(new Set(codes), new Set(['ok', 'E_QUEUE_FULL']));
      assert.equal(model.stats().rejected, codes.filter((c) => c === 'E_QUEUE_FULL').length);
      assert.equal(model.stats().requests, codes.filter((c) => c === 'ok').length, 'refused calls never reached the queue');
    } finally {
      await model.dispose();
    }
  });

  test('probabilitiesMany() admits its inputs together or refuses them together, before decoding any', async () => {
    const model = await choripan.load(defaultModelPath, { maxQueue: 4, maxBatch: 1, workers: 1 });
    try {
      const three = model.probabilitiesMany([cat, cat, cat]); // PNGs: announced while sharp decodes them
      const { requests, rejected } = model.stats();
      const refused = await rejection(model.probabilitiesMany([cat, cat]));
      assert.equal(refused.code, 'E_QUEUE_FULL');
      assert.deepEqual([model.stats().requests, model.stats().rejected], [requests, rejected + 2], 'neither reached the queue');
      const tooMany = await rejection(model.probabilitiesMany([cat, cat, cat, cat, cat]));
      assert.equal(tooMany.code, 'E_TOO_LARGE');
      assert.match(tooMany.message, /^5 images in one call; the queue holds 4 \(maxQueue\)$/);
      assert.equal((await three).length, 3);
      const four = await model.probabilitiesMany([cat, cat, cat, new Float32Array(3 * 224 * 224)]);
      assert.equal(four.length, 4);
      assert.deepEqual(four[0], four[2]);
    } finally {
      await model.dispose();
    }
  });

  test('a full queue refuses before decoding: a 100-megapixel PNG is turned away faster than it decodes', async () => {
    const sharp = require('sharp');
    const huge = await sharp({ create: { width: 10000, height: 10000, channels: 4, background: '#0000' } }).png().toBuffer();
    const model = await choripan.load(defaultModelPath, { maxQueue: 4, workers: 1 });
    try {
      let started = performance.now();
      await sharp(huge, { limitInputPixels: false }).raw().toBuffer();
      const decodeMs = performance.now() - started;
      const filling = Array.from({ length: 4 }, () => model.predict(cat)); // announced at once: the queue is full
      started = performance.now();
      assert.equal(await codeOf(model.predict(huge)), 'E_QUEUE_FULL');
      const refusedMs = performance.now() - started;
      assert.ok(refusedMs < decodeMs / 5, `refused in ${refusedMs.toFixed(1)} ms; decoding takes ${decodeMs.toFixed(0)} ms`);
      await Promise.all(filling);
    } finally {
      await model.dispose();
    }
  });
});

describe('memory', () => {
  test('decoded pixels waiting past maxPendingBytes are refused with E_QUEUE_FULL before decoding', async () => {
    // chelsea.png decodes to 451 × 300 × 3 = 406 KB: three of them fit in the minimum budget of 1 MiB.
    const model = await choripan.load(defaultModelPath, { maxPendingBytes: 2 ** 20, maxBatch: 1 });
    try {
      const codes = await Promise.all(Array.from({ length: 12 }, () => codeOf(model.predict(cat))));
      assert.deepEqual(new Set(codes), new Set(['ok', 'E_QUEUE_FULL']), codes.join());
      assert.ok(model.stats().requests < 12, 'refused calls never reached the queue');
      assert.equal((await model.predict(cat)).label.length > 0, true, 'the budget is given back');
    } finally {
      await model.dispose();
    }
  });

  test('probabilitiesMany(): inputs that fit maxPendingBytes only apart are refused with E_TOO_LARGE', async () => {
    const model = await choripan.load(defaultModelPath, { maxPendingBytes: 2 ** 20, maxBatch: 1 });
    try {
      const together = await rejection(model.probabilitiesMany([cat, cat, cat]));
      assert.equal(together.code, 'E_TOO_LARGE');
      assert.match(together.message, /maxPendingBytes/);
      const two = model.probabilitiesMany([cat, cat]);
      assert.equal((await rejection(model.probabilitiesMany([cat, cat]))).code, 'E_QUEUE_FULL', 'not while two are waiting');
      assert.equal((await two).length, 2);
      assert.equal((await model.probabilitiesMany([cat, cat])).length, 2, 'the budget is given back');
      assert.equal(model.stats().pendingBytes, 0);
    } finally {
      await model.dispose();
    }
  });

  test('a large transparent PNG is composited and answers', async () => {
    const sharp = require('sharp');
    // 4000 × 3000 RGBA from the cat photo, half transparent: 48 MB decoded, past the preprocessing thread's threshold.
    const rgba = await sharp(cat).resize(4000, 3000).ensureAlpha(0.5).png({ compressionLevel: 1 }).toBuffer();
    const result = await choripan.predict(rgba);
    assert.ok(CAT_LABELS.includes(result.label), result.label);
  });
});

describe('cancellation', () => {
  test('an aborted queued request is withdrawn and never reaches the forward pass', async () => {
    const model = await choripan.load(defaultModelPath, { maxBatch: 1, maxDelayMs: 0 });
    try {
      const controller = new AbortController();
      const ahead = Array.from({ length: 6 }, () => model.predict(cat));
      const victim = model.predict(cat, { signal: controller.signal });
      while (model.stats().requests < 7) await new Promise((resolve) => setTimeout(resolve, 1));
      controller.abort(); // the victim is queued behind the others
      assert.equal((await rejection(victim)).code, 'E_ABORTED');
      await Promise.all(ahead);
      const stats = model.stats();
      assert.equal(stats.requests, 7);
      assert.equal(stats.completed, 6);
      assert.equal(stats.batches, 6, 'six forward passes of one: the withdrawn request never ran');
    } finally {
      await model.dispose();
    }
  });

  test('a deadline that passes in the queue rejects with E_TIMEOUT', async () => {
    const model = await choripan.load(defaultModelPath, { maxBatch: 1, maxDelayMs: 0 });
    try {
      const ahead = Array.from({ length: 8 }, () => model.predict(cat));
      const late = await rejection(model.predict(cat, { timeoutMs: 40 }));
      assert.equal(late.code, 'E_TIMEOUT');
      await Promise.all(ahead);
    } finally {
      await model.dispose();
    }
  });
});

describe('lifecycle', () => {
  test('dispose() with 50 in flight: results or E_DISPOSED only, later calls E_DISPOSED', async () => {
    const model = await choripan.load(defaultModelPath);
    const inflight = Array.from({ length: 50 }, () => codeOf(model.predict(cat)));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await model.dispose();
    const codes = await Promise.all(inflight);
    assert.deepEqual(new Set(codes.filter((c) => c !== 'ok')), codes.every((c) => c === 'ok') ? new Set() : new Set(['E_DISPOSED']));
    assert.ok(codes.includes('E_DISPOSED'), 'some were still queued');
    assert.equal(await codeOf(model.predict(cat)), 'E_DISPOSED');
  });

  test('dispose() right after the calls, before any was decoded', async () => {
    const model = await choripan.load(defaultModelPath);
    const inflight = Array.from({ length: 20 }, () => codeOf(model.predict(cat)));
    const disposed = model.dispose();
    assert.deepEqual(new Set(await Promise.all(inflight)), new Set(['E_DISPOSED']));
    await disposed;
  });

  test('the native dispose settles running batches and frees the workers', async () => {
    const model = await native().load(defaultModelPath, {
      maxBatch: 4, maxDelayMs: 2, maxQueue: 256, workers: 2, intraOpThreads: 1, device: 'cpu', warmup: true,
    });
    const sharp = require('sharp');
    const { data, info } = await sharp(cat).raw().toBuffer({ resolveWithObject: true });
    const submit = () => model.reserve({ count: 1, bytes: data.length }).submit({ pixels: data, ...info });
    const calls = Array.from({ length: 40 }, () => codeOf(submit()));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await model.dispose();
    const codes = await Promise.all(calls);
    assert.deepEqual(new Set(codes), new Set(['ok', 'E_DISPOSED']));
    assert.equal(model.disposed, true);
    assert.equal(await codeOf((async () => submit())()), 'E_DISPOSED');
  });

  test('a process with a loaded, never disposed model exits on its own', () => {
    const script = `require('choripan').load(${JSON.stringify(defaultModelPath)}).then((m) => m.predict(require('fs').readFileSync(${JSON.stringify(require('./helpers').photoPath('coffee.png'))}))).then((r) => console.log(r.label))`;
    const child = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'espresso');
  });

  test('process.exit() while batches run exits cleanly', async () => {
    // C's exit() must not tear libtorch down under a worker inside a forward pass.
    const script = (delay) => `
      const choripan = require('choripan');
      const bytes = require('fs').readFileSync(${JSON.stringify(require('./helpers').photoPath('chelsea.png'))});
      choripan.load(${JSON.stringify(defaultModelPath)}).then((model) => {
        for (let i = 0; i < 16; i++) model.predict(bytes).catch(() => {});
        setTimeout(() => process.exit(0), ${delay});
      });`;
    const { spawn } = require('node:child_process');
    const exits = await Promise.all([60, 110, 160, 210].map((delay) => new Promise((resolve) => {
      const child = spawn(process.execPath, ['-e', script(delay)], { cwd: root, stdio: 'ignore' });
      child.on('close', (status, signal) => resolve({ status, signal }));
    })));
    assert.deepEqual(exits, exits.map(() => ({ status: 0, signal: null })));
  });

  test('an uncaught exception while batches run exits with 1, not a crash', () => {
    const script = `
      const choripan = require('choripan');
      const bytes = require('fs').readFileSync(${JSON.stringify(require('./helpers').photoPath('chelsea.png'))});
      choripan.load(${JSON.stringify(defaultModelPath)}).then((model) => {
        for (let i = 0; i < 16; i++) model.predict(bytes).catch(() => {});
        setTimeout(() => { throw new Error('boom'); }, 120);
      });`;
    const child = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.signal, null);
    assert.equal(child.status, 1);
    assert.match(child.stderr, /boom/);
  });

  test('a model dropped without dispose() is collected without harm', () => {
    const script = `
      const choripan = require('choripan');
      (async () => {
        for (let i = 0; i < 3; i++) await choripan.load(${JSON.stringify(defaultModelPath)}, { warmup: false });
        for (let i = 0; i < 5; i++) { global.gc(); await new Promise((r) => setTimeout(r, 20)); }
        console.log('collected');
      })();`;
    const child = spawnSync(process.execPath, ['--expose-gc', '-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'collected');
  });
});

describe('model load errors', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-'));
  const random = path.join(dir, 'random.pt');
  fs.writeFileSync(random, crypto.randomBytes(64 * 1024));
  const truncated = path.join(dir, 'truncated.pt');
  const whole = fs.readFileSync(defaultModelPath);
  fs.writeFileSync(truncated, whole.subarray(0, whole.length / 2));
  const plain = path.join(dir, 'plain.pt');
  const made = spawnSync(env.python, ['-c',
    `import torch; torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), ${JSON.stringify(plain)})`]);
  assert.equal(made.status, 0, String(made.stderr));

  const cases = [
    ['random bytes', random, /random\.pt: it is not a well-formed TorchScript or \.pt2 archive/],
    ['a missing path', path.join(dir, 'missing.pt'), /missing\.pt: no such file/],
    ['a truncated file', truncated, /truncated\.pt: /],
    ['a folder', dir, /it is a directory, not a model file/],
    ['TorchScript without choripan metadata', plain, /no choripan metadata/],
  ];
  for (const [name, file, message] of cases) {
    test(`${name} → E_MODEL_LOAD naming the path and the reason`, async () => {
      const error = await rejection(choripan.load(file));
      assert.equal(error.code, 'E_MODEL_LOAD');
      assert.match(error.message, message);
    });
  }

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("device 'cuda' without CUDA → E_DEVICE", { skip: native().cudaAvailable() && 'a GPU is present' }, async () => {
    const error = await rejection(choripan.load(defaultModelPath, { device: 'cuda' }));
    assert.equal(error.code, 'E_DEVICE');
    assert.match(error.message, /CUDA is not available/);
  });
});

describe('worker threads', () => {
  const workerScript = `
    const { parentPort, workerData } = require('node:worker_threads');
    const choripan = require('choripan');
    choripan.load(workerData.model).then(async (model) => {
      const result = await model.predict(require('fs').readFileSync(workerData.photo));
      parentPort.postMessage(result.label);
      if (workerData.dispose) await model.dispose();
    });`;

  function runWorker(workerData) {
    return new Worker(workerScript, { eval: true, workerData });
  }

  test('a Worker loads the model and predicts', async () => {
    const worker = runWorker({ model: defaultModelPath, photo: require('./helpers').photoPath('chelsea.png'), dispose: true });
    const label = await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    assert.ok(CAT_LABELS.includes(label));
    assert.equal(await new Promise((resolve) => worker.once('exit', resolve)), 0);
  });

  test('two Workers at once, and the main thread too', async () => {
    const photoPath = require('./helpers').photoPath('coffee.png');
    const workers = [0, 1].map(() => runWorker({ model: defaultModelPath, photo: photoPath, dispose: true }));
    const labels = await Promise.all([
      ...workers.map((w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); })),
      choripan.predict(photo('coffee.png')).then((r) => r.label),
    ]);
    assert.deepEqual(labels, ['espresso', 'espresso', 'espresso']);
  });

  test('terminating Workers with live models and requests in flight does not crash', async () => {
    // Completions can reach a Worker that can no longer run JavaScript; whether they do depends on
    // timing, so three processes terminate Workers at staggered moments while competing for the CPU.
    const script = `
      const { Worker } = require('node:worker_threads');
      const code = \`
        const { parentPort, workerData } = require('node:worker_threads');
        require('choripan').load(workerData.model).then((model) => {
          const bytes = require('fs').readFileSync(workerData.photo);
          for (let i = 0; i < 30; i++) model.predict(bytes).catch(() => {});
          setTimeout(() => parentPort.postMessage('busy'), workerData.delay);
        });\`;
      (async () => {
        for (let i = 0; i < 6; i++) {
          const worker = new Worker(code, { eval: true, workerData: { ...${JSON.stringify({ model: defaultModelPath, photo: require('./helpers').photoPath('chelsea.png') })}, delay: 5 + 20 * i } });
          await new Promise((resolve) => worker.once('message', resolve));
          await worker.terminate();
        }
        console.log('survived');
      })();`;
    const { spawn } = require('node:child_process');
    const runs = [0, 1, 2].map(() => new Promise((resolve) => {
      const child = spawn(process.execPath, ['-e', script], { cwd: root });
      let output = '';
      child.stdout.on('data', (chunk) => { output += chunk; });
      child.stderr.on('data', (chunk) => { output += chunk; });
      child.on('close', (status, signal) => resolve({ status, signal, output }));
    }));
    for (const { status, signal, output } of await Promise.all(runs)) {
      assert.equal(signal, null, output);
      assert.equal(status, 0, output);
      assert.match(output, /survived/);
    }
    assert.ok(CAT_LABELS.includes((await choripan.predict(cat)).label), 'this process still serves');
  });
});
