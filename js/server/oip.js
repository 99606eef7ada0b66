'use strict';
// The Open Inference Protocol v2 (KServe, Triton) over REST, with its classification and binary tensor
// data extensions. Each model takes either encoded images (a BYTES tensor, base64 in JSON) or
// preprocessed input (FP32 [N, 3, crop, crop]) and answers its probabilities (FP32 [N, classes]), or with
// `"parameters": { "classification": K }` the top K as "probability:index:label" strings. Errors take the
// protocol's shape, { "error": "…" }, with choripan's statuses: js/server/http-error.js shapes them.

const express = require('express');
const { OIP_PATHS } = require('./paths');
const { requestDeadline, clientGone, inRequestTrace } = require('./request');
const { bad, quoted, metadataOf, serverMetadata, findServed, versionNumber, joinBytes, checkRequest, inputsOf, outputsOf } = require('./inference');

/** The request's JSON, checked, and, with the binary extension, its input's raw data. */
function parseRequest(req) {
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const declared = req.get('inference-header-content-length');
  const headerLength = declared === undefined ? body.length : Number(declared);
  if (!Number.isInteger(headerLength) || headerLength < 0 || headerLength > body.length) {
    throw bad(`Inference-Header-Content-Length ${quoted(declared)} does not fit a body of ${body.length} bytes`);
  }
  let request;
  try {
    request = JSON.parse(body.subarray(0, headerLength).toString('utf8'));
  } catch (error) {
    throw bad(`the inference request is not JSON: ${error.message}`);
  }
  checkRequest(request);
  const [input] = request.inputs;
  const binarySize = input.parameters?.binary_data_size;
  if (binarySize === undefined) return { request, input, binary: null };
  if (headerLength + binarySize > body.length) {
    throw bad(`input ${quoted(input.name)}: binary_data_size ${binarySize} is more than the ${body.length - headerLength} bytes sent`);
  }
  return { request, input, binary: body.subarray(headerLength, headerLength + binarySize) };
}

function respond(res, served, request, outputs) {
  const chunks = [];
  const described = outputs.map(({ name: output, datatype, shape, strings, values, binary }) => {
    const entry = { name: output, datatype, shape };
    if (binary) {
      const data = strings ? joinBytes(strings) : Buffer.from(values.buffer, values.byteOffset, values.byteLength);
      entry.parameters = { binary_data_size: data.length };
      chunks.push(data);
    } else {
      entry.data = strings ?? Array.from(values);
    }
    return entry;
  });
  const header = Buffer.from(JSON.stringify({
    model_name: served.name, model_version: String(served.version), ...(request.id === undefined ? {} : { id: request.id }), outputs: described,
  }));
  if (!chunks.length) return res.type('application/json').send(header);
  res.set('Inference-Header-Content-Length', String(header.length));
  return res.type('application/octet-stream').send(Buffer.concat([header, ...chunks]));
}

/**
 * @param {object} options createApp's
 * @param {import('./catalog').Catalog} options.catalog the models served, each version under
 *   /v2/models/NAME/versions/VERSION, the highest under /v2/models/NAME too
 * @param {() => boolean} options.ready every model loaded and not disposed, and the server not draining
 * @param {number} options.maxBodyBytes
 * @param {number} options.timeoutMs
 * @param {ReturnType<typeof import('./retry').createRetryPacing>} options.pacing holds the retries that come too soon
 */
function createOipRouter({ catalog, ready, maxBodyBytes, timeoutMs, pacing }) {
  const router = express.Router();
  const body = express.raw({ type: () => true, limit: maxBodyBytes });
  const holdRetries = pacing.hold((req) => catalog.find(req.params.name, versionNumber(req.params.version))?.model);
  /** The version the path names, or the highest of the model it names. */
  const model = (req) => findServed(catalog, req.params.name, req.params.version);

  router.get(OIP_PATHS.server, (req, res) => res.json(serverMetadata()));
  router.get(OIP_PATHS.live, (req, res) => res.json({ live: true }));
  router.get(OIP_PATHS.ready, (req, res) => res.status(ready() ? 200 : 503).json({ ready: ready() }));
  const { metadata, ready: modelReady, infer } = OIP_PATHS.modelRoutes;
  for (const prefix of OIP_PATHS.modelPrefixes) {
    router.get(`${prefix}${metadata}`, (req, res) => res.json(metadataOf(model(req), catalog.versions(req.params.name))));
    router.get(`${prefix}${modelReady}`, (req, res) => {
      const up = ready() && !model(req).model.disposed;
      res.status(up ? 200 : 503).json({ name: req.params.name, ready: up });
    });
    router.post(`${prefix}${infer}`, holdRetries, body, async (req, res) => {
      const served = model(req);
      const chosen = served.model;
      res.locals.model = served.name;
      res.locals.version = served.version;
      res.locals.chosen = chosen;
      const release = catalog.acquire(served);
      try {
        const parsed = parseRequest(req);
        const inputs = inputsOf(parsed, chosen);
        const options = { timeoutMs: requestDeadline(req, timeoutMs), signal: clientGone(res) };
        const rows = await inRequestTrace(res, () => chosen.probabilitiesMany(inputs, options));
        respond(res, served, parsed.request, outputsOf(parsed.request, rows, chosen));
      } finally {
        release();
      }
    });
  }

  return router;
}

module.exports = { createOipRouter, metadataOf };
