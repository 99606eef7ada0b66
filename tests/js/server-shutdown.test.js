'use strict';
// `npm start` (js/server/main.js) as a process: it serves the default model, and SIGTERM lets the
// requests in hand finish, closes kept-alive connections and exits 0.

const assert = require('node:assert/strict');
const { test, after } = require('node:test');
const http = require('node:http');
const { photo, CAT_LABELS, startServer, stopServers } = require('./helpers');

after(stopServers); // a failed test must not leave its server running

test('npm start serves the default model and stops gracefully on SIGTERM', { timeout: 120_000 }, async () => {
  const server = startServer();
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

test('SIGTERM with a keep-alive client that keeps sending: every request answered, /readyz 503, exit 0', { timeout: 120_000 }, async () => {
  const server = startServer();
  const port = await server.listening;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  // A request written to a kept-alive socket that the server closed while it was idle never reached
  // the server (Node marks it reusedSocket): a client sends it again, on a new connection.
  const send = (path, body, viaAgent = agent) => new Promise((resolve, reject) => {
    const request = http.request({ port, host: '127.0.0.1', path, method: body ? 'POST' : 'GET', agent: viaAgent,
      headers: body ? { 'content-type': 'image/png' } : {} }, (response) => {
      response.resume();
      response.on('end', () => resolve({ status: response.statusCode, connection: response.headers.connection }));
    });
    request.on('error', (error) => (request.reusedSocket && error.code === 'ECONNRESET' ? send(path, body, false).then(resolve, reject) : reject(error)));
    request.end(body);
  });
  const answers = [];
  let refused = null;
  const client = (async () => {
    for (;;) {
      try {
        answers.push(await send('/predict', photo('coffee.png')));
      } catch (error) {
        refused = error; // the server stopped listening: a new connection is refused, nothing was cut
        return;
      }
    }
  })();
  while (answers.length < 3) await new Promise((resolve) => setTimeout(resolve, 10));
  server.child.kill('SIGTERM');
  await client;
  agent.destroy();
  assert.equal(refused.code, 'ECONNREFUSED', refused.message);
  assert.ok(answers.length > 3 && answers.every((a) => a.status === 200), JSON.stringify(answers));
  assert.equal(answers.at(-1).connection, 'close', 'answers during the drain close their connection');
  assert.deepEqual(await server.exited, { status: 0, signal: null });
});
