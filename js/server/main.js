'use strict';
// `npm start` and `choripan serve`: the server, configured by js/server/config.js (CHORIPAN_*, PORT,
// HOST), until SIGTERM or SIGINT.

const http = require('node:http');
const pino = require('pino');
const { load } = require('..');
const { createApp } = require('./app');
const { readConfig, ConfigError } = require('./config');

let logger = pino();

/**
 * Loads the configured models and serves them until SIGTERM or SIGINT, then drains and exits.
 * @param {ReturnType<typeof readConfig>} config
 */
async function serve(config = readConfig()) {
  logger = pino({ level: config.logLevel });
  const { port, host } = config;
  const models = new Map();
  for (const { name, path } of config.models) {
    const started = performance.now();
    const model = await load(path, config.load);
    models.set(name ?? model.name, model);
    logger.info({ model: name ?? model.name, path, ms: Math.round(performance.now() - started), workers: model.stats().workers }, 'model loaded');
  }

  const app = createApp({ models, logger, urlAllowlist: config.urlAllowlist, corsOrigins: config.corsOrigins, maxBodyBytes: config.maxBodyBytes,
    fetchTimeoutMs: config.fetchTimeoutMs, timeoutMs: config.timeoutMs, defaultLabel: config.defaultLabel });
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
      await Promise.all([...models.values()].map((model) => model.dispose()));
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
  if (error instanceof ConfigError) {
    console.error(`choripan: ${error.message}`); // one line naming the variable
    process.exit(2);
  }
  logger.fatal({ err: error, code: error.code }, error.message);
  process.exit(1);
}

if (require.main === module) {
  try {
    serve(readConfig()).catch(fail);
  } catch (error) {
    fail(error);
  }
}

module.exports = { serve, fail, answerClientError };
