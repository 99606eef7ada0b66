'use strict';
// `npm start` (js/server/main.js) as a process: it serves, and SIGTERM lets the requests in hand finish.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { root, photo, CAT_LABELS } = require('./helpers');

function start() {
  const child = spawn(process.execPath, [path.join(root, 'js', 'server', 'main.js')], {
    cwd: root,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1' },
  });
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

test('npm start serves the default model and stops gracefully on SIGTERM', { timeout: 120_000 }, async () => {
  const server = start();
  const port = await server.listening;
  const post = () => fetch(`http://127.0.0.1:${port}/predict`, {
    method: 'POST', body: photo('chelsea.png'), headers: { 'content-type': 'image/png' },
  });
  assert.ok(CAT_LABELS.includes((await (await post()).json()).label));

  // Three requests fully sent (each on its own connection) before the signal.
  const sent = [];
  const inHand = [0, 1, 2].map(() => new Promise((resolve, reject) => {
    const request = http.request({ port, host: '127.0.0.1', path: '/predict', method: 'POST', agent: false,
      headers: { 'content-type': 'image/png' } }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode));
    });
    request.on('error', reject);
    sent.push(new Promise((done) => request.on('finish', done)));
    request.end(photo('chelsea.png'));
  }));
  await Promise.all(sent);
  await new Promise((resolve) => setTimeout(resolve, 20));
  server.child.kill('SIGTERM');
  assert.deepEqual(await Promise.all(inHand), [200, 200, 200], 'requests in hand are answered');
  assert.deepEqual(await server.exited, { status: 0, signal: null });
  assert.ok(server.lines.some((l) => l.msg === 'stopped'));
  assert.equal(server.lines.filter((l) => l.label).length, 4, 'one log line per prediction');
});
