'use strict';
// npm run bench — choripan against the field, side by side in one run, on one photo and one set of weights.
//
// In-process (each system in its own child, taking turns A B A B, at concurrency 1, 8 and 32):
//   choripan with each artifact format, onnxruntime-node + sharp on the ONNX twin of the same artifact,
//   choripan's C++ core from Python, PyTorch eager in Python (the seed's way).
// Over HTTP, under one load generator (autocannon): choripan's server against a seed-style Flask server and
// the model servers a Python user would pick, LitServe and TorchServe, where they are installed.
// Prints each goal of issues 7 and 21 as a ratio with pass or fail, writes bench/results/latest.json and a chart.
//
//   npm run bench                      the full run (several minutes)
//   npm run bench -- --smoke           a few requests of everything: checks that the harness works
//   npm run bench -- --sweep           choripan's options (maxBatch, workers × threads) at concurrency 1 and 8
//   npm run bench -- --sweep --busy N  the same beside N busy co-tenant processes (a shared node)
//   npm run bench -- --head-of-line    small requests alone, then while huge images keep arriving (p99)
//   npm run bench -- --tracing         the server without and with tracing (OTLP), A B A B: what a request pays
//   npm run bench -- --http            the HTTP comparison alone: choripan's server, Flask, LitServe, TorchServe
//
// A benchmark, not a test: the machine may be small and shared, so compare rows of one run.

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { fork, spawn, spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');
const readline = require('node:readline');
const autocannon = require('autocannon');
const sharp = require('sharp');
const { root, recorded, probe } = require('../scripts/environment');

const { values: flags } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    sweep: { type: 'boolean', default: false },
    'head-of-line': { type: 'boolean', default: false },
    tracing: { type: 'boolean', default: false },
    http: { type: 'boolean', default: false },
    busy: { type: 'string', default: '0' },
    rounds: { type: 'string' },
    requests: { type: 'string' },
    'http-seconds': { type: 'string' },
    out: { type: 'string', default: path.join(__dirname, 'results') },
  },
});
const settings = {
  rounds: Number(flags.rounds ?? (flags.smoke ? 1 : 3)),
  requests: Number(flags.requests ?? (flags.smoke ? 6 : 120)),
  concurrencies: flags.smoke ? [1, 8] : [1, 8, 32],
  httpSeconds: Number(flags['http-seconds'] ?? (flags.smoke ? 1 : 10)),
  connections: 8,
};
const env = recorded() ?? probe();
const models = path.join(root, 'models');
const artifacts = { torchscript: path.join(models, 'default.pt'), aoti: path.join(models, 'default.pt2') };
// What the prebuilt platform package ships: the default model compiled for any AVX2 CPU (x86-64-v3).
const { baselinePackage, CPU_BASELINE } = require('../scripts/default-models');
const PREBUILT = `choripan (prebuilt .pt2, ${CPU_BASELINE})`;
const { DEFAULT_MODEL_PATH } = require('choripan');
const outDir = path.resolve(flags.out);
const CAT_LABELS = ['tiger cat', 'Egyptian cat', 'tabby'];

function log(message) {
  console.log(`[bench] ${message}`);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function percentile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1)))];
}

function table(rows, columns) {
  const widths = columns.map(([title, get]) => Math.max(title.length, ...rows.map((r) => String(get(r)).length)));
  const line = (cells) => cells.map((c, i) => String(c).padStart(widths[i])).join('  ');
  console.log(line(columns.map(([title]) => title)));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(columns.map(([, get]) => get(row))));
}

function python(args, options = {}) {
  const run = spawnSync(env.python, args, { cwd: root, encoding: 'utf8', ...options });
  if (run.status !== 0) throw new Error(`${args.join(' ')} failed:\n${run.stderr}`);
  return run.stdout;
}

/** The photo every system classifies: scikit-image's cat (451×300) as a JPEG without metadata. */
async function photo() {
  const file = path.join(outDir, 'chelsea.jpg');
  if (!fs.existsSync(file)) {
    await sharp(path.join(env.sitePackages, 'skimage', 'data', 'chelsea.png')).jpeg({ quality: 90 }).toFile(file);
  }
  return file;
}

function onnxTwin() {
  const file = path.join(outDir, 'default.onnx');
  if (!fs.existsSync(file) || fs.statSync(file).mtimeMs < fs.statSync(artifacts.torchscript).mtimeMs) {
    log(python([path.join(__dirname, 'onnx_twin.py'), '--model', artifacts.torchscript, '--out', file]).trim());
  }
  return file;
}

/** `next()` resolves to the child's next message, in order; it rejects if the child exits first. */
function replies(child, subscribe) {
  const queue = [];
  let waiting = null;
  subscribe((message) => {
    if (waiting) {
      waiting.resolve(message);
      waiting = null;
    } else {
      queue.push(message);
    }
  });
  child.once('exit', (code) => waiting?.reject(new Error(`${child.spawnfile} exited with ${code}`)));
  return () => new Promise((resolve, reject) => {
    if (queue.length) return resolve(queue.shift());
    if (child.exitCode !== null) return reject(new Error(`${child.spawnfile} exited with ${child.exitCode}`));
    waiting = { resolve, reject };
  });
}

/** A child that runs one system; `run(concurrency, requests)` resolves to its measurements. */
function nodeChild(name, system, model, photoFile, options = {}, extraEnv = {}) {
  const child = fork(path.join(__dirname, 'node_worker.js'),
    ['--system', system, '--model', model ?? '', '--photo', photoFile, '--options', JSON.stringify(options)],
    { cwd: root, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...extraEnv } });
  const next = replies(child, (listener) => child.on('message', listener));
  return {
    name, pid: child.pid, ready: next(),
    run: (concurrency, requests) => (child.send({ run: { concurrency, requests } }), next()),
    stop: () => child.send({ stop: true }),
  };
}

function pythonChild(name, system, model, photoFile) {
  const child = spawn(env.python, [path.join(__dirname, 'python_worker.py'), '--system', system, '--model', model,
    '--photo', photoFile], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const next = replies(child, (listener) => lines.on('line', (line) => listener(JSON.parse(line))));
  return {
    name, pid: child.pid, ready: next(),
    run: (concurrency, requests) => (child.stdin.write(`${JSON.stringify({ run: { concurrency, requests } })}\n`), next()),
    stop: () => child.stdin.end(),
  };
}

/** Every child at every concurrency, `rounds` times, the order of the children rotating each round. */
async function interleave(children, concurrencies, requests, rounds) {
  // Every system must do the real job: the same photo, the same answer.
  for (const child of children) {
    const { label } = await child.ready;
    if (label !== null && !CAT_LABELS.includes(label)) throw new Error(`${child.name} says the cat photo is a ${label}`);
    child.label = label;
  }
  const samples = [];
  for (let round = 0; round < rounds; round++) {
    for (const concurrency of concurrencies) {
      for (let i = 0; i < children.length; i++) {
        const child = children[(i + round) % children.length];
        if (child.concurrencies && !child.concurrencies.includes(concurrency)) continue;
        const result = await child.run(concurrency, Math.max(requests, concurrency * 2));
        samples.push({ system: child.name, label: child.label, concurrency, round, ...result });
      }
    }
  }
  for (const child of children) child.stop();
  return samples;
}

/** Per system and concurrency: the median over rounds of each round's figures. */
function summarise(samples) {
  const groups = new Map();
  for (const s of samples) {
    const key = `${s.system}\0${s.concurrency}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(s);
  }
  return [...groups.values()].map((group) => {
    const optional = (key) => (group.every((s) => typeof s[key] === 'number') ? median(group.map((s) => s[key])) : null);
    return {
    system: group[0].system,
    label: group[0].label,
    concurrency: group[0].concurrency,
    requests: group.reduce((n, s) => n + s.latencies_ms.length, 0),
    p50_ms: median(group.map((s) => percentile(s.latencies_ms, 0.5))),
    p99_ms: median(group.map((s) => percentile(s.latencies_ms, 0.99))),
    throughput_per_s: median(group.map((s) => s.latencies_ms.length / s.seconds)),
    mean_batch: optional('mean_batch'),
    event_loop_p99_ms: optional('event_loop_p99_ms'),
    rss_mb: Math.max(...group.map((s) => s.rss_bytes)) / 2 ** 20,
    };
  });
}

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function untilListening(port, child, name) {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => (socket.destroy(), resolve(true)));
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${name} did not listen on ${port}`);
}

/** The photo as each server's documentation sends it: the body itself, or the multipart field `image`. */
async function photoRequests(photoFile) {
  const jpeg = fs.readFileSync(photoFile);
  const form = new FormData();
  form.append('image', new Blob([jpeg], { type: 'image/jpeg' }), path.basename(photoFile));
  const multipart = new Request('http://localhost/', { method: 'POST', body: form });
  return {
    raw: { body: jpeg, headers: { 'content-type': 'image/jpeg' } },
    multipart: { body: Buffer.from(await multipart.arrayBuffer()), headers: { 'content-type': multipart.headers.get('content-type') } },
  };
}

/**
 * The label a server started as `{ name, child, port, path?, request }` gives the photo, once it answers:
 * choripan takes its port before its model loads, and answers 503 until it has; TorchServe holds the
 * request until a worker has loaded. Throws unless it is a cat.
 */
async function firstAnswer(server) {
  await untilListening(server.port, server.child, server.name);
  const post = () => fetch(`http://127.0.0.1:${server.port}${server.path ?? '/predict'}`, { method: 'POST', ...server.request });
  let answer = await post();
  while (answer.status === 503) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    answer = await post();
  }
  const { label } = await answer.json();
  if (!CAT_LABELS.includes(label)) throw new Error(`${server.name} says the cat photo is a ${label}`);
  return label;
}

/**
 * Resident memory of a process and its descendants (gunicorn serves from a child of its master), the
 * children of each of its threads: TorchServe's Java frontend starts its workers from other threads.
 */
function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field) => Number(status.match(new RegExp(`${field}:\\s+(\\d+)`))?.[1] ?? 0);
  const childrenOf = (task) => {
    try {
      return fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
    } catch {
      return []; // the thread ended since the folder was read
    }
  };
  const children = fs.readdirSync(`/proc/${pid}/task`).flatMap(childrenOf);
  return children.map(memory).reduce((sum, child) => ({ rss_mb: sum.rss_mb + child.rss_mb, peak_rss_mb: sum.peak_rss_mb + child.peak_rss_mb }),
    { rss_mb: kb('VmRSS') / 1024, peak_rss_mb: kb('VmHWM') / 1024 });
}

/** Why a Python model server cannot run here, by name (LitServe, TorchServe); absent when it can. */
function missingPythonServers() {
  const imports = (modules) => spawnSync(env.python, ['-c', `import ${modules}`], { stdio: 'ignore' }).status === 0;
  const install = `not installed: ${path.relative(root, env.python)} -m pip install -e '.[pyservers]'`;
  const missing = {};
  if (!imports('litserve, multipart')) missing.LitServe = install;
  if (!imports('ts, model_archiver')) missing.TorchServe = install;
  else if (spawnSync('java', ['-version'], { stdio: 'ignore' }).error) {
    missing.TorchServe = 'needs Java (11 or later): apt-get install -y openjdk-17-jre-headless';
  }
  return missing;
}

/** A server in a process group of its own, so that it can be paused, resumed and stopped whole. */
function spawnGroup(command, args, options) {
  return spawn(command, args, { cwd: root, stdio: ['ignore', 'ignore', 'ignore'], detached: true, ...options });
}

function signalGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch (error) {
    if (error.code !== 'ESRCH') throw error;
  }
}

/**
 * SIGTERM to a server's whole group, then SIGKILL to whatever of it is left after 35 s: gunicorn's and
 * uvicorn's (LitServe's) graceful shutdowns wait up to 30 s by default.
 */
async function stopGroup({ name, child }) {
  signalGroup(child, 'SIGCONT');
  signalGroup(child, 'SIGTERM');
  const alive = () => {
    try {
      return process.kill(-child.pid, 0);
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 350 && alive(); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  if (alive()) {
    log(`${name} (process group ${child.pid}) outlived SIGTERM by 35 s: killed`);
    signalGroup(child, 'SIGKILL');
  }
}

function choripanServer(port, model) {
  return spawnGroup(process.execPath, [path.join(root, 'js', 'server', 'main.js')], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', CHORIPAN_MODEL: model },
  });
}

function flaskServer(port) {
  return spawnGroup(env.python, ['-m', 'gunicorn', '--workers', '1', '--threads', '8', '--bind', `127.0.0.1:${port}`,
    '--pythonpath', __dirname, 'flask_server:app']);
}

/**
 * LitServe in `folder` as its temporary folder: torch extracts a package into a folder of its own there,
 * which it removes only on a clean exit, never reached by a server that is signalled to stop.
 */
function litServer(port, model, folder) {
  return spawnGroup(env.python, [path.join(__dirname, 'litserve_server.py'), '--model', model, '--port', String(port)],
    { env: { ...process.env, TMPDIR: folder } });
}

/** A LitServe server's spec for `http`, with the temporary folder it takes, removed once it is stopped. */
function litServeSpec(name, request, model) {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-litserve-'));
  return { name, request, start: (port) => litServer(port, model, folder),
    cleanUp: () => fs.rmSync(folder, { recursive: true, force: true }) };
}

/**
 * TorchServe with the TorchScript artifact: torch-model-archiver packs it with bench/torchserve/handler.py,
 * the labels (index_to_name.json) and a model-config.yaml (one worker per core, batches of up to 8 within
 * 5 ms, the metadata's preprocessing) into a model store in `folder`, which also takes
 * TorchServe's logs. bench/torchserve/config.properties turns on the CPU launcher, which the frontend
 * runs as `python -m torch.backends.xeon.run_cpu`: this environment's python comes first on PATH, as in an
 * activated virtual environment.
 */
async function torchServer(port, model, folder) {
  const { metadata } = JSON.parse(python(['-m', 'choripan', 'inspect', '--json', model]));
  const spec = metadata.preprocessing;
  const workers = os.availableParallelism();
  fs.writeFileSync(path.join(folder, 'index_to_name.json'), JSON.stringify(Object.fromEntries(metadata.labels.entries())));
  fs.writeFileSync(path.join(folder, 'model-config.yaml'), [
    `minWorkers: ${workers}`, `maxWorkers: ${workers}`, 'batchSize: 8', 'maxBatchDelay: 5', 'responseTimeout: 120', 'handler:',
    ...['resize', 'crop', 'interpolation', 'mean', 'std'].map((key) => `  ${key}: ${JSON.stringify(spec[key])}`), '',
  ].join('\n'));
  const store = path.join(folder, 'store');
  fs.mkdirSync(store);
  python(['-m', 'model_archiver.model_packaging', '--model-name', 'choripan', '--version', '1.0', '--serialized-file', model,
    '--handler', path.join(__dirname, 'torchserve', 'handler.py'), '--extra-files', path.join(folder, 'index_to_name.json'),
    '--config-file', path.join(folder, 'model-config.yaml'), '--export-path', store]);
  const [management, metrics] = [await freePort(), await freePort()];
  const config = path.join(folder, 'config.properties');
  fs.writeFileSync(config, [fs.readFileSync(path.join(__dirname, 'torchserve', 'config.properties'), 'utf8'),
    `inference_address=http://127.0.0.1:${port}`, `management_address=http://127.0.0.1:${management}`,
    `metrics_address=http://127.0.0.1:${metrics}`, ''].join('\n'));
  return spawnGroup(env.python, ['-m', 'ts.model_server', '--start', '--foreground', '--ncs', '--disable-token-auth',
    '--model-store', store, '--models', 'choripan=choripan.mar', '--ts-config', config],
  { cwd: folder, env: { ...process.env, PATH: `${path.dirname(env.python)}${path.delimiter}${process.env.PATH}` } });
}

/**
 * The servers of `specs`, each started (`start(port)` spawns it) and answering the photo, then driven by
 * autocannon in turns, the order rotating each round, while the others are paused (SIGSTOP of their
 * process group: LitServe's idle workers poll and would take a share of the cores). All stopped at the end.
 */
async function compareOverHttp(specs) {
  const servers = [];
  const fire = (s, duration) => autocannon({
    url: `http://127.0.0.1:${s.port}${s.path ?? '/predict'}`, method: 'POST', ...s.request,
    connections: settings.connections, duration,
  });
  const underLoad = async (s, duration) => {
    for (const other of servers) if (other !== s) signalGroup(other.child, 'SIGSTOP');
    signalGroup(s.child, 'SIGCONT');
    await new Promise((resolve) => setTimeout(resolve, 250));
    return fire(s, duration);
  };
  // The servers are groups of their own, which a Ctrl-C of the benchmark would not reach, paused or not;
  // exiting skips the `finally` below, so their folders go here too (Linux lets a running server's go).
  const interrupted = (signal) => {
    for (const s of servers) {
      signalGroup(s.child, 'SIGCONT');
      signalGroup(s.child, 'SIGTERM');
    }
    for (const spec of specs) spec.cleanUp?.();
    process.exit(128 + os.constants.signals[signal]);
  };
  process.once('SIGINT', interrupted).once('SIGTERM', interrupted);
  try {
    for (const spec of specs) {
      const port = await freePort();
      servers.push({ ...spec, port, child: await spec.start(port) });
    }
    for (const s of servers) s.label = await firstAnswer(s);
    for (const s of servers) await underLoad(s, 1); // warm-up
    const samples = [];
    for (let round = 0; round < settings.rounds; round++) {
      for (let i = 0; i < servers.length; i++) {
        const s = servers[(i + round) % servers.length];
        const result = await underLoad(s, settings.httpSeconds);
        if (result.non2xx || result.errors || result.timeouts) {
          throw new Error(`${s.name}: ${result.non2xx} non-2xx answers, ${result.errors} errors, ${result.timeouts} timeouts`);
        }
        samples.push({ name: s.name, throughput: result.requests.total / result.duration, p50: result.latency.p50,
          p99: result.latency.p99, requests: result.requests.total });
      }
    }
    return servers.map((s) => {
      const mine = samples.filter((x) => x.name === s.name);
      return {
        system: s.name, label: s.label, connections: settings.connections, seconds: settings.httpSeconds * settings.rounds,
        requests: mine.reduce((n, x) => n + x.requests, 0), throughput_per_s: median(mine.map((x) => x.throughput)),
        p50_ms: median(mine.map((x) => x.p50)), p99_ms: median(mine.map((x) => x.p99)), ...memory(s.child.pid),
      };
    });
  } finally {
    process.off('SIGINT', interrupted).off('SIGTERM', interrupted);
    await Promise.all(servers.map(stopGroup));
    for (const spec of specs) spec.cleanUp?.();
  }
}

const HTTP = {
  choripan: 'choripan server (Express, .pt2)', choripanTorchScript: 'choripan server (Express, .pt)',
  flask: 'Flask + PIL + PyTorch eager', litServe: 'LitServe (.pt2)', litServeTorchScript: 'LitServe (.pt)', torchServe: 'TorchServe (.pt)',
};

/**
 * Over HTTP, in two comparisons, each side by side, so that no more servers hold memory at once than
 * need to: choripan's server with the package against Flask, LitServe with the same package and
 * TorchServe (TorchScript: it cannot load a package); then both with the TorchScript file.
 * Returns { rows, skipped } (skipped: the Python servers that cannot run here, and why).
 */
async function http(photoFile) {
  const request = await photoRequests(photoFile);
  const missing = missingPythonServers();
  for (const [name, why] of Object.entries(missing)) log(`${name} skipped: ${why}`);
  const first = [
    { name: HTTP.choripan, request: request.raw, start: (port) => choripanServer(port, artifacts.aoti) },
    { name: HTTP.flask, request: request.raw, start: flaskServer },
  ];
  if (!missing.LitServe) first.push(litServeSpec(HTTP.litServe, request.multipart, artifacts.aoti));
  if (!missing.TorchServe) {
    const torchServeFolder = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-torchserve-'));
    first.push({ name: HTTP.torchServe, request: request.raw, path: '/predictions/choripan',
      start: (port) => torchServer(port, artifacts.torchscript, torchServeFolder),
      cleanUp: () => fs.rmSync(torchServeFolder, { recursive: true, force: true }) });
  }
  const rows = await compareOverHttp(first);
  if (!missing.LitServe) {
    rows.push(...await compareOverHttp([
      { name: HTTP.choripanTorchScript, request: request.raw, start: (port) => choripanServer(port, artifacts.torchscript) },
      litServeSpec(HTTP.litServeTorchScript, request.multipart, artifacts.torchscript),
    ]));
  }
  return { rows, skipped: Object.entries(missing).map(([system, reason]) => ({ system, reason })) };
}

/**
 * require + load + warm-up in a new process, from process start and in-process: of the default model, or
 * of `file` (the prebuilt package's default model, as an app that installed it loads it).
 */
function coldStart(file) {
  const loading = file ? `load(${JSON.stringify(file)})` : 'getDefaultModel()';
  const script = `const t0 = performance.now(); require('choripan').${loading}.then((m) => {
    console.log(JSON.stringify({ sinceStart: performance.now(), inProcess: performance.now() - t0 })); return m.dispose(); });`;
  const runs = [];
  for (let i = 0; i < (flags.smoke ? 1 : 3); i++) {
    const run = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`cold start failed: ${run.stderr}`);
    runs.push(JSON.parse(run.stdout.trim().split('\n').pop()));
  }
  return { since_process_start_ms: median(runs.map((r) => r.sinceStart)), require_load_warmup_ms: median(runs.map((r) => r.inProcess)) };
}

/** Issue 21's goals against the Python model servers that ran: throughput at 8 connections and p99, as ratios. */
function pythonServerGoals(httpRows) {
  const row = (system) => httpRows.find((r) => r.system === system);
  const pairs = [
    [HTTP.choripan, HTTP.litServe, 1.5], [HTTP.choripanTorchScript, HTTP.litServeTorchScript, 1.0], [HTTP.choripan, HTTP.torchServe, 2.5],
  ].filter(([, theirs]) => row(theirs));
  return pairs.flatMap(([ours, theirs, faster]) => {
    const [a, b] = [row(ours), row(theirs)];
    return [
      { goal: `HTTP throughput, ${ours} / ${theirs}`, ratio: a.throughput_per_s / b.throughput_per_s, target: `>= ${faster}`, pass: a.throughput_per_s >= faster * b.throughput_per_s },
      { goal: `HTTP p99, ${ours} / ${theirs}`, ratio: a.p99_ms / b.p99_ms, target: '<= 0.5', pass: 2 * a.p99_ms <= b.p99_ms },
    ];
  });
}

/**
 * Issue 21's bound on p50 at concurrency 1 against onnxruntime-node + sharp, which depends on the kernels
 * oneDNN runs here: 0.8 with its AVX-512 kernels, 0.9 on an AVX2 code path (an AVX2-only CPU, or
 * ONEDNN_MAX_CPU_ISA=AVX2). Python's choripan.aoti says which, as the core decides it.
 */
function p50Bound() {
  const avx512 = python(['-c', 'from choripan.aoti import one_dnn_picks_avx512; print(one_dnn_picks_avx512())']).trim() === 'True';
  return avx512 ? { bound: 0.8, kernels: "oneDNN's AVX-512 kernels" } : { bound: 0.9, kernels: "oneDNN's AVX2 kernels" };
}

/** Issue 21's bound on throughput at concurrency 8 against onnxruntime-node + sharp, on any x86 CPU. */
const THROUGHPUT_BOUND = 1.3;

function goals(inProcess, httpRows, cold) {
  const row = (system, concurrency) => inProcess.find((r) => r.system === system && r.concurrency === concurrency);
  const mine = `choripan (${path.extname(DEFAULT_MODEL_PATH) === '.pt2' ? 'aoti' : 'torchscript'})`;
  const peer = 'onnxruntime-node + sharp';
  const { bound, kernels } = p50Bound();
  const againstPeer = (system) => {
    const [p50, throughput] = [row(system, 1).p50_ms / row(peer, 1).p50_ms, row(system, 8).throughput_per_s / row(peer, 8).throughput_per_s];
    return [
      { goal: `p50 at concurrency 1, ${system} / ${peer}, ${kernels}`, ratio: p50, target: `<= ${bound}`, pass: p50 <= bound },
      { goal: `throughput at concurrency 8, ${system} / ${peer}`, ratio: throughput, target: `>= ${THROUGHPUT_BOUND}`, pass: throughput >= THROUGHPUT_BOUND },
    ];
  };
  // Both decode the JPEG in the core: the difference is Node's (the binding, the event loop, the checks).
  const overhead = row(mine, 1).p50_ms / row('C++ core (choripan_core)', 1).p50_ms - 1;
  const [server, flask] = [HTTP.choripan, HTTP.flask].map((name) => httpRows.find((r) => r.system === name));
  return [
    ...againstPeer(mine),
    ...againstPeer(PREBUILT),
    { goal: `p50 at concurrency 1, ${PREBUILT} / choripan (aoti) compiled for this CPU`, ratio: row(PREBUILT, 1).p50_ms / row('choripan (aoti)', 1).p50_ms, target: '<= 1.10', pass: row(PREBUILT, 1).p50_ms <= 1.1 * row('choripan (aoti)', 1).p50_ms },
    { goal: 'HTTP throughput, choripan / Flask', ratio: server.throughput_per_s / flask.throughput_per_s, target: '>= 5', pass: server.throughput_per_s >= 5 * flask.throughput_per_s },
    { goal: 'HTTP p99, choripan / Flask', ratio: server.p99_ms / flask.p99_ms, target: '<= 0.333', pass: 3 * server.p99_ms <= flask.p99_ms },
    { goal: "Node's overhead over the C++ core, batch 1", ratio: overhead, target: '<= 0.10', pass: overhead <= 0.10 },
    { goal: 'cold start: require + load + warm-up, seconds', ratio: cold.require_load_warmup_ms / 1000, target: '<= 2', pass: cold.require_load_warmup_ms <= 2000 },
    { goal: `cold start of ${PREBUILT}: require + load + warm-up, seconds`, ratio: cold.prebuilt.require_load_warmup_ms / 1000, target: '<= 1', pass: cold.prebuilt.require_load_warmup_ms <= 1000 },
    ...pythonServerGoals(httpRows),
  ];
}

async function sweep(photoFile) {
  const cores = os.availableParallelism();
  const combos = [];
  for (const maxBatch of [1, 2, 4, 8]) {
    for (const [workers, intraOpThreads] of [[1, cores], [cores, 1]]) combos.push([{ maxBatch, workers, intraOpThreads }, {}]);
  }
  // choripan sets GOMP_SPINCOUNT=10000 unless told otherwise (js/binding.js); 300000 is GNU OpenMP's own.
  for (const spin of ['300000', '100000']) combos.push([{ maxBatch: 2, workers: cores, intraOpThreads: 1 }, { GOMP_SPINCOUNT: spin }]);
  combos.push([{ maxBatch: 2, workers: cores, intraOpThreads: 1 }, { OMP_WAIT_POLICY: 'passive' }]);
  // Co-tenants: processes that keep a core busy for the whole sweep, as other pods on a shared node do.
  const busy = Array.from({ length: Number(flags.busy) }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  if (busy.length) log(`${busy.length} busy co-tenant process(es) running`);
  process.on('exit', () => busy.forEach((child) => child.kill('SIGKILL')));
  const describe = ([o, extraEnv]) => [`maxBatch ${o.maxBatch}`, `${o.workers}×${o.intraOpThreads}`,
    ...Object.entries(extraEnv).map(([k, v]) => `${k}=${v}`)].join(', ');
  const children = combos.map((combo) => nodeChild(describe(combo), 'choripan', DEFAULT_MODEL_PATH, photoFile, ...combo));
  const rows = summarise(await interleave(children, [1, 8], settings.requests, settings.rounds));
  for (const child of busy) child.kill('SIGKILL');
  table(rows, [['options', (r) => r.system], ['concurrency', (r) => r.concurrency], ['p50 ms', (r) => r.p50_ms.toFixed(1)],
    ['p99 ms', (r) => r.p99_ms.toFixed(1)], ['images/s', (r) => r.throughput_per_s.toFixed(1)], ['mean batch', (r) => r.mean_batch.toFixed(2)]]);
}

/**
 * Four clients send the photo for a few seconds, alone (A) and while a fifth keeps sending huge images
 * (B), A B A B: p50 and p99 of the small requests in each. The huge ones: the 389 KB PNG of 10000 × 10000
 * transparent pixels from the hardening report (400 MB decoded) and a 12-megapixel JPEG.
 */
async function headOfLine(photoFile) {
  const choripan = require('choripan');
  const small = fs.readFileSync(photoFile);
  const huge = [
    await sharp({ create: { width: 10000, height: 10000, channels: 4, background: '#0000' } }).png().toBuffer(),
    await sharp(photoFile).resize(4000, 3000).jpeg().toBuffer(),
  ];
  const seconds = flags.smoke ? 1 : 5;
  const model = await choripan.load(DEFAULT_MODEL_PATH);
  const phase = async (withHuge) => {
    const latencies = [];
    let hugeAnswered = 0;
    const until = performance.now() + seconds * 1000;
    const clients = Array.from({ length: 4 }, async () => {
      while (performance.now() < until) {
        const started = performance.now();
        await model.predict(small);
        latencies.push(performance.now() - started);
      }
    });
    if (withHuge) {
      clients.push((async () => {
        for (let i = 0; performance.now() < until; i++) {
          await model.predict(huge[i % huge.length]);
          hugeAnswered++;
        }
      })());
    }
    await Promise.all(clients);
    return { latencies, hugeAnswered };
  };
  const rows = [{ system: 'small requests alone', latencies: [], huge: 0 }, { system: 'while huge images arrive', latencies: [], huge: 0 }];
  for (let round = 0; round < settings.rounds; round++) {
    for (const [index, row] of rows.entries()) {
      const { latencies, hugeAnswered } = await phase(index === 1);
      row.latencies.push(...latencies);
      row.huge += hugeAnswered;
    }
  }
  await model.dispose();
  table(rows, [['', (r) => r.system], ['small p50 ms', (r) => median(r.latencies).toFixed(1)],
    ['small p99 ms', (r) => percentile(r.latencies, 0.99).toFixed(1)], ['small/s', (r) => (r.latencies.length / (seconds * settings.rounds)).toFixed(1)],
    ['huge answered', (r) => r.huge]]);
  log(`p99 of small requests while huge ones arrive: ${(percentile(rows[1].latencies, 0.99) / percentile(rows[0].latencies, 0.99)).toFixed(2)}× their p99 alone`);
}

/**
 * CPU time in ms of a process, all its threads (/proc/PID/stat), and of its main thread alone, which for
 * Node is the event loop (/proc/PID/task/PID/stat): utime and stime, in clock ticks.
 */
function cpuMs(pid, tick) {
  const read = (file) => {
    const fields = fs.readFileSync(file, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) * tick; // the 14th and 15th fields of the whole line
  };
  return { all: read(`/proc/${pid}/stat`), loop: read(`/proc/${pid}/task/${pid}/stat`) };
}

/**
 * What tracing costs a request: `npm start` without OTEL_* (A) and with an OTLP endpoint (B: protobuf, the
 * default; every request sampled, as one without a traceparent is), taking turns A B A B under the same
 * load (autocannon, POST /predict, 1 and 8 connections). An OTLP receiver in this process takes B's
 * spans. Per row, the median over rounds of requests a second, p50, p99 and the server's CPU time per
 * request: of every thread of its process (the workers' forward passes most of it), and of its event loop
 * alone, where a span is made, batched and exported.
 */
async function tracingCost(photoFile) {
  const body = fs.readFileSync(photoFile);
  const tick = 1000 / Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout);
  const received = { requests: 0, bytes: 0 };
  const receiver = require('node:http').createServer((req, res) => {
    req.on('data', (chunk) => (received.bytes += chunk.length)).on('end', () => {
      received.requests++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const plain = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('OTEL_')));
  const servers = [
    { name: 'without tracing', env: {} },
    { name: 'traced (OTLP/protobuf)', env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.address().port}` } },
  ];
  const connections = [1, settings.connections];
  try {
    for (const s of servers) {
      s.port = await freePort();
      s.child = spawn(process.execPath, [path.join(root, 'js', 'server', 'main.js')], {
        cwd: root, stdio: ['ignore', 'ignore', 'inherit'], env: { ...plain, ...s.env, PORT: String(s.port), HOST: '127.0.0.1' },
      });
      await firstAnswer({ ...s, request: { body, headers: { 'content-type': 'image/jpeg' } } });
    }
    const fire = (s, conns, duration) => autocannon({
      url: `http://127.0.0.1:${s.port}/predict`, method: 'POST', body, headers: { 'content-type': 'image/jpeg' }, connections: conns, duration,
    });
    for (const s of servers) await fire(s, settings.connections, 1); // warm-up
    const samples = [];
    for (let round = 0; round < settings.rounds; round++) {
      for (const conns of connections) {
        for (let i = 0; i < servers.length; i++) {
          const s = servers[(i + round) % servers.length];
          const before = cpuMs(s.child.pid, tick);
          const result = await fire(s, conns, settings.httpSeconds);
          const after = cpuMs(s.child.pid, tick);
          const cpu = after.all - before.all;
          const loop = after.loop - before.loop;
          if (result.non2xx || result.errors || result.timeouts) {
            throw new Error(`${s.name}: ${result.non2xx} non-2xx answers, ${result.errors} errors, ${result.timeouts} timeouts`);
          }
          samples.push({ name: s.name, connections: conns, throughput: result.requests.total / result.duration,
            p50: result.latency.p50, p99: result.latency.p99, cpuPerRequest: cpu / result.requests.total, loopPerRequest: loop / result.requests.total });
          log(`round ${round + 1}, ${conns} conn.: ${s.name}: ${(result.requests.total / result.duration).toFixed(1)} req/s, ` +
            `p50 ${result.latency.p50} ms, CPU ${(cpu / result.requests.total).toFixed(2)} ms/request, ` +
            `event loop ${(loop / result.requests.total).toFixed(2)}`);
        }
      }
    }
    const rows = connections.flatMap((conns) => servers.map((s) => {
      const mine = samples.filter((x) => x.name === s.name && x.connections === conns);
      return { system: s.name, connections: conns, throughput: median(mine.map((x) => x.throughput)), p50: median(mine.map((x) => x.p50)),
        p99: median(mine.map((x) => x.p99)), cpuPerRequest: median(mine.map((x) => x.cpuPerRequest)),
        loopPerRequest: median(mine.map((x) => x.loopPerRequest)) };
    }));
    table(rows, [['server', (r) => r.system], ['conn.', (r) => r.connections], ['req/s', (r) => r.throughput.toFixed(1)],
      ['p50 ms', (r) => r.p50.toFixed(1)], ['p99 ms', (r) => r.p99.toFixed(1)], ['CPU ms/request', (r) => r.cpuPerRequest.toFixed(2)],
      ['event loop CPU ms/request', (r) => r.loopPerRequest.toFixed(3)]]);
    const traced = samples.filter((x) => x.name === servers[1].name).length;
    log(`the receiver took ${received.requests} exports, ${(received.bytes / 1024).toFixed(0)} KiB, over ${traced} traced runs`);
    if (!received.requests) throw new Error('no span reached the receiver');
  } finally {
    for (const s of servers) s.child?.kill('SIGTERM');
    receiver.close();
  }
}

async function httpTable(photoFile) {
  log(`HTTP: POST /predict, ${settings.connections} connections, ${settings.httpSeconds} s per round (autocannon)`);
  const result = await http(photoFile);
  table(result.rows, [['server', (r) => r.system], ['req/s', (r) => r.throughput_per_s.toFixed(1)], ['p50 ms', (r) => r.p50_ms.toFixed(1)],
    ['p99 ms', (r) => r.p99_ms.toFixed(1)], ['RSS MB', (r) => r.rss_mb.toFixed(0)], ['peak RSS MB', (r) => r.peak_rss_mb.toFixed(0)]]);
  return result;
}

function goalTable(rows) {
  table(rows, [['goal', (g) => g.goal], ['ratio', (g) => g.ratio.toFixed(3)], ['target', (g) => g.target], ['', (g) => (g.pass ? 'pass' : 'FAIL')]]);
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} ×${os.availableParallelism()}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}`;
  log(`${machine}; ${settings.rounds} round(s), ${settings.requests} requests per row`);
  const photoFile = await photo();
  if (flags.sweep) return sweep(photoFile);
  if (flags['head-of-line']) return headOfLine(photoFile);
  if (flags.tracing) return tracingCost(photoFile);
  if (flags.http) {
    const { rows } = await httpTable(photoFile);
    console.log('');
    return goalTable(pythonServerGoals(rows));
  }
  for (const file of Object.values(artifacts)) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: run \`npm install\`, which exports the default model`);
  }
  const onnx = onnxTwin();
  const metadata = JSON.stringify(JSON.parse(python(['-m', 'choripan', 'inspect', '--json', artifacts.torchscript])).metadata);

  const baseline = baselinePackage(env.python, log);
  const children = [
    nodeChild('choripan (aoti)', 'choripan', artifacts.aoti, photoFile),
    nodeChild(PREBUILT, 'choripan', baseline, photoFile),
    nodeChild('choripan (torchscript)', 'choripan', artifacts.torchscript, photoFile),
    nodeChild('onnxruntime-node + sharp', 'onnxruntime', onnx, photoFile, { metadata }),
    Object.assign(pythonChild('C++ core (choripan_core)', 'core', artifacts.aoti, photoFile), { concurrencies: [1, 8] }),
    Object.assign(pythonChild('PyTorch eager (Python)', 'eager', artifacts.torchscript, photoFile), { concurrencies: [1, 8] }),
  ];
  log(`in-process: ${children.map((c) => c.name).join(', ')}`);
  const inProcess = summarise(await interleave(children, settings.concurrencies, settings.requests, settings.rounds));
  table(inProcess, [
    ['system', (r) => r.system], ['conc.', (r) => r.concurrency], ['p50 ms', (r) => r.p50_ms.toFixed(1)],
    ['p99 ms', (r) => r.p99_ms.toFixed(1)], ['images/s', (r) => r.throughput_per_s.toFixed(1)],
    ['mean batch', (r) => (r.mean_batch === null ? '' : r.mean_batch.toFixed(2))],
    ['loop p99 ms', (r) => (r.event_loop_p99_ms === null ? '' : r.event_loop_p99_ms.toFixed(1))], ['RSS MB', (r) => r.rss_mb.toFixed(0)],
  ]);

  const { rows: httpRows, skipped } = await httpTable(photoFile);

  const cold = { ...coldStart(), prebuilt: coldStart(baseline) };
  log(`cold start of the default model: ${cold.require_load_warmup_ms.toFixed(0)} ms in-process, ${cold.since_process_start_ms.toFixed(0)} ms since the process started`);
  log(`cold start of ${PREBUILT}: ${cold.prebuilt.require_load_warmup_ms.toFixed(0)} ms in-process, ${cold.prebuilt.since_process_start_ms.toFixed(0)} ms since the process started`);
  const results = { date: new Date().toISOString(), machine, settings, default_model: path.relative(root, DEFAULT_MODEL_PATH),
    in_process: inProcess, http: httpRows, http_skipped: skipped, cold_start: cold };
  results.goals = goals(inProcess, httpRows, cold);
  console.log('');
  goalTable(results.goals);

  const json = path.join(outDir, 'latest.json');
  fs.writeFileSync(json, `${JSON.stringify(results, null, 2)}\n`);
  log(`wrote ${path.relative(process.cwd(), json)}`);
  log(python([path.join(__dirname, 'chart.py'), json, '--out', path.join(outDir, 'latest.png')]).trim());
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

// For the benchmarks beside this one (bench/int8.js), which take the same flags.
module.exports = { settings, env, artifacts, outDir, log, table, python, photo, onnxTwin, nodeChild, interleave, summarise };
