'use strict';
// The Open Inference Protocol v2 (KServe, Triton) over REST, with its classification and binary tensor
// data extensions. Each model takes either encoded images (a BYTES tensor, base64 in JSON) or
// preprocessed input (FP32 [N, 3, crop, crop]) and answers its probabilities (FP32 [N, classes]), or with
// `"parameters": { "classification": K }` the top K as "probability:index:label" strings. Errors take the
// protocol's shape, { "error": "…" }, with choripan's statuses: js/server/http-error.js shapes them.

const express = require('express');
const { OIP_PATHS } = require('./paths');
const { requestDeadline, clientGone } = require('./request');
const { bad, quoted, metadataOf, serverMetadata, findModel, joinBytes, checkRequest, inputsOf, outputsOf } = require('./inference');

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

function respond(res, name, request, outputs) {
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
    model_name: name, model_version: '1', ...(request.id === undefined ? {} : { id: request.id }), outputs: described,
  }));
  if (!chunks.length) return res.type('application/json').send(header);
  res.set('Inference-Header-Content-Length', String(header.length));
  return res.type('application/octet-stream').send(Buffer.concat([header, ...chunks]));
}

/**
 * @param {object} options createApp's
 * @param {Map<string, import('../index').Model>} options.models by name
 * @param {() => boolean} options.ready every model loaded and not disposed, and the server not draining
 * @param {number} options.maxBodyBytes
 * @param {number} options.timeoutMs
 * @param {ReturnType<typeof import('./retry').createRetryPacing>} options.pacing holds the retries that come too soon
 */
function createOipRouter({ models, ready, maxBodyBytes, timeoutMs, pacing }) {
  const router = express.Router();
  const body = express.raw({ type: () => true, limit: maxBodyBytes });
  const holdRetries = pacing.hold((req) => models.get(req.params.name));
  const model = (req) => findModel(models, req.params.name, req.params.version);

  router.get(OIP_PATHS.server, (req, res) => res.json(serverMetadata()));
  router.get(OIP_PATHS.live, (req, res) => res.json({ live: true }));
  router.get(OIP_PATHS.ready, (req, res) => res.status(ready() ? 200 : 503).json({ ready: ready() }));
  const { metadata, ready: modelReady, infer } = OIP_PATHS.modelRoutes;
  for (const prefix of OIP_PATHS.modelPrefixes) {
    router.get(`${prefix}${metadata}`, (req, res) => res.json(metadataOf(req.params.name, model(req))));
    router.get(`${prefix}${modelReady}`, (req, res) => {
      const up = ready() && !model(req).disposed;
      res.status(up ? 200 : 503).json({ name: req.params.name, ready: up });
    });
    router.post(`${prefix}${infer}`, holdRetries, body, async (req, res) => {
      const chosen = model(req);
      res.locals.model = req.params.name;
      res.locals.chosen = chosen;
      const parsed = parseRequest(req);
      const inputs = inputsOf(parsed, chosen);
      const options = { timeoutMs: requestDeadline(req, timeoutMs), signal: clientGone(res) };
      const rows = await chosen.probabilitiesMany(inputs, options);
      respond(res, req.params.name, parsed.request, outputsOf(parsed.request, rows, chosen));
    });
  }

  return router;
}

module.exports = { createOipRouter, metadataOf };
