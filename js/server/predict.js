'use strict';
// POST /predict (the image as the body, image/* or application/octet-stream, or the multipart field
// `image`) and GET /predict?url=… for allow-listed hosts: the model's most probable labels, from the
// model ?model= names or the first.

const express = require('express');
const multer = require('multer');
const getRawBody = require('raw-body');
const typeis = require('type-is');
const { ChoripanError } = require('../errors');
const { fetchImage } = require('./fetch-image');
const { PATHS } = require('./paths');
const { requestDeadline, clientGone, inRequestTrace } = require('./request');
const { trackRequest, sendJson, refuseDeclaredBody, answerFailure } = require('./middleware');
const { clientAddress } = require('./trust-proxy');

/**
 * A raw body's types. The format is read from the bytes (js/decode.js), never from the type: a client that
 * does not know what it holds (a file without an extension) sends application/octet-stream.
 */
const RAW_TYPES = ['image/*', 'application/octet-stream'];

// By the header alone: req.is() answers null for an empty body, which must get 400, not 415.
const contentType = (req) => req.headers['content-type'] ?? '';

const EMPTY_BODY = 'The request body is empty: send the image bytes';
const isMultipart = (req) => typeis.is(contentType(req), ['multipart/form-data']);

/**
 * @param {object} options createApp's
 * @param {import('./catalog').Catalog} options.catalog the models served; ?model= names one (its highest version), else the default
 * @param {(url: URL) => boolean} options.allowed whether GET /predict?url= may fetch a URL (js/server/fetch-image.js)
 * @param {number} options.maxBodyBytes
 * @param {number} options.fetchTimeoutMs
 * @param {number} options.timeoutMs
 * @param {string} [options.defaultLabel]
 * @param {ReturnType<typeof import('./metrics').createMetrics>} options.metrics
 * @param {ReturnType<typeof import('./retry').createRetryPacing>} options.pacing
 */
function createPredictRouter(options) {
  const { catalog, allowed, maxBodyBytes, fetchTimeoutMs, pacing } = options;
  const answer = answering(options);
  const holdRetries = pacing.hold((req) => catalog.find(req.query.model ?? catalog.defaultName())?.model);
  // Small text fields only: the image is the one file, so the whole body stays near maxBodyBytes.
  const upload = multer({
    storage: multer.memoryStorage(),
    limits: { fileSize: maxBodyBytes, files: 1, fields: 20, fieldSize: 1024, parts: 21 },
  });
  // multer passes the multipart parser's own errors (no boundary, truncated body) through as plain
  // Errors: mark them as the client's (js/server/http-error.js).
  const parseMultipart = (req, res, next) => upload.single('image')(req, res, (error) => {
    if (error && !(error instanceof multer.MulterError)) error.multipart = true;
    next(error);
  });
  const rawImage = express.raw({ type: RAW_TYPES, limit: maxBodyBytes });

  const router = express.Router();
  router.post(PATHS.predict, holdRetries, (req, res, next) => {
    if (isMultipart(req)) {
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
    if (isMultipart(req) && !req.file) {
      throw new ChoripanError('E_INVALID_ARGUMENT', "The multipart body has no file in a field named 'image'");
    }
    if (!Buffer.isBuffer(image) || image.length === 0) throw new ChoripanError('E_INVALID_ARGUMENT', EMPTY_BODY);
    await answer(req, res, image, clientGone(res), req.query.model);
  });

  router.get(PATHS.predict, holdRetries, async (req, res) => {
    const { url } = req.query;
    if (typeof url !== 'string' || url === '') {
      throw new ChoripanError('E_INVALID_ARGUMENT', 'GET /predict needs ?url=<image URL>; or POST the image bytes');
    }
    const signal = clientGone(res);
    const image = await fetchImage(url, { allowed, maxBytes: maxBodyBytes, timeoutMs: fetchTimeoutMs, signal });
    await answer(req, res, image, signal, req.query.model);
  });

  return router;
}

/**
 * How the routes answer with a model: `answer(req, res, image, signal, asked)` runs the highest version of
 * the model named `asked` (?model=; the default without it) and writes its labels, or, past the deadline
 * with a default label, that one.
 * @param {object} options createPredictRouter's
 */
function answering({ catalog, timeoutMs, defaultLabel, metrics }) {
  function modelFor(name = catalog.defaultName()) {
    const found = catalog.find(name);
    if (found) return found;
    const names = catalog.names();
    throw new ChoripanError('E_INVALID_ARGUMENT', names.length ? `There is no model named ${JSON.stringify(name)}; there are ${names.join(', ')}`
      : 'No model is loaded: POST /v2/repository/models/NAME/load loads one');
  }

  return async function answer(req, res, image, signal, asked) {
    const started = performance.now();
    const served = modelFor(asked);
    const { name, model: chosen } = served;
    res.locals.model = name;
    res.locals.version = served.version;
    res.locals.chosen = chosen;
    let result;
    const release = catalog.acquire(served);
    try {
      const options = { signal, timeoutMs: requestDeadline(req, timeoutMs) };
      result = await inRequestTrace(res, () => chosen.predict(image, options));
    } catch (error) {
      if (error.code !== 'E_TIMEOUT' || defaultLabel === undefined) throw error;
      // Past the deadline, Clipper's way: a default answer, said to be one, and counted.
      metrics.defaultAnswer(served);
      res.locals.label = defaultLabel;
      res.locals.probability = 0;
      return sendJson(res, 200, { label: defaultLabel, default: true, model: name, elapsedMs: Math.round((performance.now() - started) * 100) / 100 });
    } finally {
      release();
    }
    res.locals.label = result.label;
    res.locals.probability = result.probability;
    return sendJson(res, 200, { ...result, model: name, elapsedMs: Math.round((performance.now() - started) * 100) / 100 });
  };
}

/**
 * The predict lane: the requests of POST /predict that carry the image as a raw body, answered without
 * the app's router, as the route answers them (the same answer, log line, metrics and failures), for less
 * of the event loop's CPU (docs/benchmark.md, the ninth run): on a small machine that time comes out of
 * the model's. createApp makes it only where nothing else stands in front of the
 * route (no tracer, CORS origins, API keys, rate limit or trusted proxy), and it takes only the exact
 * path without a query, an image or octet-stream body without Content-Encoding, on a connection whose
 * retries are not held (js/server/retry.js), while the server is not draining; the app answers the rest.
 * @param {object} options createPredictRouter's
 * @param {{ logger: import('pino').Logger, draining: () => boolean }} server
 * @returns {(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => boolean} whether it took the request
 */
function createPredictLane(options, { logger, draining }) {
  const { maxBodyBytes, metrics, pacing } = options;
  const answer = answering(options);
  // What the app's error handler would answer; past it (nothing should get there), the connection goes,
  // as nothing can be answered on it any more, and the process stays.
  const fail = (req, res, error) => {
    try {
      answerFailure({ logger, maxBodyBytes, pacing }, error, req, res, PATHS.predict);
    } catch (unanswered) {
      logger.error({ err: unanswered }, 'unexpected error');
      res.destroy();
    }
  };
  function take(req, res) {
    res.locals = Object.create(null);
    const refusal = refuseDeclaredBody(req, res, maxBodyBytes);
    // As in the app, a body refused on its headers never reached the route: it counts as no route's.
    const route = refusal ? undefined : PATHS.predict;
    trackRequest({ logger, metrics }, req, res, () => ({ route, path: PATHS.predict, client: clientAddress(req) }));
    if (refusal) return fail(req, res, refusal);
    return getRawBody(req, { length: req.headers['content-length'], limit: maxBodyBytes }).then((image) => {
      if (image.length === 0) throw new ChoripanError('E_INVALID_ARGUMENT', EMPTY_BODY);
      return answer(req, res, image, clientGone(res));
    }, (error) => readOff(req).then(() => {
      throw error;
    })).catch((error) => fail(req, res, error));
  }
  return (req, res) => {
    if (req.method !== 'POST' || req.url !== PATHS.predict || draining() || req.headers['content-encoding'] !== undefined ||
      !typeis.is(contentType(req), RAW_TYPES) || pacing.holds(req)) return false;
    try {
      take(req, res);
    } catch (error) {
      fail(req, res, error);
    }
    return true;
  };
}

/**
 * What is left of a body refused while it was read (over the limit), read off before the answer, as
 * body-parser does in the app: the connection can then carry the client's next request.
 */
function readOff(req) {
  if (req.complete || req.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    req.once('end', resolve);
    req.once('close', resolve);
    req.resume();
  });
}

module.exports = { createPredictRouter, createPredictLane };
