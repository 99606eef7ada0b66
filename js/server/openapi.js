'use strict';
// GET /openapi.json: every route the service answers, with its error bodies (OpenAPI 3.1).

const vocabulary = require('../../native/core/vocabulary.json');
const { version } = require('../../package.json');
const { STATUS } = require('../errors');
const { PATHS, OIP_PATHS, REPOSITORY_PATHS, openapiPath, accessOf, isProtocol } = require('./paths');

const json = (schema) => ({ 'application/json': { schema } });
const ref = (name) => ({ $ref: `#/components/schemas/${name}` });
const answer = (description, schema) => ({ description, content: json(schema) });

/** The error responses a route can give, by status, from the vocabulary. */
function failures(codes) {
  const byStatus = {};
  for (const { code, status } of vocabulary.errors.filter((e) => codes.includes(e.code))) {
    (byStatus[status] ??= []).push(code);
  }
  return Object.fromEntries(Object.entries(byStatus).map(([status, list]) => [status, answer(list.join(', '), ref('Error'))]));
}

// E_NOT_READY: `choripan serve` answers every route so while its models load (js/server/main.js).
const PREDICT_FAILURES = ['E_INVALID_ARGUMENT', 'E_DECODE', 'E_UNSUPPORTED_FORMAT', 'E_TOO_LARGE', 'E_QUEUE_FULL', 'E_NOT_READY', 'E_TIMEOUT', 'E_INTERNAL'];
const OIP_FAILURES = { 400: answer('a malformed request', ref('OipError')), 404: answer('no such model', ref('OipError')),
  413: answer('the body is over the limit', ref('OipError')), 415: answer('an unknown Content-Encoding', ref('OipError')),
  503: answer('the queue is full', ref('OipError')),
  504: answer('no answer in time', ref('OipError')) };

const header = (description) => ({ description, schema: { type: 'string' } });

/** The headers of an answer on a rate-limited route (js/server/rate-limit.js). */
const RATE_HEADERS = {
  RateLimit: header('draft-ietf-httpapi-ratelimit-headers: the requests left (r) and the seconds until the bucket is full (t)'),
  'RateLimit-Policy': header('draft-ietf-httpapi-ratelimit-headers: the bucket as a quota (q) over a window (w)'),
};

/**
 * Each operation's key and limit, as js/server/paths.js accessOf() says for its path: the security
 * requirement, 401 (and 403 on admin paths) with keys, 429 with a rate limit, in its family's error shape.
 * @param {object} document
 * @param {{ keys: boolean, metricsOpen: boolean, limited: boolean }} access
 */
function withAccess(document, { keys, metricsOpen, limited }) {
  for (const [path, operations] of Object.entries(document.paths)) {
    const need = accessOf(path, { metricsOpen });
    const refusal = (code, description) => (isProtocol(path) ? answer(description, ref('OipError')) : failures([code])[STATUS[code]]);
    for (const operation of Object.values(operations)) {
      if (keys) operation.security = need === 'open' ? [] : [{ apiKey: need === 'admin' ? ['admin'] : [] }];
      if (need === 'open') continue;
      const responses = { ...operation.responses };
      if (keys) {
        responses[401] = { ...refusal('E_UNAUTHORIZED', 'no API key, or a wrong one'), headers: { 'WWW-Authenticate': header('Bearer realm="choripan"') } };
        if (need === 'admin') responses[403] = refusal('E_FORBIDDEN', 'the key is not an admin key');
      }
      if (limited) {
        responses[429] = { ...refusal('E_RATE_LIMITED', 'past the rate limit'),
          headers: { 'Retry-After': header('seconds until the bucket holds a request'), ...RATE_HEADERS } };
      }
      operation.responses = responses;
    }
  }
  if (keys) {
    document.components.securitySchemes = { apiKey: { type: 'http', scheme: 'bearer',
      description: 'a key of CHORIPAN_API_KEYS_FILE: scope infer, or admin, which may also infer and alone may call the repository' } };
  }
  return document;
}

/** The answers of a repository call that loads or unloads a model. */
const CONTROL_ANSWERS = { 200: { description: 'done (an empty body)' },
  400: answer('a name that breaks the rule, parameters naming files, or a server whose models are not loaded and unloaded on request', ref('OipError')),
  404: answer('no such model in the repository', ref('OipError')),
  500: answer('E_MODEL_LOAD: a version did not load; the version served before goes on', ref('OipError')) };

/**
 * @param {string[]} names the models served now
 * @param {{ keys: boolean, metricsOpen: boolean, limited: boolean }} [access] whether keys and a rate limit guard it
 */
function openapi(names, access = { keys: false, metricsOpen: true, limited: false }) {
  // A name is one the service serves now; with a model repository, others may come.
  const nameSchema = { type: 'string', pattern: `^${vocabulary.modelName.pattern}$`, ...(names.length ? { examples: names } : {}) };
  const name = { name: 'name', in: 'path', required: true, schema: nameSchema };
  const versioned = { name: 'version', in: 'path', required: true, schema: { type: 'string', pattern: '^[1-9][0-9]*$' },
    description: 'a version served (1 for a model that is not in a repository); without it, the highest' };
  const modelQuery = { name: 'model', in: 'query', required: false, schema: nameSchema,
    description: 'which model (the first by default; its highest version)' };
  const timeout = { name: 'X-Request-Timeout-Ms', in: 'header', required: false, schema: { type: 'integer', minimum: 1 },
    description: 'less time than the server allows, never more' };
  const predictAnswers = { 200: answer('the most probable labels', ref('Prediction')), ...failures(PREDICT_FAILURES) };
  const [model, modelVersion] = OIP_PATHS.modelPrefixes.map(openapiPath);
  const oip = (suffix, operation) => ({
    [`${model}${suffix}`]: { ...operation, parameters: [name, ...(operation.parameters ?? [])] },
    [`${modelVersion}${suffix}`]: { ...operation, parameters: [name, versioned, ...(operation.parameters ?? [])] },
  });
  return withAccess({
    openapi: '3.1.0',
    info: { title: 'choripan', version, description: 'Image classification with a PyTorch model served through libtorch.' },
    paths: {
      [PATHS.predict]: {
        post: {
          summary: 'Classify an image sent as the body (image/* or application/octet-stream: the format is read from the bytes) or as the multipart field `image`',
          parameters: [modelQuery, timeout],
          requestBody: { required: true, content: {
            'image/*': { schema: { type: 'string', format: 'binary' } },
            'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
            'multipart/form-data': { schema: { type: 'object', required: ['image'], properties: { image: { type: 'string', format: 'binary' } } } },
          } },
          responses: predictAnswers,
        },
        get: {
          summary: 'Classify the image at an allow-listed URL (CHORIPAN_URL_ALLOWLIST)',
          parameters: [{ name: 'url', in: 'query', required: true, schema: { type: 'string', format: 'uri' } }, modelQuery, timeout],
          responses: { ...predictAnswers, ...failures(['E_URL_NOT_ALLOWED', 'E_FETCH']) },
        },
      },
      [PATHS.healthz]: { get: { summary: 'Alive, with each model\'s stats', responses: { 200: answer('alive', { type: 'object' }),
        503: answer('the models are still loading', { type: 'object' }) } } },
      [PATHS.readyz]: { get: { summary: 'Every model loaded and warm, and not draining', responses: {
        200: answer('ready', { type: 'object' }), 503: answer('draining, or the models are still loading', { type: 'object' }) } } },
      [PATHS.metrics]: { get: { summary: 'Prometheus metrics', responses: { 200: { description: 'the text format', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
      [PATHS.openapi]: { get: { summary: 'This document', responses: { 200: answer('OpenAPI 3.1', { type: 'object' }) } } },
      [PATHS.page]: { get: { summary: 'A page to try a photo', responses: { 200: { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } } } },
      [OIP_PATHS.server]: { get: { summary: 'Open Inference Protocol: server metadata', responses: { 200: answer('name, version, extensions', { type: 'object' }) } } },
      [OIP_PATHS.live]: { get: { summary: 'Open Inference Protocol: live', responses: { 200: answer('live', { type: 'object' }) } } },
      [OIP_PATHS.ready]: { get: { summary: 'Open Inference Protocol: ready', responses: { 200: answer('ready', { type: 'object' }), 503: answer('not ready', { type: 'object' }) } } },
      ...oip(OIP_PATHS.modelRoutes.metadata, { get: { summary: 'Open Inference Protocol: model metadata', responses: { 200: answer('inputs and outputs', { type: 'object' }), 404: OIP_FAILURES[404] } } }),
      ...oip(OIP_PATHS.modelRoutes.ready, { get: { summary: 'Open Inference Protocol: model ready', responses: { 200: answer('ready', { type: 'object' }), 404: OIP_FAILURES[404], 503: answer('not ready', { type: 'object' }) } } }),
      ...oip(OIP_PATHS.modelRoutes.infer, { post: {
        summary: 'Open Inference Protocol: infer. An encoded image as a BYTES tensor (base64 in JSON, or the binary extension), or FP32 [N, 3, crop, crop]',
        parameters: [timeout, { name: 'Inference-Header-Content-Length', in: 'header', required: false, schema: { type: 'integer' },
          description: 'binary tensor data extension: the length of the JSON part' }],
        requestBody: { required: true, content: { ...json(ref('InferenceRequest')), 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } },
        responses: { 200: { description: 'the outputs', content: { ...json(ref('InferenceResponse')), 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }, ...OIP_FAILURES },
      } }),
      [REPOSITORY_PATHS.index]: { post: {
        summary: 'Repository extension: every version in the model repository (or every model served), with its state',
        requestBody: { required: false, content: json({ type: 'object', properties: { ready: { type: 'boolean', description: 'only the versions ready' } } }) },
        responses: { 200: answer('the versions', { type: 'array', items: ref('RepositoryEntry') }), 400: OIP_FAILURES[400] },
      } },
      [openapiPath(REPOSITORY_PATHS.load)]: { post: {
        summary: 'Repository extension: load the model as the repository holds it now: its new and changed versions are loaded and warmed ' +
          'beside those served, then take the requests; its versions gone from the repository are unloaded once they have answered theirs',
        parameters: [{ ...name, schema: { type: 'string', pattern: nameSchema.pattern } }],
        requestBody: { required: false, content: json({ type: 'object', properties: { parameters: { type: 'object' } } }) },
        responses: CONTROL_ANSWERS,
      } },
      [openapiPath(REPOSITORY_PATHS.unload)]: { post: {
        summary: 'Repository extension: unload every version of the model, each once it has answered the requests it holds',
        parameters: [{ ...name, schema: { type: 'string', pattern: nameSchema.pattern } }],
        requestBody: { required: false, content: json({ type: 'object', properties: { parameters: { type: 'object' } } }) },
        responses: { 200: CONTROL_ANSWERS[200], 400: CONTROL_ANSWERS[400], 404: CONTROL_ANSWERS[404] },
      } },
    },
    components: {
      schemas: {
        Error: { type: 'object', required: ['error'], properties: { error: { type: 'object', required: ['code', 'message'], properties: {
          code: { type: 'string', enum: vocabulary.errors.filter((e) => e.layer !== 'export').map((e) => e.code) }, message: { type: 'string' } } } } },
        OipError: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
        Prediction: { type: 'object', required: ['label', 'model'], properties: {
          label: { type: 'string' }, probability: { type: 'number' }, model: { type: 'string' }, elapsedMs: { type: 'number' },
          default: { type: 'boolean', description: 'true: past the deadline, the CHORIPAN_DEFAULT_LABEL answer' },
          top: { type: 'array', items: { type: 'object', properties: { label: { type: 'string' }, probability: { type: 'number' } } } } } },
        Tensor: { type: 'object', required: ['name', 'datatype', 'shape'], properties: {
          name: { type: 'string' }, datatype: { type: 'string', enum: ['BYTES', 'FP32'] }, shape: { type: 'array', items: { type: 'integer' } },
          parameters: { type: 'object' }, data: { type: 'array' } } },
        InferenceRequest: { type: 'object', required: ['inputs'], properties: {
          id: { type: 'string' }, parameters: { type: 'object' }, inputs: { type: 'array', items: ref('Tensor'), minItems: 1, maxItems: 1 },
          outputs: { type: 'array', items: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, parameters: { type: 'object' } } } } } },
        RepositoryEntry: { type: 'object', required: ['name', 'state'], properties: {
          name: { type: 'string' }, version: { type: 'string' }, state: { type: 'string', enum: ['READY', 'LOADING', 'UNAVAILABLE'] },
          reason: { type: 'string', description: 'why it is not ready: unloaded, or why it did not load' } } },
        InferenceResponse: { type: 'object', required: ['model_name', 'outputs'], properties: {
          model_name: { type: 'string' }, model_version: { type: 'string' }, id: { type: 'string' }, outputs: { type: 'array', items: ref('Tensor') } } },
      },
    },
  }, access);
}

module.exports = { openapi };
