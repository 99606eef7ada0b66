'use strict';
// The HTTP service: POST /predict (raw image/* body or multipart field `image`), GET /predict?url=…
// for allow-listed hosts, the Open Inference Protocol v2 under /v2, /healthz, /readyz, /metrics,
// /openapi.json and a page at /. Every failure of its own routes answers JSON { error: { code, message } }
// (the protocol's routes, its { error }); mounted in another app, it passes other routes on.

const crypto = require('node:crypto');
const path = require('node:path');
const express = require('express');
const multer = require('multer');
const pino = require('pino');
const typeis = require('type-is');
const { ChoripanError } = require('../errors');
const { fetchImage, parseAllowlist } = require('./fetch-image');
const { createMetrics } = require('./metrics');
const { corsFor, parseOrigins } = require('./cors');
const { createOipRouter } = require('./oip');
const { openapi } = require('./openapi');
const { createRetryPacing } = require('./retry');
const { toHttpError, errorBody } = require('./http-error');
const { serverVariables } = require('../vocabulary');
const { PATHS, isOwn } = require('./paths');

/** createApp's defaults: those of the variables that set its options (native/core/vocabulary.json). */
const APP_DEFAULTS = Object.fromEntries(serverVariables().filter((v) => v.app).map((v) => [v.setting, v.default]));

/**
 * A raw body's types. The format is read from the bytes (js/decode.js), never from the type: a client that
 * does not know what it holds (a file without an extension) sends application/octet-stream.
 */
const RAW_TYPES = ['image/*', 'application/octet-stream'];

/**
 * @param {object} options
 * @param {import('../model').Model} [options.model] the one model served (or `models`)
 * @param {Map<string, import('../model').Model>} [options.models] models by name; the first is the default
 * @param {string} [options.urlAllowlist] comma list of host[:port] that GET /predict?url= may fetch
 * @param {string} [options.corsOrigins] comma list of origins whose browser apps may call it, or '*'
 * @param {import('pino').Logger} [options.logger]
 * @param {number} [options.maxBodyBytes]
 * @param {number} [options.fetchTimeoutMs]
 * @param {number} [options.timeoutMs] the longest a request may take; X-Request-Timeout-Ms may ask for less
 * @param {string} [options.defaultLabel] answer 200 { label, default: true } past the deadline instead of 504
 */
function createApp({
  model,
  models = new Map([[model?.name ?? 'model', model]]),
  urlAllowlist = APP_DEFAULTS.urlAllowlist,
  corsOrigins = APP_DEFAULTS.corsOrigins,
  logger = pino(),
  maxBodyBytes = APP_DEFAULTS.maxBodyBytes,
  fetchTimeoutMs = APP_DEFAULTS.fetchTimeoutMs,
  timeoutMs = APP_DEFAULTS.timeoutMs,
  defaultLabel,
}) {
  if (![...models.values()].every(Boolean)) throw new TypeError('createApp needs a model, or a Map of models');
  const allowed = parseAllowlist(urlAllowlist);
  let crossOrigin;
  try {
    crossOrigin = corsFor(parseOrigins(corsOrigins));
  } catch (error) {
    throw new TypeError(`corsOrigins: ${error.message}`);
  }
  const [defaultName] = models.keys();
  const metrics = createMetrics(models);
  const pacing = createRetryPacing(models.values());
  const holdRetries = pacing.hold((req) => models.get(req.query.model ?? defaultName));
  // Small text fields only: the image is the one file, so the whole body stays near maxBodyBytes.
  const upload = multer({
    storage: multer.memoryStorage(),
    limits: { fileSize: maxBodyBytes, files: 1, fields: 20, fieldSize: 1024, parts: 21 },
  });
  // multer passes the multipart parser's own errors (no boundary, truncated body) through as plain
  // Errors: mark them as the client's.
  const parseMultipart = (req, res, next) => upload.single('image')(req, res, (error) => {
    if (error && !(error instanceof multer.MulterError)) error.multipart = true;
    next(error);
  });
  const rawImage = express.raw({ type: RAW_TYPES, limit: maxBodyBytes });
  const app = express();
  app.disable('x-powered-by');
  // Set by the server when it drains (main.js): /readyz turns 503 and every answer closes its connection.
  app.locals.draining = false;
  const ready = () => !app.locals.draining && [...models.values()].every((m) => !m.disposed);

  app.use((req, res, next) => {
    if (app.parent && !isOwn(req.path)) return next('router'); // mounted: the host app's path
    if (app.locals.draining) res.set('Connection', 'close');
    // One log line per request, with an id (X-Request-Id, or a new one), echoed back.
    const id = /^[\w.:-]{1,128}$/.test(req.get('x-request-id') ?? '') ? req.get('x-request-id') : crypto.randomUUID();
    res.set('X-Request-Id', id);
    const started = performance.now();
    res.on('finish', () => {
      const seconds = (performance.now() - started) / 1000;
      const ms = Math.round(seconds * 10_000) / 10;
      metrics.request(req.route?.path, req.method, res.statusCode, seconds);
      const { label, probability, errorCode, model: name } = res.locals;
      const where = req.originalUrl.split('?')[0];
      logger.info({ id, method: req.method, path: where, status: res.statusCode, model: name, label, probability, errorCode, ms },
        label ? `${label} (${probability.toFixed(3)}) in ${ms} ms` : `${req.method} ${where} ${res.statusCode} in ${ms} ms`);
    });
    return next();
  });
  // Before anything can refuse a request: a browser shows a script of another origin an error only when
  // it carries these headers too.
  if (crossOrigin) app.use(crossOrigin);
  app.use((req, res, next) => {
    // A body declared larger than the limit is refused on its headers, and the connection closed rather
    // than read to the end.
    const declared = Number(req.get('content-length'));
    if (declared > maxBodyBytes) {
      res.set('Connection', 'close');
      return next(new ChoripanError('E_TOO_LARGE', `The body is ${declared} bytes; the limit is ${maxBodyBytes}`));
    }
    return next();
  });

  // Aborts when the client goes away before the answer is written, so that no work is done for nobody.
  function clientGone(res) {
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableEnded) controller.abort();
    });
    return controller.signal;
  }

  // A request may ask for less time than the server allows, never more.
  function deadline(req) {
    const asked = req.get('x-request-timeout-ms');
    if (asked === undefined) return timeoutMs;
    const value = Number(asked);
    if (!Number.isInteger(value) || value < 1) {
      throw new ChoripanError('E_INVALID_ARGUMENT', `X-Request-Timeout-Ms must be a positive integer, got '${asked}'`);
    }
    return Math.min(value, timeoutMs);
  }

  function modelFor(req) {
    const name = req.query.model ?? defaultName;
    const found = typeof name === 'string' && models.get(name);
    if (!found) {
      throw new ChoripanError('E_INVALID_ARGUMENT', `There is no model named ${JSON.stringify(name)}; there are ${[...models.keys()].join(', ')}`);
    }
    return [name, found];
  }

  async function answer(req, res, image, signal) {
    const started = performance.now();
    const [name, chosen] = modelFor(req);
    res.locals.model = name;
    res.locals.chosen = chosen;
    let result;
    try {
      result = await chosen.predict(image, { signal, timeoutMs: deadline(req) });
    } catch (error) {
      if (error.code !== 'E_TIMEOUT' || defaultLabel === undefined) throw error;
      // Past the deadline, Clipper's way: a default answer, said to be one, and counted.
      metrics.defaultAnswer(name);
      res.locals.label = defaultLabel;
      res.locals.probability = 0;
      return res.json({ label: defaultLabel, default: true, model: name, elapsedMs: Math.round((performance.now() - started) * 100) / 100 });
    }
    res.locals.label = result.label;
    res.locals.probability = result.probability;
    return res.json({ ...result, model: name, elapsedMs: Math.round((performance.now() - started) * 100) / 100 });
  }

  // By the header alone: req.is() answers null for an empty body, which must get 400, not 415.
  const contentType = (req) => req.get('content-type') ?? '';
  app.post(PATHS.predict, holdRetries, (req, res, next) => {
    if (typeis.is(contentType(req), ['multipart/form-data'])) {
      const encoding = (req.get('content-encoding') ?? 'identity').toLowerCase();
      if (encoding !== 'identity') {
        return next(new ChoripanError('E_UNSUPPORTED_FORMAT', `Content-Encoding ${encoding} is not accepted on multipart bodies`));
      }
      return parseMultipart(req, res, next);
    }
    if (typeis.is(contentType(req), RAW_TYPES)) return rawImage(req, res, next);
    return next(new ChoripanError('E_UNSUPPORTED_FORMAT',
      `Content-Type ${req.get('content-type') ?? '(none)'} is not accepted: send image bytes with Content-Type image/* ` +
      "or application/octet-stream, or multipart/form-data with the image in a field named 'image'"));
  }, async (req, res) => {
    const image = req.file ? req.file.buffer : req.body;
    if (typeis.is(contentType(req), ['multipart/form-data']) && !req.file) {
      throw new ChoripanError('E_INVALID_ARGUMENT', "The multipart body has no file in a field named 'image'");
    }
    if (!Buffer.isBuffer(image) || image.length === 0) {
      throw new ChoripanError('E_INVALID_ARGUMENT', 'The request body is empty: send the image bytes');
    }
    await answer(req, res, image, clientGone(res));
  });

  app.get(PATHS.predict, holdRetries, async (req, res) => {
    const { url } = req.query;
    if (typeof url !== 'string' || url === '') {
      throw new ChoripanError('E_INVALID_ARGUMENT', 'GET /predict needs ?url=<image URL>; or POST the image bytes');
    }
    const signal = clientGone(res);
    const image = await fetchImage(url, { allowed, maxBytes: maxBodyBytes, timeoutMs: fetchTimeoutMs, signal });
    await answer(req, res, image, signal);
  });

  app.use(createOipRouter({ models, ready, maxBodyBytes, deadline, signal: clientGone,
    holdRetries: pacing.hold((req) => models.get(req.params.name)) }));

  app.get(PATHS.readyz, (req, res) => {
    res.status(ready() ? 200 : 503).json({ status: ready() ? 'ready' : 'draining', models: [...models.keys()] });
  });

  app.get(PATHS.healthz, (req, res) => {
    const stats = Object.fromEntries([...models].map(([name, m]) => [name, m.disposed ? null : m.stats()]));
    res.json({ status: 'ok', model: defaultName, models: stats });
  });

  app.get(PATHS.metrics, async (req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.get(PATHS.openapi, (req, res) => res.json(openapi(models)));

  // The page: plain HTML, CSS and JS, no build step and nothing from elsewhere. Its links are relative, so
  // that it works wherever it is mounted, and behind a proxy that strips a prefix; mounted at /vision, a
  // request for /vision would resolve them against the host's root, so it is sent to /vision/ first (as
  // serve-static does for a folder). The Location names only the last segment, relative to the request
  // ("./vision/"): no input can make it point at another host.
  const page = path.join(__dirname, 'page');
  app.get(PATHS.page, (req, res) => {
    const url = req.originalUrl;
    const pathname = url.includes('?') ? url.slice(0, url.indexOf('?')) : url;
    if (pathname.endsWith('/')) return res.sendFile(path.join(page, 'index.html'));
    return res.redirect(301, `./${pathname.slice(pathname.lastIndexOf('/') + 1)}/${url.slice(pathname.length)}`);
  });
  app.get(PATHS.pageScript, (req, res) => res.sendFile(path.join(page, 'page.js')));
  app.get(PATHS.pageStyle, (req, res) => res.sendFile(path.join(page, 'page.css')));
  // An SVG, which every browser that shows favicons reads by its type, whatever the name.
  app.get(PATHS.favicon, (req, res) => res.sendFile(path.join(page, 'favicon.svg')));

  app.use((req, res, next) => next(new ChoripanError('E_NOT_FOUND', `No route for ${req.method} ${req.path}`)));

  // eslint-disable-next-line no-unused-vars -- Express tells error handlers by their four parameters
  app.use((error, req, res, next) => {
    const { chosen } = res.locals;
    const failure = toHttpError(error, { maxBodyBytes, model: chosen });
    if (failure.code === 'E_INTERNAL') logger.error({ err: error }, 'unexpected error');
    res.locals.errorCode = failure.code;
    if (res.headersSent || req.socket.destroyed) return;
    if (failure.retryAfter !== undefined) {
      res.set('Retry-After', String(failure.retryAfter));
      if (chosen && failure.code === 'E_QUEUE_FULL') pacing.refused(req, chosen, failure.retryAfter);
    }
    res.status(failure.status).json(errorBody(req.path, failure));
  });

  return app;
}

module.exports = { createApp };
