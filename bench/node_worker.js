'use strict';
// A benchmark child hosting one Node system; bench/run.js drives it over IPC, one run at a time, so that
// the systems it compares take turns on the machine (A B A B) without sharing a process or its threads.
//
//   choripan     require('choripan').load(model).predict(jpeg)
//   onnxruntime  the peer: sharp decodes, resizes and crops, JS normalises, onnxruntime-node runs the ONNX twin

const fs = require('node:fs');
const os = require('node:os');
const { parseArgs } = require('node:util');
const { monitorEventLoopDelay } = require('node:perf_hooks');

const { values: args } = parseArgs({
  options: {
    system: { type: 'string' },
    model: { type: 'string' },
    photo: { type: 'string' },
    options: { type: 'string', default: '{}' },
  },
});

/** The peer, written as a user of onnxruntime-node + sharp would, doing choripan's job. */
async function onnxruntimePeer(onnxPath, metadata) {
  const ort = require('onnxruntime-node');
  const sharp = require('sharp');
  const session = await ort.InferenceSession.create(onnxPath, {
    intraOpNumThreads: os.availableParallelism(),
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const { resize, crop, mean, std } = metadata.preprocessing;
  const plane = crop * crop;
  return async (bytes) => {
    const { data, info } = await sharp(bytes).rotate().resize(resize, resize, { fit: 'outside' }).removeAlpha()
      .raw().toBuffer({ resolveWithObject: true });
    const top = Math.round((info.height - crop) / 2);
    const left = Math.round((info.width - crop) / 2);
    const input = new Float32Array(3 * plane);
    for (let y = 0; y < crop; y++) {
      for (let x = 0; x < crop; x++) {
        const source = ((top + y) * info.width + left + x) * 3;
        for (let c = 0; c < 3; c++) input[c * plane + y * crop + x] = (data[source + c] / 255 - mean[c]) / std[c];
      }
    }
    const output = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', input, [1, 3, crop, crop]) });
    const probabilities = output[session.outputNames[0]].data;
    const best = [...probabilities.keys()].sort((a, b) => probabilities[b] - probabilities[a]).slice(0, 5);
    return { label: metadata.labels[best[0]], probability: probabilities[best[0]] };
  };
}

async function system() {
  if (args.system === 'choripan') {
    const model = await require('choripan').load(args.model, JSON.parse(args.options));
    return { predict: (bytes) => model.predict(bytes), stats: () => model.stats() };
  }
  if (args.system === 'onnxruntime') {
    const metadata = JSON.parse(JSON.parse(args.options).metadata);
    return { predict: await onnxruntimePeer(args.model, metadata) };
  }
  throw new Error(`unknown system ${args.system}`);
}

async function run({ predict, stats }, photo, { concurrency, requests }) {
  const before = stats?.();
  const latencies = [];
  const delay = monitorEventLoopDelay({ resolution: 5 });
  let next = 0;
  const started = performance.now();
  delay.enable();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < requests) {
      next++;
      const t = performance.now();
      await predict(photo);
      latencies.push(performance.now() - t);
    }
  }));
  delay.disable();
  const seconds = (performance.now() - started) / 1000;
  const after = stats?.();
  return {
    latencies_ms: latencies,
    seconds,
    mean_batch: after ? (after.requests - before.requests) / Math.max(1, after.batches - before.batches) : null,
    event_loop_p99_ms: delay.percentile(99) / 1e6,
    rss_bytes: process.memoryUsage().rss,
  };
}

async function main() {
  const photo = fs.readFileSync(args.photo);
  const subject = await system();
  const first = await subject.predict(photo);
  for (let i = 0; i < 8; i++) await subject.predict(photo); // warm the pools and the caches
  process.send({ ready: true, label: first.label ?? null });
  process.on('message', async (message) => {
    if (!message.run) process.exit(0);
    process.send(await run(subject, photo, message.run));
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
