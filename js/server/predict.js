'use strict';
// POST /predict (the image as the body, image/* or application/octet-stream, or the multipart field
// `image`) and GET /predict?url=… for allow-listed hosts: the model's most probable labels, from the
// model ?model= names or the first.

const express = require('express');
const multer = require('multer');
const typeis = require('type-is');
const { ChoripanError } = require('../errors');
const { fetchImage } = require('./fetch-image');
const { PATHS } = require('./paths');
const { requestDeadline, clientGone, inRequestTrace } = require('./request');

/**
 * A raw body's types. The format is read from the bytes (js/decode.js), never from the type: a client that
 * does not know what it holds (a file without an extension) sends application/octet-stream.
 */
const RAW_TYPES = ['image/*', 'application/octet-stream'];

// By the header alone: req.is() answers null for an empty body, which must get 400, not 415.
const contentType = (req) => req.get('content-type') ?? '';
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
function createPredictRouter({ catalog, allowed, maxBodyBytes, fetchTimeoutMs, timeoutMs, defaultLabel, metrics, pacing }) {
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

  /** The version of the model ?model= names (the default without it) that answers: its highest. */
  function modelFor(req) {
    const name = req.query.model ?? catalog.defaultName();
    const found = catalog.find(name);
    if (found) return found;
    const names = catalog.names();
    throw new ChoripanError('E_INVALID_ARGUMENT', names.length ? `There is no model named ${JSON.stringify(name)}; there are ${names.join(', ')}`
      : 'No model is loaded: POST /v2/repository/models/NAME/load loads one');
  }

  async function answer(req, res, image, signal) {
    const started = performance.now();
    const served = modelFor(req);
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
      return res.json({ label: defaultLabel, default: true, model: name, elapsedMs: Math.round((performance.now() - started) * 100) / 100 });
    } finally {
      release();
    }
    res.locals.label = result.label;
    res.locals.probability = result.probability;
    return res.json({ ...result, model: name, elapsedMs: Math.round((performance.now() - started) * 100) / 100 });
  }

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
    if (!Buffer.isBuffer(image) || image.length === 0) {
      throw new ChoripanError('E_INVALID_ARGUMENT', 'The request body is empty: send the image bytes');
    }
    await answer(req, res, image, clientGone(res));
  });

  router.get(PATHS.predict, holdRetries, async (req, res) => {
    const { url } = req.query;
    if (typeof url !== 'string' || url === '') {
      throw new ChoripanError('E_INVALID_ARGUMENT', 'GET /predict needs ?url=<image URL>; or POST the image bytes');
    }
    const signal = clientGone(res);
    const image = await fetchImage(url, { allowed, maxBytes: maxBodyBytes, timeoutMs: fetchTimeoutMs, signal });
    await answer(req, res, image, signal);
  });

  return router;
}

module.exports = { createPredictRouter };
