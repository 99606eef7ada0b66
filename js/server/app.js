'use strict';
// The HTTP service: POST /predict (raw image/* body or multipart field `image`), GET /predict?url=…
// for allow-listed hosts, GET /healthz. Every failure answers JSON { error: { code, message } }.

const express = require('express');
const multer = require('multer');
const pino = require('pino');
const typeis = require('type-is');
const { ChoripanError, STATUS } = require('../errors');
const { fetchImage, parseAllowlist } = require('./fetch-image');

const MAX_BODY_BYTES = 10 * 1024 * 1024;


/** body-parser's and multer's own errors, in choripan's vocabulary. */
function translate(error, maxBodyBytes) {
  if (error instanceof ChoripanError) return error;
  if (error?.type === 'entity.too.large' || error?.code === 'LIMIT_FILE_SIZE') {
    return new ChoripanError('E_TOO_LARGE', `The body is over the ${maxBodyBytes}-byte limit`);
  }
  if (error?.status === 415) return new ChoripanError('E_UNSUPPORTED_FORMAT', error.message);
  if (error instanceof multer.MulterError || error?.multipart || (error?.status >= 400 && error?.status < 500)) {
    return new ChoripanError('E_INVALID_ARGUMENT', `The request body is malformed: ${error.message}`);
  }
  return new ChoripanError('E_INTERNAL', 'Unexpected server error', { cause: error });
}

/**
 * @param {object} options
 * @param {import('../model').Model} options.model
 * @param {string} [options.urlAllowlist] comma list of host[:port] that GET /predict?url= may fetch
 * @param {import('pino').Logger} [options.logger]
 * @param {number} [options.maxBodyBytes]
 * @param {number} [options.fetchTimeoutMs]
 * @param {number} [options.predictTimeoutMs]
 */
function createApp({
  model,
  urlAllowlist = process.env.CHORIPAN_URL_ALLOWLIST,
  logger = pino(),
  maxBodyBytes = MAX_BODY_BYTES,
  fetchTimeoutMs = 10_000,
  predictTimeoutMs = 30_000,
}) {
  const allowed = parseAllowlist(urlAllowlist);
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
  const rawImage = express.raw({ type: 'image/*', limit: maxBodyBytes });
  const app = express();
  app.disable('x-powered-by');
  // Set by the server when it drains (main.js): /readyz turns 503 and every answer closes its connection.
  app.locals.draining = false;

  app.use((req, res, next) => {
    if (app.locals.draining) res.set('Connection', 'close');
    // A body declared larger than the limit is refused on its headers, and the connection closed rather
    // than read to the end.
    const declared = Number(req.get('content-length'));
    if (declared > maxBodyBytes) {
      res.set('Connection', 'close');
      return next(new ChoripanError('E_TOO_LARGE', `The body is ${declared} bytes; the limit is ${maxBodyBytes}`));
    }
    return next();
  });

  // One log line per request: method, path, status, label (when there is one) and time.
  app.use((req, res, next) => {
    const started = performance.now();
    res.on('finish', () => {
      const ms = Math.round((performance.now() - started) * 10) / 10;
      const { label, probability, errorCode } = res.locals;
      logger.info({ method: req.method, path: req.path, status: res.statusCode, label, probability, errorCode, ms },
        label ? `${label} (${probability.toFixed(3)}) in ${ms} ms` : `${req.method} ${req.path} ${res.statusCode} in ${ms} ms`);
    });
    next();
  });

  // Aborts when the client goes away before the answer is written, so that no work is done for nobody.
  function clientGone(res) {
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableEnded) controller.abort();
    });
    return controller.signal;
  }

  async function answer(res, image, signal) {
    const started = performance.now();
    const result = await model.predict(image, { signal, timeoutMs: predictTimeoutMs });
    res.locals.label = result.label;
    res.locals.probability = result.probability;
    res.json({ ...result, model: model.name, elapsedMs: Math.round((performance.now() - started) * 100) / 100 });
  }

  // By the header alone: req.is() answers null for an empty body, which must get 400, not 415.
  const contentType = (req) => req.get('content-type') ?? '';
  app.post('/predict', (req, res, next) => {
    if (typeis.is(contentType(req), ['multipart/form-data'])) {
      const encoding = (req.get('content-encoding') ?? 'identity').toLowerCase();
      if (encoding !== 'identity') {
        return next(new ChoripanError('E_UNSUPPORTED_FORMAT', `Content-Encoding ${encoding} is not accepted on multipart bodies`));
      }
      return parseMultipart(req, res, next);
    }
    if (typeis.is(contentType(req), ['image/*'])) return rawImage(req, res, next);
    next(new ChoripanError('E_UNSUPPORTED_FORMAT',
      `Content-Type ${req.get('content-type') ?? '(none)'} is not accepted: send image bytes with Content-Type image/*, ` +
      "or multipart/form-data with the image in a field named 'image'"));
  }, async (req, res) => {
    const image = req.file ? req.file.buffer : req.body;
    if (typeis.is(contentType(req), ['multipart/form-data']) && !req.file) {
      throw new ChoripanError('E_INVALID_ARGUMENT', "The multipart body has no file in a field named 'image'");
    }
    if (!Buffer.isBuffer(image) || image.length === 0) {
      throw new ChoripanError('E_INVALID_ARGUMENT', 'The request body is empty: send the image bytes');
    }
    await answer(res, image, clientGone(res));
  });

  app.get('/predict', async (req, res) => {
    const { url } = req.query;
    if (typeof url !== 'string' || url === '') {
      throw new ChoripanError('E_INVALID_ARGUMENT', 'GET /predict needs ?url=<image URL>; or POST the image bytes');
    }
    const signal = clientGone(res);
    const image = await fetchImage(url, { allowed, maxBytes: maxBodyBytes, timeoutMs: fetchTimeoutMs, signal });
    await answer(res, image, signal);
  });

  app.get('/readyz', (req, res) => {
    const ready = !app.locals.draining && !model.disposed;
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'draining', model: model.name });
  });

  app.get('/healthz', (req, res) => {
    res.json({ status: model.disposed ? 'stopping' : 'ok', model: model.name, stats: model.stats() });
  });

  app.use((req, res, next) => {
    next(new ChoripanError('E_NOT_FOUND', `No route for ${req.method} ${req.path}`));
  });

  // eslint-disable-next-line no-unused-vars -- Express tells error handlers by their four parameters
  app.use((error, req, res, next) => {
    const failure = translate(error, maxBodyBytes);
    if (failure.code === 'E_INTERNAL') logger.error({ err: error }, 'unexpected error');
    res.locals.errorCode = failure.code;
    if (res.headersSent || req.socket.destroyed) return;
    if (failure.code === 'E_QUEUE_FULL') res.set('Retry-After', '1');
    res.status(STATUS[failure.code] ?? 500).json({ error: { code: failure.code, message: failure.message } });
  });

  return app;
}

module.exports = { createApp };
