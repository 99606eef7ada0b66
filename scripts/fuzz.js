'use strict';
// `npm run fuzz -- [--count N] [--seed S] [--model PATH]`: mutated JPEG, PNG, WebP, GIF, TIFF and AVIF
// files through predict(). Every answer must be a prediction or a ChoripanError with a code other than
// E_INTERNAL, the process must live, and its memory must stay bounded. Seeded: the same seed makes the
// same inputs, so a failure can be replayed. npm test runs 2,000; hunting bugs, run 100,000.

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const sharp = require('sharp');
const choripan = require('..');
const { recorded, probe } = require('./environment');

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '2000' },
    seed: { type: 'string', default: '1' },
    model: { type: 'string' },
    concurrency: { type: 'string', default: '8' },
  },
});
const count = Number(values.count);
const MAX_RSS_GROWTH_MB = 300;

/** mulberry32: a small seeded generator, so that a run can be replayed. */
function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Real photos, small, in every format the decode policy takes. */
async function seeds() {
  const env = recorded() ?? probe();
  const photos = ['chelsea.png', 'coffee.png', 'horse.png'].map((name) => path.join(env.sitePackages, 'skimage', 'data', name));
  const made = [];
  for (const photo of photos) {
    const small = sharp(photo).resize(96);
    made.push(await small.clone().jpeg().toBuffer(), await small.clone().png().toBuffer(), await small.clone().webp().toBuffer(),
      await small.clone().gif().toBuffer(), await small.clone().tiff().toBuffer(), await small.clone().avif().toBuffer(),
      await small.clone().toColourspace('cmyk').jpeg().toBuffer());
  }
  return made;
}

/** One mutation of `bytes`: flipped bits, changed bytes (the header's first), cut, duplicated or spliced runs. */
function mutate(bytes, random) {
  const out = Buffer.from(bytes);
  const at = (limit = out.length) => Math.floor(random() * Math.max(1, limit));
  switch (Math.floor(random() * 6)) {
    case 0: for (let i = 0, n = 1 + at(8); i < n; i++) out[at()] ^= 1 << at(8); return out;
    case 1: for (let i = 0, n = 1 + at(4); i < n; i++) out[at(64)] = at(256); return out; // the header
    case 2: return out.subarray(0, at());
    case 3: { const start = at(); const run = out.subarray(start, start + at(256)); return Buffer.concat([out.subarray(0, at()), run, out]); }
    case 4: { const value = [0, 0xff, 0x7f, 0x80][at(4)]; const start = at(); out.fill(value, start, Math.min(out.length, start + at(32))); return out; }
    default: return Buffer.concat([out.subarray(0, at()), Buffer.from(Array.from({ length: at(64) }, () => at(256)))]);
  }
}

async function main() {
  const random = generator(Number(values.seed));
  const model = await choripan.load(values.model ?? choripan.DEFAULT_MODEL_PATH, { maxQueue: 1_000_000 });
  const inputs = await seeds();
  const outcomes = {};
  const failures = [];
  const rssStart = process.memoryUsage().rss;
  let peak = rssStart;
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: Number(values.concurrency) }, async () => {
    while (next < count) {
      const index = next++;
      const input = mutate(inputs[Math.floor(random() * inputs.length)], random);
      try {
        const { label } = await model.predict(input);
        if (typeof label !== 'string') failures.push({ index, problem: 'an answer without a label' });
        outcomes.ok = (outcomes.ok ?? 0) + 1;
      } catch (error) {
        const code = error instanceof choripan.ChoripanError ? error.code : `not a ChoripanError: ${error}`;
        outcomes[code] = (outcomes[code] ?? 0) + 1;
        if (code === 'E_INTERNAL' || !(error instanceof choripan.ChoripanError)) {
          failures.push({ index, problem: `${code}: ${error.message}`, bytes: input.subarray(0, 32).toString('hex') });
        }
      }
      if (index % 200 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
  }));
  const stats = model.stats();
  await model.dispose();
  const growthMb = (Math.max(peak, process.memoryUsage().rss) - rssStart) / 2 ** 20;
  const leftover = stats.queued + stats.inflight + stats.pendingBytes;
  if (growthMb > MAX_RSS_GROWTH_MB) failures.push({ problem: `RSS grew by ${growthMb.toFixed(0)} MB` });
  if (leftover) failures.push({ problem: `the core still holds work: ${JSON.stringify(stats)}` });
  const summary = { count, seed: Number(values.seed), seconds: (performance.now() - started) / 1000, outcomes,
    rssGrowthMb: Math.round(growthMb), failures: failures.slice(0, 20) };
  console.log(JSON.stringify(summary, null, 1));
  if (failures.length) {
    fs.writeSync(2, `choripan fuzz: ${failures.length} failure(s); replay with --seed ${values.seed} --count ${count}\n`);
    process.exit(1);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
