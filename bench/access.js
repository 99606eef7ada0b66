'use strict';
// What the API key check and the rate limit cost per request (docs/benchmark.md, "Keys and limits").
//
// In process: keyring().find() (a key among 10, each compared) and a bucket's take(), in ns a call.
// Over HTTP: one server per setting (neither; keys; a limit that never refuses; both), each its own
// process, taking turns A B C D A B C D … under autocannon, on a cheap guarded route (GET /v2/models/NAME,
// where the check is most of the work) and on inference (POST /predict, the photo the docs use).
// The cost is the server's CPU time per request (its process's user + system time over the requests it
// answered, from /proc), against the server without either: on a shared machine, throughput swings
// with the neighbours' load, the CPU a request takes much less.
//
//   node bench/access.js [--rounds 5] [--seconds 5] [--connections 8]
//
// A benchmark, not a test: the machine may be small and shared, so compare rows of one run.

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { parseArgs } = require('node:util');
const autocannon = require('autocannon');
const { keyring } = require('../js/server/api-keys');
const { createBuckets } = require('../js/server/rate-limit');

const { values: flags } = parseArgs({ options: {
  rounds: { type: 'string', default: '5' }, seconds: { type: 'string', default: '5' }, connections: { type: 'string', default: '8' },
} });
const rounds = Number(flags.rounds);
const seconds = Number(flags.seconds);
const connections = Number(flags.connections);
const root = path.join(__dirname, '..');
const photo = fs.readFileSync(path.join(root, 'examples', 'cat.jpg'));

const keys = Array.from({ length: 10 }, (_, i) => ({ key: crypto.randomBytes(32).toString('hex'), scope: i ? 'infer' : 'admin' }));
const header = { authorization: `Bearer ${keys[9].key}` };

/** ns a call of `fn`, the median of 5 runs of `n` calls. */
function nsPerCall(fn, n = 200_000) {
  const runs = [];
  for (let r = 0; r < 5; r++) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    runs.push(Number(process.hrtime.bigint() - started) / n);
  }
  return runs.sort((a, b) => a - b)[2];
}

function inProcess() {
  const ring = keyring(keys);
  const buckets = createBuckets({ rate: 1e6, burst: 1e6 });
  const clients = Array.from({ length: 1000 }, (_, i) => `client ${i}`);
  console.log('in process (median of 5 runs of 200,000 calls):');
  console.log(`  keyring(10 keys).find(a valid key)   ${nsPerCall(() => ring.find(header.authorization)).toFixed(0)} ns`);
  console.log(`  keyring(10 keys).find(a wrong key)   ${nsPerCall(() => ring.find('Bearer not-one-of-the-keys-0000')).toFixed(0)} ns`);
  console.log(`  buckets.take(one of 1,000 clients)   ${nsPerCall((i) => buckets.take(clients[i % 1000])).toFixed(0)} ns`);
}

/** A port free now, for a child to take. */
function freePort() {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** A server child for `env`, quiet; resolves once its models are loaded. */
async function start(env) {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(root, 'js', 'server', 'main.js')], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', CHORIPAN_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`a server exited with ${child.exitCode}`);
    if (await fetch(`${base}/readyz`).then((r) => r.ok, () => false)) return { child, base };
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** The CPU time process `pid` has used, user and system, in µs (Linux /proc; clock ticks of 10 ms). */
function cpuMicros(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

async function overHttp() {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-access-'));
  const keysFile = path.join(folder, 'api-keys');
  fs.writeFileSync(keysFile, keys.map((k) => `${k.key} ${k.scope}`).join('\n'));
  const settings = [
    { name: 'neither', env: {} },
    { name: 'keys (10)', env: { CHORIPAN_API_KEYS_FILE: keysFile } },
    { name: 'a limit', env: { CHORIPAN_RATE_LIMIT: '1000000:1000000' } },
    { name: 'keys and a limit', env: { CHORIPAN_API_KEYS_FILE: keysFile, CHORIPAN_RATE_LIMIT: '1000000:1000000' } },
  ];
  const servers = [];
  try {
    for (const setting of settings) servers.push({ ...setting, ...(await start(setting.env)) });
    const routes = [
      { name: 'GET /v2/models/efficientnet-lite0', path: '/v2/models/efficientnet-lite0', method: 'GET' },
      { name: 'POST /predict (cat.jpg)', path: '/predict', method: 'POST', body: photo, type: 'image/jpeg' },
    ];
    console.log(`\nover HTTP (autocannon, ${connections} connections, ${seconds} s a turn, ${rounds} rounds of A B C D; ` +
      'median over rounds):');
    for (const route of routes) {
      const results = new Map(servers.map((s) => [s.name, []]));
      for (let round = 0; round < rounds; round++) {
        for (const server of servers) {
          const cpuBefore = cpuMicros(server.child.pid);
          const result = await autocannon({ url: `${server.base}${route.path}`, method: route.method, body: route.body, connections, duration: seconds,
            headers: { ...header, ...(route.type ? { 'content-type': route.type } : {}) } });
          if (result.non2xx) throw new Error(`${server.name}: ${result.non2xx} answers were not 2xx`);
          result.cpuPerRequest = (cpuMicros(server.child.pid) - cpuBefore) / result.requests.total;
          results.get(server.name).push(result);
        }
      }
      const baseline = results.get(servers[0].name);
      // Paired by round: each round's difference from the server without either, then their median.
      console.log(`  ${route.name}`);
      console.log(`    ${'server'.padEnd(18)} ${'req/s'.padStart(7)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'CPU µs/req'.padStart(11)} ` +
        `${'more'.padStart(6)}  CPU µs/req by round`);
      for (const [name, runs] of results) {
        const cpu = median(runs.map((r) => r.cpuPerRequest));
        const more = name === servers[0].name ? '' : median(runs.map((r, i) => r.cpuPerRequest - baseline[i].cpuPerRequest)).toFixed(1);
        console.log(`    ${name.padEnd(18)} ${median(runs.map((r) => r.requests.average)).toFixed(0).padStart(7)} ` +
          `${median(runs.map((r) => r.latency.p50)).toFixed(1).padStart(7)} ${median(runs.map((r) => r.latency.p99)).toFixed(1).padStart(7)} ` +
          `${cpu.toFixed(1).padStart(11)} ${more.padStart(6)}  ${runs.map((r) => r.cpuPerRequest.toFixed(0)).join(', ')}`);
      }
    }
  } finally {
    for (const { child } of servers) child.kill('SIGTERM');
    fs.rmSync(folder, { recursive: true, force: true });
  }
}

inProcess();
overHttp().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
