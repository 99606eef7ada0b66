'use strict';
// The service's paths, named once: its routers mount on them, app.js tells its own requests from those
// of an app it is mounted in by them, main.js answers them while the models load, api-keys.js asks for
// the key each needs (accessOf), and openapi.js documents each (tests/js/server-operations.test.js checks that
// what is mounted is what is documented).

/** Each route outside the Open Inference Protocol, as Express writes it. */
const PATHS = Object.freeze({
  predict: '/predict',
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
  openapi: '/openapi.json',
  page: '/',
  pageScript: '/page.js',
  pageStyle: '/page.css',
  favicon: '/favicon.ico',
});

/** The Open Inference Protocol's prefix: every path under it is the protocol's. */
const PROTOCOL = '/v2';

/** The protocol's routes (js/server/oip.js): a model's, `modelRoutes`, each under both `modelPrefixes`. */
const OIP_PATHS = Object.freeze({
  server: PROTOCOL,
  live: `${PROTOCOL}/health/live`,
  ready: `${PROTOCOL}/health/ready`,
  modelPrefixes: Object.freeze([`${PROTOCOL}/models/:name`, `${PROTOCOL}/models/:name/versions/:version`]),
  modelRoutes: Object.freeze({ metadata: '', ready: '/ready', infer: '/infer' }),
});

/** The repository extension's prefix: every call under it changes or reads what is served. */
const REPOSITORY = `${PROTOCOL}/repository`;

/**
 * The protocol's repository extension (js/server/repository-routes.js): the index of the model
 * repository, and the calls that load and unload its models. Named together, apart from the routes
 * that infer, so that what guards them (an admin key, js/server/api-keys.js) guards them all.
 */
const REPOSITORY_PATHS = Object.freeze({
  index: `${REPOSITORY}/index`,
  load: `${REPOSITORY}/models/:name/load`,
  unload: `${REPOSITORY}/models/:name/unload`,
});

const OWN = new Set(Object.values(PATHS));

/**
 * The paths open to anyone whatever the keys: the probes (the protocol's too, which KServe and Triton
 * clients probe), and the page's files, which a browser fetches without a key. /metrics too, unless
 * CHORIPAN_METRICS_AUTH closes it.
 */
const OPEN = new Set([PATHS.healthz, PATHS.readyz, PATHS.page, PATHS.pageScript, PATHS.pageStyle, PATHS.favicon, OIP_PATHS.live, OIP_PATHS.ready]);

/** Whether `path` is the protocol's, whose answers take its shape (an error is `{ error: "…" }`). */
const isProtocol = (path) => path === PROTOCOL || path.startsWith(`${PROTOCOL}/`);

/**
 * Whether `path` is a repository call's. As Express matches routes: whatever the letters' case (its
 * routing is case-insensitive), with or without a trailing slash.
 */
const isRepository = (path) => `${path.toLowerCase()}/`.startsWith(`${REPOSITORY}/`);

/** Whether `path` is one of the service's own, not the app's it is mounted in. */
const isOwn = (path) => OWN.has(path) || isProtocol(path);

/**
 * What a request for `path` needs: 'open' (no key), 'admin' (an admin key), or 'infer' (a key of either
 * scope) for every other path, unknown ones included, so that a new route is closed until it is listed.
 * @param {string} path
 * @param {{ metricsOpen: boolean }} options
 * @returns {'open' | 'infer' | 'admin'}
 */
function accessOf(path, { metricsOpen }) {
  if (OPEN.has(path) || (metricsOpen && path === PATHS.metrics)) return 'open';
  return path === REPOSITORY || path.startsWith(`${REPOSITORY}/`) ? 'admin' : 'infer';
}

/** An Express path as OpenAPI writes it: `/v2/models/:name` is `/v2/models/{name}`. */
const openapiPath = (path) => path.replace(/:(\w+)/g, '{$1}');

module.exports = { PATHS, PROTOCOL, OIP_PATHS, REPOSITORY, REPOSITORY_PATHS, isProtocol, isRepository, isOwn, accessOf, openapiPath };
