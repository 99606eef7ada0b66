'use strict';
// The HTTP service: POST /predict (raw image/* body or multipart field `image`), GET /predict?url=…
// for allow-listed hosts, the Open Inference Protocol v2 under /v2 (its repository extension included),
// /healthz, /readyz, /metrics, /openapi.json and a page at /. Every failure of its own routes answers
// JSON { error: { code, message } } (the protocol's routes, its { error }); mounted in another app, it
// passes other routes on.
// createApp checks its options and composes the parts: the middleware (js/server/middleware.js, cors.js,
// api-keys.js, rate-limit.js), the routes (predict.js, oip.js, repository-routes.js, operations.js), the
// page (page.js), and the answer to every failure; given a tracer, a span for each request
// (trace-requests.js). serverHandler is what a server of the app's own listens with (main.js): where
// nothing stands in front of POST /predict, its raw image bodies go first to predict.js's lane, which
// answers them as the route does without the router.

const express = require('express');
const pino = require('pino');
const { parseAllowlist } = require('./fetch-image');
const { createMetrics } = require('./metrics');
const { corsFor, parseOrigins } = require('./cors');
const { createRetryPacing } = require('./retry');
const { passOthers, closeWhileDraining, requestLog, bodyLimit, notFound, answerErrors } = require('./middleware');
const { createPredictRouter, createPredictLane } = require('./predict');
const { createOipRouter } = require('./oip');
const { createRepositoryRouter } = require('./repository-routes');
const { createOperationsRouter } = require('./operations');
const { createPageRouter } = require('./page');
const { Catalog } = require('./catalog');
const { keyring, requireKeys } = require('./api-keys');
const { parseRateLimit, createBuckets, createLimiter, limitRate } = require('./rate-limit');
const { parseTrustProxy } = require('./trust-proxy');
const { serverVariables } = require('../vocabulary');

/** createApp's defaults: those of the variables that set its options (native/core/vocabulary.json). */
const APP_DEFAULTS = Object.fromEntries(serverVariables().filter((v) => v.app).map((v) => [v.setting, v.default]));

/**
 * @param {object} options
 * @param {import('../index').Model} [options.model] the one model served (or `models`)
 * @param {Map<string, import('../index').Model>} [options.models] models by name; the first is the default
 * @param {import('./repository').ModelRepository} [options.repository] instead of `models`: a model
 *   repository, whose models come and go while the app runs (`choripan serve --model-repository`)
 * @param {string} [options.urlAllowlist] comma list of host[:port] that GET /predict?url= may fetch
 * @param {string} [options.corsOrigins] comma list of origins whose browser apps may call it, or '*'
 * @param {import('pino').Logger} [options.logger]
 * @param {number} [options.maxBodyBytes]
 * @param {number} [options.fetchTimeoutMs]
 * @param {number} [options.timeoutMs] the longest a request may take; X-Request-Timeout-Ms may ask for less
 * @param {string} [options.defaultLabel] answer 200 { label, default: true } past the deadline instead of 504
 * @param {import('@opentelemetry/api').Tracer} [options.tracer] a span for each request (js/server/trace-requests.js)
 * @param {Array<{ key: string, scope: 'infer' | 'admin' }>} [options.apiKeys] the keys that may call it (js/server/api-keys.js)
 * @param {boolean} [options.metricsAuth] /metrics needs a key too
 * @param {string} [options.rateLimit] RATE:BURST, a token bucket per key, or per client address without keys
 * @param {string} [options.trustProxy] the proxies whose X-Forwarded-For names the client (js/server/trust-proxy.js);
 *   unset, an app mounted in another takes that one's `trust proxy`
 */
function createApp({
  model,
  models = new Map([[model?.name ?? 'model', model]]),
  repository,
  urlAllowlist = APP_DEFAULTS.urlAllowlist,
  corsOrigins = APP_DEFAULTS.corsOrigins,
  logger = pino(),
  maxBodyBytes = APP_DEFAULTS.maxBodyBytes,
  fetchTimeoutMs = APP_DEFAULTS.fetchTimeoutMs,
  timeoutMs = APP_DEFAULTS.timeoutMs,
  defaultLabel,
  tracer,
  apiKeys,
  metricsAuth = APP_DEFAULTS.metricsAuth,
  rateLimit = APP_DEFAULTS.rateLimit,
  trustProxy = APP_DEFAULTS.trustProxy,
}) {
  if (!repository && ![...models.values()].every(Boolean)) throw new TypeError('createApp needs a model, or a Map of models');
  const catalog = repository?.catalog ?? Catalog.of(models);
  const keys = apiKeys === undefined ? null : checked('apiKeys', () => keyring(apiKeys));
  if (metricsAuth && !keys) throw new TypeError('metricsAuth: closing /metrics needs apiKeys');
  const metricsOpen = !metricsAuth;
  const limit = rateLimit ? checked('rateLimit', () => parseRateLimit(rateLimit)) : null;
  const proxies = trustProxy ? checked('trustProxy', () => parseTrustProxy(trustProxy)) : null;
  const allowed = parseAllowlist(urlAllowlist);
  const crossOrigin = checked('corsOrigins', () => corsFor(parseOrigins(corsOrigins)));
  const metrics = createMetrics(catalog, repository && (() => repository.loadFailures()));
  const limiter = limit ? createLimiter({ buckets: createBuckets(limit), metrics }) : null;
  const pacing = createRetryPacing();
  const app = express();
  app.disable('x-powered-by');
  if (proxies !== null) app.set('trust proxy', proxies);
  // Set by the server when it drains (main.js): /readyz turns 503 and every answer closes its connection.
  app.locals.draining = false;
  // Read by the gRPC service (js/server/grpc.js, main.js), which answers from the same catalog (and
  // repository), counts its calls beside the app's requests and takes them from the same rate limit's
  // buckets (null without one).
  app.locals.catalog = catalog;
  app.locals.metrics = metrics;
  app.locals.limiter = limiter;
  app.locals.ready = () => ready();
  const ready = () => !app.locals.draining && catalog.all().every((served) => !served.model.disposed);

  app.use(passOthers(app));
  // Only when asked for: without a tracer, no OpenTelemetry module is loaded and no request pays for one.
  if (tracer) app.use(require('./trace-requests').traceRequests({ tracer, catalog }));
  app.use(closeWhileDraining(app), requestLog({ logger, metrics }));
  // Before anything can refuse a request: a browser shows a script of another origin an error only when
  // it carries these headers too.
  if (crossOrigin) app.use(crossOrigin);
  // Keys and limits before any body is read: a client refused reads nothing into memory.
  app.use(requireKeys({ keys, metricsOpen }));
  if (limiter) app.use(limitRate({ limiter, metricsOpen }));
  app.use(bodyLimit(maxBodyBytes));
  const predicting = { catalog, allowed, maxBodyBytes, fetchTimeoutMs, timeoutMs, defaultLabel, metrics, pacing };
  app.use(createPredictRouter(predicting));
  // Read by serverHandler: where nothing stands in front of POST /predict, its raw bodies skip the router.
  app.locals.predictLane = tracer || crossOrigin || keys || limiter || proxies !== null ? null
    : createPredictLane(predicting, { logger, draining: () => app.locals.draining });
  app.use(createOipRouter({ catalog, ready, maxBodyBytes, timeoutMs, pacing }));
  app.use(createRepositoryRouter({ repository, catalog, maxBodyBytes }));
  app.use(createOperationsRouter({ catalog, ready, metrics, access: { keys: Boolean(keys), metricsOpen, limited: Boolean(limit) } }));
  app.use(createPageRouter());
  app.use(notFound);
  app.use(answerErrors({ logger, maxBodyBytes, pacing }));
  return app;
}

/**
 * The request listener that serves `app` (createApp's) from a server of its own (js/server/main.js):
 * the predict lane first (js/server/predict.js), where createApp made one, then the app. An app mounted
 * in another one, or served by http.createServer(app), answers everything itself, the same way.
 * @param {import('express').Express} app
 */
function serverHandler(app) {
  const lane = app.locals?.predictLane;
  return lane ? (req, res) => lane(req, res) || app(req, res) : app;
}

/** `make()`, whose Error becomes a TypeError naming the option it was made from. */
function checked(option, make) {
  try {
    return make();
  } catch (error) {
    throw new TypeError(`${option}: ${error.message}`);
  }
}

module.exports = { createApp, serverHandler };
