'use strict';
// `npm start` and `choripan serve`: the server, configured by js/server/config.js (CHORIPAN_*, PORT,
// HOST, and OTEL_* for tracing), until SIGTERM or SIGINT.

const http = require('node:http');
const net = require('node:net');
const pino = require('pino');
const { load, availableCores } = require('..');
const { ChoripanError, summary } = require('../errors');
const { createApp, serverHandler } = require('./app');
const { readConfig, ConfigError } = require('./config');
const { PATHS } = require('./paths');
const { ModelRepository } = require('./repository');
const { logLoaded } = require('./catalog');
const { toHttpError, errorBody } = require('./http-error');
const { startGrpcServer } = require('./grpc');
const { keyring, authorize } = require('./api-keys');
const { peerAddress } = require('./trust-proxy');
const { rateLimitFields } = require('./rate-limit');
const { serverVariables } = require('../vocabulary');

// How long a stop may take (the requests in hand, then the last spans), and the part of it the spans get.
const STOP_MS = 10_000;
const SPANS_STOP_MS = 2_000;

/** The settings of the variables that set createApp's options (`app` in native/core/vocabulary.json). */
const appSettings = (config) => Object.fromEntries(serverVariables().filter((v) => v.app).map((v) => [v.setting, config[v.setting]]));

/**
 * The gRPC methods open to any caller, as HTTP's /v2/health routes are (js/server/paths.js accessOf):
 * neither a key nor the rate limit asked of them.
 */
const OPEN_GRPC = new Set(['ServerLive', 'ServerReady']);

/**
 * The access check of a gRPC call, as the HTTP routes ask for it: none for the health methods; for the
 * rest, a key in the `authorization` metadata (an admin key for the repository's methods, an infer key
 * for the others), then the rate limit's bucket, the one HTTP takes from: the key's, or without keys the
 * peer's address's (js/server/trust-proxy.js peerAddress). Where the call took from a bucket, the answer's
 * trailing metadata gets `ratelimit` and `ratelimit-policy`, as HTTP's headers say them, refused or not.
 * @param {Array<{ key: string, scope: 'infer' | 'admin' }> | undefined} apiKeys the list the app has,
 *   so that a key has the same id, and so the same bucket, over both
 * @param {() => ReturnType<typeof import('./rate-limit').createLimiter> | null} limiter the app's, once it
 *   exists (until then calls are answered E_NOT_READY, unlimited as HTTP's requests are while loading)
 */
function grpcAccess(apiKeys, limiter) {
  const keys = apiKeys ? keyring(apiKeys) : null;
  return (call, method, trailers) => {
    if (OPEN_GRPC.has(method)) return;
    const [authorization] = call.metadata.get('authorization');
    const { key, refusal } = authorize(keys, authorization?.toString(), method.startsWith('Repository') ? 'admin' : 'infer');
    if (refusal) throw refusal;
    const limit = limiter();
    if (!limit) return;
    const taken = limit.take({ key, address: peerAddress(call.getPeer()) });
    for (const [name, value] of Object.entries(rateLimitFields(limit, taken))) trailers.set(name.toLowerCase(), value);
    if (taken.refusal) throw taken.refusal;
  };
}

/**
 * Whatever a line might one day carry of a request's headers, its key is not written: the service logs
 * no headers (js/server/middleware.js requestLog), and this holds should a field of them be added.
 */
const REDACT = { paths: ['headers.authorization', 'req.headers.authorization', '*.headers.authorization'], censor: '[redacted]' };

/** JSON lines, one per event, for whatever reads them; on a terminal, pino-pretty's lines for a person. */
function createLogger(level) {
  if (!process.stdout.isTTY) return pino({ level, redact: REDACT });
  const pretty = require('pino-pretty');
  // Synchronous, so that nothing is lost when the process exits right after a line.
  return pino({ level, redact: REDACT }, pretty({ sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true }));
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Whether `address` (as server.address() gives it) reaches this machine only. */
const isLoopback = (address) => LOOPBACK.check(address, net.isIPv6(address) ? 'ipv6' : 'ipv4');

/** What the usual reasons to be refused a port mean. */
const LISTEN_ERRORS = {
  EADDRINUSE: 'another process listens there',
  EADDRNOTAVAIL: 'this machine has no such address',
  EACCES: 'this user may not listen on that port',
  ENOTFOUND: 'no such host',
};

/** host:port, with an IPv6 address in brackets. */
const hostPort = (host, port) => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/** Binds `server` to host:port; the error says where and why, in one line: `cannot listen on HOST:PORT: EADDRINUSE (…)`. */
function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    const refused = (error) => {
      const why = LISTEN_ERRORS[error.code] ? ` (${LISTEN_ERRORS[error.code]})` : '';
      reject(new Error(`cannot listen on ${hostPort(host, port)}: ${error.code ?? error.message}${why}`, { cause: error }));
    };
    server.once('error', refused);
    server.listen(port, host, () => {
      server.off('error', refused);
      resolve(server.address());
    });
  });
}

/**
 * Every request while the models load: 503 with Retry-After, `{ status: 'loading' }` on the probes'
 * routes, E_NOT_READY on the others (in the protocol's own shape under /v2).
 */
function answerWhileLoading(req, res) {
  const path = req.url.split('?')[0];
  const failure = toHttpError(new ChoripanError('E_NOT_READY', 'The server is loading its models: retry in a moment'));
  const body = path === PATHS.healthz || path === PATHS.readyz ? { status: 'loading' } : errorBody(path, failure);
  res.writeHead(failure.status, { 'Content-Type': 'application/json', 'Retry-After': String(failure.retryAfter) });
  res.end(JSON.stringify(body));
}

/**
 * The load options of a model that will be one of `count` in this process: the configured ones, and,
 * unless CHORIPAN_WORKERS says, its share of the cores. A model alone takes every core as the core
 * schedules its format (a worker on each for a package, one worker on all of them for TorchScript);
 * models in one process share them, each with its share of workers, one thread each (the first widening
 * to the share for a batch that runs alone), so that together they never run more threads than cores.
 * A repository puts every version it serves back on its share after each change
 * (js/server/repository.js); with CHORIPAN_WORKERS, the share is that, whatever the count.
 */
function loadOptionsFor(config, count) {
  if (config.load.workers !== undefined || count === 1) return config.load;
  return { ...config.load, workers: Math.max(1, Math.floor(availableCores() / count)), intraOpThreads: 1 };
}

/** The models a list names (--model, CHORIPAN_MODELS, CHORIPAN_MODEL), loaded one after the other. */
async function loadModels(config, logger) {
  const models = new Map();
  for (const { name, path } of config.models) {
    const started = performance.now();
    const model = await load(path, loadOptionsFor(config, config.models.length));
    models.set(name ?? model.name, model);
    logLoaded(logger, model, { model: name ?? model.name, path, ms: Math.round(performance.now() - started) }, 'model loaded');
  }
  return models;
}

/** The model repository, with what its control mode loads at start loaded. */
async function openRepository(config, logger) {
  const repository = await ModelRepository.open(config.modelRepository, { control: config.modelControl, pollMs: config.repositoryPollMs,
    loadOptions: (count) => loadOptionsFor(config, count), logger });
  await repository.start();
  return repository;
}

/**
 * Takes the port, loads the configured models (or the model repository's), and serves them until SIGTERM or SIGINT, then drains and
 * exits. The port comes first, so that a port in use or an address this machine lacks fails at once,
 * not after the models have loaded; while they load, requests are answered 503 (answerWhileLoading).
 * @param {ReturnType<typeof readConfig>} config
 */
async function serve(config = readConfig()) {
  const logger = createLogger(config.logLevel);
  const { host } = config;
  let handle = answerWhileLoading;
  const server = http.createServer((req, res) => handle(req, res));
  server.on('clientError', answerClientError);
  const { address, port } = await listen(server, config.port, host);
  const url = `http://${hostPort(host, port)}`;
  let grpcServer = null;
  let limiter = null; // the app's rate limit, once the app exists: gRPC's calls take from its buckets
  if (config.grpcPort !== undefined) {
    try {
      grpcServer = await startGrpcServer({ host, port: config.grpcPort, maxBodyBytes: config.maxBodyBytes, logger,
        checkCall: grpcAccess(config.apiKeys, () => limiter) });
    } catch (error) {
      server.close();
      throw error;
    }
  }
  // No "port" field yet: what reads the log for it (tests/js/helpers.js listening()) waits for the
  // line that says the models are ready.
  const loading = !config.models ? `the model repository ${config.modelRepository} (model control ${config.modelControl})`
    : config.models.length === 1 ? 'the model' : `${config.models.length} models`;
  logger.info({ url }, `listening on ${url}; loading ${loading}`);
  if (!config.apiKeys && !isLoopback(address)) {
    logger.warn({ address }, `${url} is open to the network and takes no API keys: whoever reaches it may use it (set CHORIPAN_API_KEYS_FILE)`);
  }

  let served;
  try {
    served = config.models ? { models: await loadModels(config, logger) } : { repository: await openRepository(config, logger) };
  } catch (error) {
    server.close();
    grpcServer?.server.forceShutdown();
    throw error;
  }

  // OpenTelemetry's SDK is loaded only when OTEL_* variables ask for an exporter (config.js readTracing).
  const tracing = config.tracing ? require('./tracing').startTracing(config.tracing, logger) : null;
  if (tracing) logger.info({ protocol: config.tracing.protocol }, `tracing: spans go over OTLP (${config.tracing.protocol})`);
  const app = createApp({ ...served, ...appSettings(config), logger, tracer: tracing?.tracer, apiKeys: config.apiKeys });
  handle = serverHandler(app);
  limiter = app.locals.limiter;
  const names = served.models ? [...served.models.keys()] : served.repository.catalog.names();
  // The gRPC service answers from the app's catalog, and loads and unloads through the same repository.
  grpcServer?.serve({ catalog: app.locals.catalog, repository: served.repository, ready: app.locals.ready,
    timeoutMs: config.timeoutMs, metrics: app.locals.metrics });
  const grpcPort = grpcServer?.port;
  const grpcAt = grpcServer ? ` and gRPC on ${hostPort(host, grpcPort)}` : '';
  logger.info({ address, port, grpcPort }, `ready: serving ${names.join(', ') || 'no model yet'} on ${url}${grpcAt}`);
  // Every model, or the repository's versions once each has answered the requests it holds.
  const unload = () => served.repository?.close() ?? Promise.all([...served.models.values()].map((model) => model.dispose()));

  // Graceful: stop accepting connections, answer the requests in hand with `Connection: close` (so
  // that keep-alive clients move on), close idle connections as they become idle, free the model, send
  // the spans still held, exit 0. A second signal, or ten seconds, cut it short.
  let stopping = false;
  const stop = (signal) => {
    if (stopping) {
      logger.warn({ signal }, 'stopping now');
      process.exit(1);
    }
    stopping = true;
    app.locals.draining = true;
    logger.info({ signal }, 'stopping: finishing the requests in hand');
    const deadline = performance.now() + STOP_MS;
    setTimeout(() => {
      logger.warn(`requests still running after ${STOP_MS / 1000} s; stopping anyway`);
      process.exit(1);
    }, STOP_MS).unref();
    // The gRPC server, if any, takes no new call and finishes those in hand, alongside.
    const closed = Promise.all([new Promise((resolve) => server.close(resolve)), grpcServer?.shutdown()]);
    closed.then(async () => {
      await unload();
      if (tracing) await sendLastSpans(tracing, logger, Math.min(SPANS_STOP_MS, deadline - performance.now()));
      logger.info('stopped');
      process.exit(0);
    });
    server.closeIdleConnections();
    server.on('request', (req, res) => res.on('finish', () => server.closeIdleConnections()));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/**
 * The spans still held, sent as the server stops, for `ms` at most: a collector that is down or does not
 * answer (the exporter retries for OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default) must not hold up a
 * restart, nor make a drained server's exit look like a failure.
 */
async function sendLastSpans(tracing, logger, ms) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve(new Error(`the collector took no spans in ${Math.round(ms)} ms`)), Math.max(0, ms));
  });
  const failure = await Promise.race([tracing.shutdown().then(() => null, (error) => error), late]);
  clearTimeout(timer);
  if (failure) logger.warn({ err: failure }, 'tracing: the last spans were not sent');
}

/** Node's own parse errors (a bad chunk, headers too large, …) answered in choripan's JSON shape. */
function answerClientError(error, socket) {
  if (!socket.writable || error.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const failure = toHttpError(error, { unparsed: true });
  const body = JSON.stringify(errorBody(undefined, failure));
  socket.end(`HTTP/1.1 ${failure.status} ${http.STATUS_CODES[failure.status]}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** Why the server did not start, in one line on stderr: a bad variable (exit status 2), or anything else (1). */
function fail(error) {
  console.error(`choripan: ${summary(error)}`);
  process.exit(error instanceof ConfigError ? 2 : 1);
}

if (require.main === module) {
  try {
    serve(readConfig()).catch(fail);
  } catch (error) {
    fail(error);
  }
}

module.exports = { serve, fail, answerClientError, loadOptionsFor };
