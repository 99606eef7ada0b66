'use strict';
// `npm start` and `choripan serve`: serve a model (CHORIPAN_MODEL, else the default one) on HOST:PORT.

const http = require('node:http');
const pino = require('pino');
const { load, DEFAULT_MODEL_PATH } = require('..');
const { createApp } = require('./app');

const logger = pino();

/** Serves `modelPath` on host:port until SIGTERM or SIGINT, then drains and exits. */
async function serve({ modelPath = DEFAULT_MODEL_PATH, port = Number(process.env.PORT ?? 8080), host = process.env.HOST ?? '127.0.0.1' } = {}) {
  const started = performance.now();
  const model = await load(modelPath);
  logger.info({ model: model.name, path: modelPath, ms: Math.round(performance.now() - started) }, 'model loaded');

  const app = createApp({ model, logger });
  const server = app.listen(port, host, () => {
    const { address, port: bound } = server.address();
    logger.info({ address, port: bound }, `listening on http://${host}:${bound}`);
  });
  server.on('error', (error) => {
    logger.fatal({ err: error }, `cannot listen on ${host}:${port}`);
    process.exit(1);
  });

  server.on('clientError', answerClientError);

  // Graceful: stop accepting connections, answer the requests in hand with `Connection: close` (so
  // that keep-alive clients move on), close idle connections as they become idle, free the model,
  // exit 0. A second signal, or ten seconds, cut it short.
  let stopping = false;
  const stop = (signal) => {
    if (stopping) {
      logger.warn({ signal }, 'stopping now');
      process.exit(1);
    }
    stopping = true;
    app.locals.draining = true;
    logger.info({ signal }, 'stopping: finishing the requests in hand');
    setTimeout(() => {
      logger.warn('requests still running after 10 s; stopping anyway');
      process.exit(1);
    }, 10_000).unref();
    server.close(async () => {
      await model.dispose();
      logger.info('stopped');
      process.exit(0);
    });
    server.closeIdleConnections();
    server.on('request', (req, res) => res.on('finish', () => server.closeIdleConnections()));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** Node's own parse errors (a bad chunk, headers too large, …) answered in choripan's JSON shape. */
function answerClientError(error, socket) {
  if (!socket.writable || error.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const [status, code] = error.code === 'HPE_HEADER_OVERFLOW' ? [431, 'E_TOO_LARGE'] : [400, 'E_INVALID_ARGUMENT'];
  const body = JSON.stringify({ error: { code, message: `The request could not be parsed (${error.code ?? error.message})` } });
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

function fail(error) {
  logger.fatal({ err: error, code: error.code }, error.message);
  process.exit(1);
}

if (require.main === module) serve().catch(fail);

module.exports = { serve, fail, answerClientError };
