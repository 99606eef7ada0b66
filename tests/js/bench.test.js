'use strict';
// The benchmark harness works (`npm run bench -- --smoke`): every system answers the photo correctly, the
// goals are computed and the chart is drawn. Its figures are not checked: a benchmark is not a timed test.
// LitServe and TorchServe run where they are installed (`pip install -e '.[pyservers]'`, and Java), which
// CI's install leaves out: there the run must say why it skipped each, and this test says which it covered.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { test } = require('node:test');
const { root, CAT_LABELS } = require('./helpers');

test('npm run bench -- --smoke runs every system and writes the results and a chart', (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-bench-'));
  const run = spawnSync(process.execPath, [path.join(root, 'bench', 'run.js'), '--smoke', '--out', out],
    { cwd: root, encoding: 'utf8', timeout: 600_000 });
  assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
  const results = JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8'));

  const systems = new Set(results.in_process.map((row) => row.system));
  assert.deepEqual([...systems].sort(), [
    'C++ core (choripan_core)', 'PyTorch eager (Python)', 'choripan (aoti)', 'choripan (prebuilt .pt2, x86-64-v3)',
    'choripan (torchscript)', 'onnxruntime-node + sharp',
  ]);
  for (const row of results.in_process) {
    assert.ok(row.p50_ms > 0 && row.throughput_per_s > 0 && row.requests > 0, JSON.stringify(row));
    assert.ok(CAT_LABELS.includes(row.label), JSON.stringify(row));
  }
  const servers = results.http.map((row) => row.system);
  const skipped = results.http_skipped.map((row) => row.system);
  const ran = (name) => !skipped.includes(name);
  assert.deepEqual(servers, [
    'choripan server (Express, .pt2)', 'Flask + PIL + PyTorch eager',
    ...(ran('LitServe') ? ['LitServe (.pt2)'] : []), ...(ran('TorchServe') ? ['TorchServe (.pt)'] : []),
    ...(ran('LitServe') ? ['choripan server (Express, .pt)', 'LitServe (.pt)'] : []),
  ]);
  for (const { system, reason } of results.http_skipped) {
    assert.ok(['LitServe', 'TorchServe'].includes(system), system);
    assert.ok(run.stdout.includes(`${system} skipped: ${reason}`), `${system}: ${reason}`);
  }
  for (const row of results.http) {
    assert.ok(row.requests > 0 && row.rss_mb > 0 && CAT_LABELS.includes(row.label), JSON.stringify(row));
  }
  assert.ok(results.cold_start.require_load_warmup_ms > 0);
  // Two goals (throughput, p99) for each comparison with a Python model server: LitServe twice, TorchServe once.
  assert.equal(results.goals.length, 10 + 2 * ((ran('LitServe') ? 2 : 0) + (ran('TorchServe') ? 1 : 0)));
  for (const goal of results.goals) assert.ok(Number.isFinite(goal.ratio) && typeof goal.pass === 'boolean', goal.goal);
  assert.match(run.stdout, /goal\s+ratio\s+target/);

  const chart = fs.readFileSync(path.join(out, 'latest.png'));
  assert.deepEqual([...chart.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(chart.length > 10_000);
  fs.rmSync(out, { recursive: true, force: true });
  t.diagnostic(`Python model servers: ${['LitServe', 'TorchServe'].map((name) => `${name} ${ran(name) ? 'covered' : 'skipped'}`).join(', ')}`);
});
