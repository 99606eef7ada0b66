'use strict';
// The Open Inference Protocol v2 over gRPC: KServe's inference.GRPCInferenceService
// (js/server/proto/grpc_predict_v2.proto) with @grpc/grpc-js, for KServe's and Triton's gRPC clients.
// The protocol's semantics are js/server/inference.js's, shared with the HTTP routes (oip.js): this
// module turns a call's messages into that request shape and the outputs into raw_output_contents.
// Errors take their gRPC status from js/server/http-error.js (toGrpcError), the largest message is
// CHORIPAN_MAX_BYTES, and each call is counted in the app's metrics under its method's path. Each call
// but the health methods passes the server's access check first (js/server/main.js grpcAccess): the API
// key HTTP would ask for, then the rate limit's bucket HTTP takes from, the key's or the peer's address's;
// a call past it is answered RESOURCE_EXHAUSTED (E_RATE_LIMITED) with retry-after. Models are
// the app's catalog's (js/server/catalog.js), by name and version as over HTTP; RepositoryModelLoad and
// RepositoryModelUnload load and unload through js/server/repository-routes.js, as the HTTP calls do.
// Triton's RepositoryIndex, which KServe's .proto lacks, is served in the same service under Triton's
// path, its messages read and written by our own js/server/proto/repository_index.proto; it lists what
// HTTP's POST /v2/repository/index lists.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ChoripanError } = require('../errors');
const { bad, metadataOf, serverMetadata, findServed, joinBytes, checkRequest, inputsOf, outputsOf } = require('./inference');
const { toGrpcError } = require('./http-error');
const { controlOf, loadModel, unloadModel, listModels } = require('./repository-routes');

const SERVICE = 'inference.GRPCInferenceService';

// keepCase: the fields as the .proto names them, as the HTTP JSON does; int64 as Number (shapes and
// classification counts); defaults, so that an absent repeated field is an empty list.
const loadProto = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, 'proto', file),
  { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true }));
const { service } = loadProto('grpc_predict_v2.proto').inference.GRPCInferenceService;
const { RepositoryIndex } = loadProto('repository_index.proto').choripan.triton.RepositoryIndexService.service;

/**
 * The repository calls, whose requests two layouts share: KServe's .proto (model_name = 1) and Triton's,
 * which tritonclient.grpc sends (repository_name = 1, model_name = 2, parameters = 3). Their requests
 * reach the method as bytes, read by repositoryRequestOf, so that both clients name their model.
 */
const REPOSITORY = new Set(['RepositoryModelLoad', 'RepositoryModelUnload']);
const methodsServed = Object.fromEntries(Object.entries(service).map(([method, definition]) => [method,
  REPOSITORY.has(method) ? { ...definition, requestDeserialize: (bytes) => bytes } : definition]));
// Triton's RepositoryIndex, beside KServe's methods: its request too reaches the method as bytes, so
// that one that does not parse is answered INVALID_ARGUMENT, as the others are (indexRequestOf).
methodsServed.RepositoryIndex = { ...RepositoryIndex, path: `/${SERVICE}/RepositoryIndex`, requestDeserialize: (bytes) => bytes };

/** A RepositoryIndexRequest's fields: `ready`; a repository named is refused (checkRepositoryName). */
function indexRequestOf(bytes) {
  let request;
  try {
    request = RepositoryIndex.requestDeserialize(bytes);
  } catch (error) {
    throw bad(`the request is not a RepositoryIndexRequest: ${error.message}`);
  }
  checkRepositoryName(request.repository_name);
  return { ready: request.ready };
}

/** Triton's repository_name: empty, as Triton refuses any other (this server has one repository). */
function checkRepositoryName(name) {
  if (name !== '') throw bad('this server has one model repository, which has no name: send an empty repository_name');
}

/** A protobuf message's length-delimited fields (strings, messages, map entries), by field number; others skipped. */
function lengthDelimited(bytes) {
  const fields = new Map();
  let at = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      if (at >= bytes.length || shift > 49) throw bad('the request is not a protobuf message');
      const byte = bytes[at++];
      value += (byte & 0x7f) * 2 ** shift;
      if (!(byte & 0x80)) return value;
    }
  };
  while (at < bytes.length) {
    const tag = varint();
    const wire = tag % 8;
    if (wire === 0) varint();
    else if (wire === 1 || wire === 5) at += wire === 1 ? 8 : 4;
    else if (wire === 2) {
      const length = varint();
      if (at + length > bytes.length) throw bad('the request is not a protobuf message');
      const field = Math.floor(tag / 8);
      fields.set(field, [...(fields.get(field) ?? []), bytes.subarray(at, at + length)]);
      at += length;
    } else throw bad('the request is not a protobuf message');
  }
  if (at > bytes.length) throw bad('the request is not a protobuf message');
  return fields;
}

/**
 * A repository call's model name and the names of its parameters (what repository-routes.js checks), in
 * either layout: a field 2 is Triton's model_name (KServe's request has none), else field 1 is KServe's.
 * @param {Buffer} bytes
 */
function repositoryRequestOf(bytes) {
  const fields = lengthDelimited(bytes);
  const text = (found, field) => found.get(field)?.at(-1)?.toString('utf8') ?? '';
  if (!fields.has(2)) return { name: text(fields, 1), parameters: {} };
  checkRepositoryName(text(fields, 1));
  const keys = (fields.get(3) ?? []).map((entry) => text(lengthDelimited(entry), 1));
  return { name: text(fields, 2), parameters: Object.fromEntries(keys.map((key) => [key, true])) };
}

/** A parameters map of InferParameter messages, as the HTTP JSON holds it: name → its bool, int64 or string. */
const parameterValues = (map) => Object.fromEntries(Object.entries(map ?? {}).map(([name, p]) => [name, p[p.parameter_choice]]));

/** A tensor's typed contents, for the datatypes a model takes: the bytes of each image, or the floats. */
function contentsOf({ datatype, contents }) {
  if (datatype === 'BYTES') return contents?.bytes_contents ?? [];
  if (datatype === 'FP32') return contents?.fp32_contents ?? [];
  return [];
}

/**
 * A ModelInferRequest as the protocol's request (inference.js's shape), checked whole: each input's data
 * from raw_input_contents (the binary extension's layout: BYTES elements length-prefixed, FP32 packed)
 * or from its typed contents, never both.
 */
function requestOf(message) {
  const raw = message.raw_input_contents;
  if (raw.length && message.inputs.some((tensor) => contentsOf(tensor).length)) {
    throw bad('an input has both contents and raw_input_contents; send one or the other');
  }
  if (raw.length && raw.length !== message.inputs.length) {
    throw bad(`raw_input_contents holds ${raw.length} tensors for ${message.inputs.length} inputs`);
  }
  const request = {
    ...(message.id === '' ? {} : { id: message.id }),
    parameters: parameterValues(message.parameters),
    inputs: message.inputs.map((tensor, i) => ({
      name: tensor.name, datatype: tensor.datatype, shape: tensor.shape,
      ...(raw.length ? { parameters: { binary_data_size: raw[i].length } } : { data: contentsOf(tensor) }),
    })),
    ...(message.outputs.length ? { outputs: message.outputs.map((o) => ({ name: o.name, parameters: parameterValues(o.parameters) })) } : {}),
  };
  checkRequest(request);
  return { request, input: request.inputs[0], binary: raw.length ? raw[0] : null };
}

/** The outputs as a ModelInferResponse: raw_output_contents, as Triton answers and its client reads. */
function responseOf(served, request, outputs) {
  return {
    model_name: served.name, model_version: String(served.version), id: request.id ?? '',
    outputs: outputs.map(({ name: output, datatype, shape }) => ({ name: output, datatype, shape })),
    raw_output_contents: outputs.map(({ strings, values }) => (strings ? joinBytes(strings) : Buffer.from(values.buffer, values.byteOffset, values.byteLength))),
  };
}

/** The deadline of a call, in ms: the client's gRPC deadline may ask for less time than the server allows, never more. */
function callDeadline(call, timeoutMs) {
  const deadline = call.getDeadline();
  const left = deadline instanceof Date ? deadline.getTime() - Date.now() : deadline - Date.now();
  return Number.isFinite(left) ? Math.max(1, Math.min(Math.ceil(left), timeoutMs)) : timeoutMs;
}

/** Aborts when the client cancels the call (or its deadline passes), so that no work is done for nobody. */
function callGone(call) {
  const controller = new AbortController();
  call.on('cancelled', () => controller.abort());
  return controller.signal;
}

/**
 * The service's methods, each `(request, call, context) => response`; `context.model` is the model a
 * call was for, once known (a full queue's retry hint is that model's), `context.name` and
 * `context.version` what the log says of it.
 * @param {{ catalog: import('./catalog').Catalog, repository?: import('./repository').ModelRepository,
 *   ready: () => boolean, timeoutMs: number }} options
 */
function protocolMethods({ catalog, repository, ready, timeoutMs }) {
  const control = controlOf(repository, catalog);
  /** The version a call names (an empty model_version: the highest), as HTTP finds it. */
  const servedOf = (name, version, context) => {
    context.name = name;
    const served = findServed(catalog, name, version);
    context.model = served.model;
    context.version = served.version;
    return served;
  };
  const named = (bytes, context) => {
    const request = repositoryRequestOf(bytes);
    context.name = request.name;
    return request;
  };
  return {
    ServerLive: () => ({ live: true }),
    ServerReady: () => ({ ready: ready() }),
    ModelReady: ({ name, version }, call, context) => ({ ready: ready() && !servedOf(name, version, context).model.disposed }),
    ServerMetadata: () => serverMetadata(),
    ModelMetadata: ({ name, version }, call, context) => metadataOf(servedOf(name, version, context), catalog.versions(name)),
    async ModelInfer(message, call, context) {
      const served = servedOf(message.model_name, message.model_version, context);
      const chosen = served.model;
      // Held until answered: a version replaced or unloaded meanwhile is disposed only after.
      const release = catalog.acquire(served);
      try {
        const parsed = requestOf(message);
        const inputs = inputsOf(parsed, chosen);
        const rows = await chosen.probabilitiesMany(inputs, { timeoutMs: callDeadline(call, timeoutMs), signal: callGone(call) });
        return responseOf(served, parsed.request, outputsOf(parsed.request, rows, chosen));
      } finally {
        release();
      }
    },
    async RepositoryModelLoad(bytes, call, context) {
      const { name, parameters } = named(bytes, context);
      await loadModel(control, name, parameters);
      return { model_name: name, isLoaded: true };
    },
    async RepositoryModelUnload(bytes, call, context) {
      const { name } = named(bytes, context);
      await unloadModel(control, name);
      return { model_name: name, isUnloaded: true };
    },
    async RepositoryIndex(bytes) {
      return { models: await listModels(control, indexRequestOf(bytes)) };
    },
  };
}

/** While the models load, every call: UNAVAILABLE, retry in a second. */
const loading = () => {
  throw new ChoripanError('E_NOT_READY', 'The server is loading its models: retry in a moment');
};

/**
 * The gRPC server, bound to host:port before the models load (as the HTTP server is: a port in use fails
 * at once); it answers UNAVAILABLE until `serve` hands it the models. Every call goes through one
 * wrapper: `checkCall(call, method, trailers)` (a per-call check, such as a key in the `authorization`
 * metadata or a rate limit: throw a ChoripanError to refuse; what it sets in `trailers` goes into the
 * answer's trailing metadata either way), the method, then the answer or toGrpcError's, its count and
 * its log line.
 * @param {{ host: string, port: number, maxBodyBytes: number, logger: import('pino').Logger,
 *   checkCall?: (call: grpc.ServerUnaryCall<any, any>, method: string, trailers: grpc.Metadata) => void }} options
 * @returns {Promise<{ port: number, server: grpc.Server,
 *   serve(options: { catalog: import('./catalog').Catalog, repository?: import('./repository').ModelRepository,
 *     ready: () => boolean, timeoutMs: number,
 *     metrics: ReturnType<typeof import('./metrics').createMetrics> }): void,
 *   shutdown(): Promise<void> }>}
 */
async function startGrpcServer({ host, port, maxBodyBytes, logger, checkCall = () => {} }) {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': maxBodyBytes });
  let methods = null;
  let metrics = null;
  const handlers = Object.fromEntries(Object.keys(methodsServed).map((method) => [method, async (call, callback) => {
    const started = performance.now();
    const context = {};
    const trailers = new grpc.Metadata();
    let answer;
    try {
      checkCall(call, method, trailers);
      answer = { response: await (methods?.[method] ?? loading)(call.request, call, context) };
    } catch (error) {
      answer = { failure: toGrpcError(error, { model: context.model }), error };
    }
    const seconds = (performance.now() - started) / 1000;
    const ms = Math.round(seconds * 10_000) / 10;
    const route = `/${SERVICE}/${method}`;
    metrics?.request(route, 'GRPC', answer.failure?.status ?? 200, seconds);
    if (!answer.failure) {
      logger.info({ grpc: method, model: context.name, version: context.version, status: 'OK', ms }, `gRPC ${method} OK in ${ms} ms`);
      callback(null, answer.response, trailers);
      return;
    }
    const { grpcCode, code, message, retryAfter } = answer.failure;
    const status = grpc.status[grpcCode];
    if (code === 'E_INTERNAL') logger.error({ err: answer.error }, 'unexpected error');
    logger.info({ grpc: method, model: context.name, version: context.version, status, errorCode: code, ms }, `gRPC ${method} ${status} in ${ms} ms`);
    trailers.set('choripan-error-code', code);
    if (retryAfter !== undefined) {
      trailers.set('retry-after', String(retryAfter));
      trailers.set('grpc-retry-pushback-ms', String(retryAfter * 1000));
    }
    callback({ code: grpcCode, details: message, metadata: trailers });
  }]));
  server.addService(methodsServed, handlers);
  const bound = await new Promise((resolve, reject) => {
    const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, actual) => {
      if (error) reject(new Error(`cannot listen for gRPC on ${address}: ${error.message}`, { cause: error }));
      else resolve(actual);
    });
  });
  return {
    port: bound,
    server,
    serve(options) {
      methods = protocolMethods(options);
      metrics = options.metrics;
    },
    /** Takes no new call, finishes those in hand. */
    shutdown: () => new Promise((resolve) => server.tryShutdown(() => resolve())),
  };
}

module.exports = { startGrpcServer, SERVICE };
