'use strict';
// npm run bench:native — a benchmark, not a test: prints tables and writes bench/results/native.json.
//
// 1. Forward-only through the C++ core vs the same artifact in Python, same threads (bench/forward.py).
// 2. Node predict() on a real photo at concurrency 1, 8 and 32: latency p50/p99, throughput, mean batch
//    size, event-loop delay p99.
// The machine may be small and shared: compare rows measured in the same run, not across runs.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { monitorEventLoopDelay } = require('node:perf_hooks');
const { spawnSync } = require('node:child_process');
const choripan = require('choripan');
const { root, recorded, probe } = require('../scripts/environment');

const env = recorded() ?? probe();
const modelPath = process.env.CHORIPAN_MODEL ?? path.join(root, 'models', 'default.pt');
const photo = fs.readFileSync(path.join(env.sitePackages, 'skimage', 'data', 'chelsea.png'));
const threads = Number(process.env.BENCH_THREADS ?? os.availableParallelism());
const requests = Number(process.env.BENCH_REQUESTS ?? 240);

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1)))];
}

function table(rows, columns) {
  const widths = columns.map(([title, get]) => Math.max(title.length, ...rows.map((r) => String(get(r)).length)));
  const line = (cells) => cells.map((c, i) => String(c).padStart(widths[i])).join('  ');
  console.log(line(columns.map(([title]) => title)));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(columns.map(([, get]) => get(row))));
}

function forwardOnly() {
  const run = spawnSync(env.python, [path.join(__dirname, 'forward.py'), '--model', modelPath, '--threads', String(threads)],
    { encoding: 'utf8', cwd: root });
  if (run.status !== 0) throw new Error(`bench/forward.py failed: ${run.stderr}`);
  return JSON.parse(run.stdout.trim().split('\n').pop());
}

async function predictAt(concurrency, options) {
  const model = await choripan.load(modelPath, options);
  await Promise.all(Array.from({ length: 8 }, () => model.predict(photo))); // warm sharp and the pool
  const before = model.stats();
  const latencies = [];
  const delay = monitorEventLoopDelay({ resolution: 5 });
  let next = 0;
  const started = performance.now();
  delay.enable();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < requests) {
      next++;
      const t = performance.now();
      await model.predict(photo);
      latencies.push(performance.now() - t);
    }
  }));
  delay.disable();
  const seconds = (performance.now() - started) / 1000;
  const after = model.stats();
  await model.dispose();
  latencies.sort((a, b) => a - b);
  return {
    concurrency,
    maxBatch: options.maxBatch,
    requests: latencies.length,
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
    throughput_per_s: latencies.length / seconds,
    mean_batch: (after.requests - before.requests) / Math.max(1, after.batches - before.batches),
    event_loop_p99_ms: delay.percentile(99) / 1e6,
  };
}

async function main() {
  console.log(`choripan native benchmark: ${os.cpus()[0]?.model ?? 'cpu'} ×${os.availableParallelism()}, ` +
    `libtorch threads ${threads}, node ${process.version}\n`);

  const forward = forwardOnly();
  console.log('Forward pass only (random input, same process, interleaved)');
  table(forward, [
    ['path', (r) => r.path], ['batch', (r) => r.batch], ['threads', (r) => r.threads],
    ['median ms', (r) => r.median_ms.toFixed(1)], ['min ms', (r) => r.min_ms.toFixed(1)],
    ['images/s', (r) => r.images_per_s.toFixed(1)],
  ]);
  const ratio = (batch) => {
    const [c, p] = ['C++ core (choripan_core)', 'Python torch.jit.load'].map((name) => forward.find((r) => r.path === name && r.batch === batch));
    return c && p ? (p.median_ms / c.median_ms).toFixed(2) : 'n/a';
  };
  console.log(`Python time / C++ core time: batch 1 ${ratio(1)}, batch 8 ${ratio(8)}\n`);

  const predict = [];
  for (const concurrency of [1, 8, 32]) {
    predict.push(await predictAt(concurrency, { maxBatch: 8, intraOpThreads: threads }));
  }
  for (const maxBatch of [2, 1]) predict.push(await predictAt(32, { maxBatch, intraOpThreads: threads }));
  console.log(`Node predict() on chelsea.png (decode + preprocess + forward), ${requests} requests per row`);
  table(predict, [
    ['concurrency', (r) => r.concurrency], ['maxBatch', (r) => r.maxBatch],
    ['p50 ms', (r) => r.p50_ms.toFixed(1)], ['p99 ms', (r) => r.p99_ms.toFixed(1)],
    ['req/s', (r) => r.throughput_per_s.toFixed(1)], ['mean batch', (r) => r.mean_batch.toFixed(2)],
    ['loop delay p99 ms', (r) => r.event_loop_p99_ms.toFixed(1)],
  ]);
  const batched = predict.find((r) => r.concurrency === 32 && r.maxBatch === 8);
  const single = predict.find((r) => r.concurrency === 32 && r.maxBatch === 1);
  console.log(`Throughput at concurrency 32, maxBatch 8 / maxBatch 1: ${(batched.throughput_per_s / single.throughput_per_s).toFixed(2)}`);

  const out = path.join(__dirname, 'results', 'native.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), cpus: os.availableParallelism(), threads, forward, predict }, null, 2)}\n`);
  console.log(`\nwrote ${path.relative(root, out)}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
