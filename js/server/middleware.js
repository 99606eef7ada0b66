'use strict';
// What the app does around its routes, in the order createApp (js/server/app.js) mounts it: leave a
// host app's paths to it, close connections while draining, log and count each request, refuse a body
// declared over the limit on its headers; after the routes, 404 and the answer to every failure.
// (Cross-origin headers, between the log and the body limit, are js/server/cors.js's.)

const crypto = require('node:crypto');
const { ChoripanError } = require('../errors');
const { isOwn } = require('./paths');
const { toHttpError, errorBody } = require('./http-error');
const { clientAddress } = require('./trust-proxy');

/** Mounted in another app, `app` answers its own paths only: the rest is the host's. */
function passOthers(app) {
  return (req, res, next) => (app.parent && !isOwn(req.path) ? next('router') : next());
}

/** Set by the server when it drains (js/server/main.js): every answer then closes its connection. */
function closeWhileDraining(app) {
  return (req, res, next) => {
    if (app.locals.draining) res.set('Connection', 'close');
    next();
  };
}

/**
 * One log line per request, with an id (X-Request-Id, or a new one) echoed back, its client (as
 * js/server/trust-proxy.js tells it) and, when it is traced, its trace_id and span_id; and its count
 * and latency in the metrics. The routes leave what the line says of the answer in `res.locals`.
 * @param {{ logger: import('pino').Logger, metrics: ReturnType<typeof import('./metrics').createMetrics> }} options
 */
function requestLog(options) {
  return (req, res, next) => {
    trackRequest(options, req, res, () => ({ route: req.route?.path, path: req.originalUrl.split('?')[0], client: clientAddress(req) }));
    next();
  };
}

/**
 * What requestLog does for a request, whichever way it is handled (the predict lane, js/server/predict.js,
 * takes requests that never reach the app's router): `where()` tells, once it is answered, the pattern of
 * the route that matched it, its path and its client.
 */
function trackRequest({ logger, metrics }, req, res, where) {
  const asked = req.headers['x-request-id'];
  const id = typeof asked === 'string' && /^[\w.:-]{1,128}$/.test(asked) ? asked : crypto.randomUUID();
  res.setHeader('X-Request-Id', id);
  const started = performance.now();
  res.on('finish', () => {
    const seconds = (performance.now() - started) / 1000;
    const ms = Math.round(seconds * 10_000) / 10;
    const { route, path, client } = where();
    metrics.request(route, req.method, res.statusCode, seconds);
    const { label, probability, errorCode, model: name, traceIds } = res.locals;
    logger.info({ id, client, method: req.method, path, status: res.statusCode, model: name, label, probability, errorCode, ms, ...traceIds },
      label ? `${label} (${probability.toFixed(3)}) in ${ms} ms` : `${req.method} ${path} ${res.statusCode} in ${ms} ms`);
  });
}

/** A JSON answer, as the routes and the predict lane write theirs (Express's res.json, less the ETag that no client of a POST uses). */
function sendJson(res, status, value) {
  const text = JSON.stringify(value);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

/**
 * A body declared larger than the limit is refused on its headers, and the connection closed rather
 * than read to the end.
 * @param {number} maxBodyBytes
 */
function bodyLimit(maxBodyBytes) {
  return (req, res, next) => next(refuseDeclaredBody(req, res, maxBodyBytes));
}

/** bodyLimit's refusal of a request, whichever way it is handled; undefined when its body may be read. */
function refuseDeclaredBody(req, res, maxBodyBytes) {
  const declared = Number(req.headers['content-length']);
  if (!(declared > maxBodyBytes)) return undefined;
  res.setHeader('Connection', 'close');
  return new ChoripanError('E_TOO_LARGE', `The body is ${declared} bytes; the limit is ${maxBodyBytes}`);
}

/** What no route answered. */
function notFound(req, res, next) {
  next(new ChoripanError('E_NOT_FOUND', `No route for ${req.method} ${req.path}`));
}

/**
 * Every failure, answered as js/server/http-error.js says; a queue's refusal also tells the retry
 * pacing (js/server/retry.js) when the connection may come back.
 * @param {{ logger: import('pino').Logger, maxBodyBytes: number,
 *   pacing: ReturnType<typeof import('./retry').createRetryPacing> }} options
 */
function answerErrors(options) {
  // eslint-disable-next-line no-unused-vars -- Express tells error handlers by their four parameters
  return (error, req, res, next) => answerFailure(options, error, req, res, req.path);
}

/** What answerErrors does for a request's failure, whichever way it is handled; `path`: the request's. */
function answerFailure({ logger, maxBodyBytes, pacing }, error, req, res, path) {
  const { chosen } = res.locals;
  const failure = toHttpError(error, { maxBodyBytes, model: chosen });
  if (failure.code === 'E_INTERNAL') logger.error({ err: error }, 'unexpected error');
  res.locals.errorCode = failure.code;
  if (res.headersSent || req.socket.destroyed) return;
  if (failure.authenticate) res.setHeader('WWW-Authenticate', failure.authenticate);
  if (failure.retryAfter !== undefined) {
    res.setHeader('Retry-After', String(failure.retryAfter));
    if (chosen && failure.code === 'E_QUEUE_FULL') pacing.refused(req, chosen, failure.retryAfter);
  }
  sendJson(res, failure.status, errorBody(path, failure));
}

module.exports = { passOthers, closeWhileDraining, requestLog, trackRequest, sendJson, bodyLimit, refuseDeclaredBody, notFound, answerErrors, answerFailure };
