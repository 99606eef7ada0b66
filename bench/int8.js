'use strict';
// node bench/int8.js — int8 against float32 and against ONNX Runtime's own int8, side by side (issue 21).
//
// The default model four ways, each in its own child, taking turns (A B A B) at concurrency 1 and 8:
// choripan serving the float32 package (models/default.pt2) and its int8 export (`--quantize int8`,
// calibrated on scikit-image's photos), onnxruntime-node + sharp on the ONNX twin and on ONNX Runtime's
// quantize_static of it, calibrated on the same photos (bench/onnx_int8.py). Prints the ratios the
// issue sets as goals and writes bench/results/int8.json.
//
//   node bench/int8.js            the full run
//   node bench/int8.js --smoke    a few requests of each: checks that the harness works
//
// Takes bench/run.js's flags (--rounds, --requests, --out). A benchmark, not a test: compare rows of one run.

const fs = require('node:fs');
const path = require('node:path');
const { settings, env, artifacts, outDir, log, table, python, photo, onnxTwin, nodeChild, interleave, summarise } =
  require('./run');

const calibration = path.join(env.sitePackages, 'skimage', 'data');

/** `make(file)` unless `file` is newer than everything it is made from. */
function fresh(file, sources, make) {
  const newest = Math.max(...sources.map((source) => fs.statSync(source).mtimeMs));
  if (!fs.existsSync(file) || fs.statSync(file).mtimeMs < newest) make(file);
  return file;
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const photoFile = await photo();
  // scikit-image's photos are mostly not of ImageNet's classes: the bounds they allow (docs/export.md).
  const int8 = fresh(path.join(outDir, 'default-int8.pt2'), [artifacts.aoti], (file) => log(python(
    ['-m', 'choripan', 'default', '--out', file, '--quantize', 'int8', '--calibration', calibration,
      '--min-agreement', '0', '--max-prob-diff', '0.5']).trim()));
  const onnx = onnxTwin();
  const metadata = JSON.stringify(JSON.parse(python(['-m', 'choripan', 'inspect', '--json', artifacts.torchscript])).metadata);
  const metadataFile = path.join(outDir, 'default.metadata.json');
  fs.writeFileSync(metadataFile, metadata);
  const onnxInt8 = fresh(path.join(outDir, 'default-int8.onnx'), [onnx], (file) => log(python(
    [path.join(__dirname, 'onnx_int8.py'), '--model', onnx, '--metadata', metadataFile, '--calibration', calibration,
      '--out', file]).trim()));

  const children = [
    nodeChild('choripan (aoti, float32)', 'choripan', artifacts.aoti, photoFile),
    nodeChild('choripan (aoti, int8)', 'choripan', int8, photoFile),
    nodeChild('onnxruntime-node + sharp (float32)', 'onnxruntime', onnx, photoFile, { metadata }),
    nodeChild('onnxruntime-node + sharp (int8)', 'onnxruntime', onnxInt8, photoFile, { metadata }),
  ];
  const concurrencies = [1, 8];
  log(`in-process: ${children.map((c) => c.name).join(', ')}`);
  const rows = summarise(await interleave(children, concurrencies, settings.requests, settings.rounds));
  table(rows, [
    ['system', (r) => r.system], ['conc.', (r) => r.concurrency], ['p50 ms', (r) => r.p50_ms.toFixed(1)],
    ['p99 ms', (r) => r.p99_ms.toFixed(1)], ['images/s', (r) => r.throughput_per_s.toFixed(1)],
    ['RSS MB', (r) => r.rss_mb.toFixed(0)],
  ]);
  const row = (system, concurrency) => rows.find((r) => r.system === system && r.concurrency === concurrency);
  const throughput = (system) => row(system, 8).throughput_per_s;
  const [fp32, mine, ort32, ort8] = children.map((c) => c.name);
  const goals = [
    { goal: `throughput at concurrency 8, ${mine} / ${fp32}`, ratio: throughput(mine) / throughput(fp32), target: '>= 1.5' },
    { goal: `throughput at concurrency 8, ${mine} / ${ort8}`, ratio: throughput(mine) / throughput(ort8), target: '> 1.0' },
    { goal: `throughput at concurrency 8, ${ort8} / ${ort32}`, ratio: throughput(ort8) / throughput(ort32), target: '' },
    { goal: `p50 at concurrency 1, ${mine} / ${ort8}`, ratio: row(mine, 1).p50_ms / row(ort8, 1).p50_ms, target: '' },
  ];
  console.log('');
  table(goals, [['goal', (g) => g.goal], ['ratio', (g) => g.ratio.toFixed(3)], ['target', (g) => g.target]]);
  const json = path.join(outDir, 'int8.json');
  const quantization = JSON.parse(python(['-m', 'choripan', 'inspect', '--json', int8])).metadata.quantization;
  fs.writeFileSync(json, `${JSON.stringify({ date: new Date().toISOString(), settings, quantization, rows, goals }, null, 2)}\n`);
  log(`wrote ${path.relative(process.cwd(), json)}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
