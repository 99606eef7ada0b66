'use strict';
// `npm start`: serve the model at CHORIPAN_MODEL (default models/default.pt) on HOST:PORT.

const pino = require('pino');
const { load, DEFAULT_MODEL_PATH } = require('..');
const { createApp } = require('./app');

const logger = pino();

async function main() {
  const port = Number(process.env.PORT ?? 8080);
  const host = process.env.HOST ?? '127.0.0.1';
  const started = performance.now();
  const model = await load(DEFAULT_MODEL_PATH);
  logger.info({ model: model.name, path: DEFAULT_MODEL_PATH, ms: Math.round(performance.now() - started) }, 'model loaded');

  const app = createApp({ model, logger });
  const server = app.listen(port, host, () => {
    const { address, port: bound } = server.address();
    logger.info({ address, port: bound }, `listening on http://${host}:${bound}`);
  });
  server.on('error', (error) => {
    logger.fatal({ err: error }, `cannot listen on ${host}:${port}`);
    process.exit(1);
  });

  // Graceful: stop accepting connections, let the requests in hand finish and their answers flush,
  // then free the model. A second signal, or ten seconds, cut it short.
  let stopping = false;
  const stop = (signal) => {
    if (stopping) {
      logger.warn({ signal }, 'stopping now');
      process.exit(1);
    }
    stopping = true;
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
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((error) => {
  logger.fatal({ err: error, code: error.code }, error.message);
  process.exit(1);
});
