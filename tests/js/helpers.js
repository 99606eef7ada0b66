'use strict';
// Shared test fixtures: real photos from scikit-image (installed in the project's Python environment),
// the default artifact and its golden file; and the server's: an app on an ephemeral loopback port, the
// server process (js/server/main.js), two models in one app.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { recorded, probe } = require('../../scripts/environment');

const root = path.resolve(__dirname, '..', '..');
const env = recorded() ?? probe();
const photosDir = path.join(env.sitePackages, 'skimage', 'data');
const defaultModelPath = path.join(root, 'models', 'default.pt');
const defaultPackagePath = path.join(root, 'models', 'default.pt2'); // the AOTInductor twin setup compiles

const CAT_LABELS = ['tiger cat', 'Egyptian cat', 'tabby'];

function photoPath(name) {
  return path.join(photosDir, name);
}

function photo(name) {
  return fs.readFileSync(photoPath(name));
}

/**
 * `source`'s records written to `target`, its metadata changed by `edit` (one Python statement on `doc`,
 * the parsed choripan.json) and, with `folder`, its records' folder renamed: the checksum leaves the
 * metadata out, so the artifact still loads, saying what the edit says.
 * @param {string} source
 * @param {string} target
 * @param {string} edit
 * @param {string} [folder]
 */
function rewriteMetadata(source, target, edit, folder = '') {
  const run = spawnSync(env.python, ['-c', `
import json, sys, zipfile
source, target, folder = sys.argv[1:4]
with zipfile.ZipFile(source) as a, zipfile.ZipFile(target, "w") as b:
    for info in a.infolist():
        data = a.read(info)
        if info.filename.endswith("extra/choripan.json"):
            doc = json.loads(data)
            ${edit}
            data = json.dumps(doc).encode()
        if folder:
            info.filename = folder + info.filename[info.filename.index("/"):]
        b.writestr(info, data)
`, source, target, folder], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`rewriting ${source}'s metadata failed: ${run.stderr}`);
  return target;
}

function golden(artifact = defaultModelPath) {
  return JSON.parse(fs.readFileSync(`${artifact}.golden.json`, 'utf8'));
}

/** Resolves to the rejection's error; fails if the promise resolves. */
async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

/**
 * Resolves to the port of a server child process once it is ready: the log line with "port" comes after
 * its models load (the one before it, when it takes the port, names only the url). Rejects if it exits first.
 */
function listening(child) {
  return new Promise((resolve, reject) => {
    let buffered = '';
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      const match = buffered.match(/"port":(\d+)/);
      if (match) resolve(Number(match[1]));
    });
    child.on('exit', (code) => reject(new Error(`the server exited with ${code}: ${buffered}`)));
  });
}

/**
 * An app of createApp's served on an ephemeral loopback port as the server serves it (its predict lane
 * first, js/server/app.js serverHandler), or any request listener.
 */
function listen(app) {
  return new Promise((resolve) => {
    const { serverHandler } = require('choripan/server');
    const server = http.createServer(serverHandler(app)).listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${server.address().port}` }));
  });
}

/** POSTs image bytes (image/png unless `headers` say otherwise) to `url`. */
const postImage = (url, body, headers = {}) => fetch(url, { method: 'POST', body, headers: { 'content-type': 'image/png', ...headers } });

/** The default package and the traced default model, one worker each, as 'lite0' (the default) and 'traced'. */
async function twoModels() {
  const choripan = require('choripan');
  return new Map([
    ['lite0', await choripan.load(defaultPackagePath, { workers: 1 })],
    ['traced', await choripan.load(defaultModelPath, { workers: 1 })],
  ]);
}

// The server processes startServer() started that still run: stopServers() kills them, after a file's
// tests, so that a failed test leaves none running.
const children = new Set();

/**
 * `npm start` (js/server/main.js) on an ephemeral port, with `variables` added to the environment: its JSON
 * log lines as they come, the port once it listens, and how it exited.
 */
function startServer(variables = {}) {
  const child = spawn(process.execPath, [path.join(root, 'js', 'server', 'main.js')], {
    cwd: root,
    env: { ...process.env, ...variables, PORT: '0', HOST: '127.0.0.1' },
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const lines = [];
  let buffered = '';
  const listening = new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      for (let end; (end = buffered.indexOf('\n')) >= 0; buffered = buffered.slice(end + 1)) {
        const line = JSON.parse(buffered.slice(0, end));
        lines.push(line);
        if (line.port) resolve(line.port);
      }
    });
    child.on('exit', (status) => reject(new Error(`the server exited with ${status} before listening`)));
  });
  const exited = new Promise((resolve) => child.on('exit', (status, signal) => resolve({ status, signal })));
  return { child, lines, listening, exited };
}

function stopServers() {
  for (const child of children) child.kill('SIGKILL');
}

/** Debian's Chromium (apt-get install chromium; .ci/run installs it), or null: then the browser tests skip. */
const chromiumPath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((file) => fs.existsSync(file)) ?? null;

/** Chromium through playwright-core, headless, quiet: nothing it starts reaches the network. */
function launchChromium() {
  const { chromium } = require('playwright-core');
  return chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-gpu',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
}

module.exports = { root, env, photosDir, photoPath, photo, golden, rewriteMetadata, defaultModelPath, defaultPackagePath, CAT_LABELS, rejection, listening,
  listen, postImage, twoModels, startServer, stopServers, chromiumPath, launchChromium };
