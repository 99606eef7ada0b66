'use strict';
// The Open Inference Protocol v2 over gRPC: KServe's inference.GRPCInferenceService
// (js/server/proto/grpc_predict_v2.proto) with @grpc/grpc-js, for KServe's and Triton's gRPC clients.
// The protocol's semantics are js/server/inference.js's, shared with the HTTP routes (oip.js): this
// module turns a call's messages into that request shape and the outputs into raw_output_contents.
// Errors take their gRPC status from js/server/http-error.js (toGrpcError), the largest message is
// CHORIPAN_MAX_BYTES, and each call is counted in the app's metrics under its method's path.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ChoripanError } = require('../errors');
const { bad, metadataOf, serverMetadata, findModel, joinBytes, checkRequest, inputsOf, outputsOf } = require('./inference');
const { toGrpcError } = require('./http-error');

const PROTO = path.join(__dirname, 'proto', 'grpc_predict_v2.proto');
const SERVICE = 'inference.GRPCInferenceService';

// keepCase: the fields as the .proto names them, as the HTTP JSON does; int64 as Number (shapes and
// classification counts); defaults, so that an absent repeated field is an empty list.
const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
const { service } = grpc.loadPackageDefinition(definition).inference.GRPCInferenceService;

/**
 * The repository extension's methods, which this server does not serve yet: UNIMPLEMENTED, counted as
 * HTTP counts the routes it lacks (404 E_NOT_FOUND). Triton's RepositoryIndex is not in KServe's .proto:
 * grpc-js itself answers it UNIMPLEMENTED.
 */
const REPOSITORY = new Set(['RepositoryModelLoad', 'RepositoryModelUnload']);

function unimplemented(method) {
  const failure = toGrpcError(new ChoripanError('E_NOT_FOUND',
    `${method}: this server has no model repository; it serves the models it was started with`));
  return { ...failure, grpcCode: grpc.status.UNIMPLEMENTED };
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
function responseOf(name, request, outputs) {
  return {
    model_name: name, model_version: '1', id: request.id ?? '',
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
 * call was for, once known (a full queue's retry hint is that model's).
 * @param {{ models: Map<string, import('../index').Model>, ready: () => boolean, timeoutMs: number }} options
 */
function protocolMethods({ models, ready, timeoutMs }) {
  const modelOf = (name, version, context) => {
    context.model = findModel(models, name, version);
    context.name = name;
    return context.model;
  };
  return {
    ServerLive: () => ({ live: true }),
    ServerReady: () => ({ ready: ready() }),
    ModelReady: ({ name, version }, call, context) => ({ ready: ready() && !modelOf(name, version, context).disposed }),
    ServerMetadata: () => serverMetadata(),
    ModelMetadata: ({ name, version }, call, context) => metadataOf(name, modelOf(name, version, context)),
    async ModelInfer(message, call, context) {
      const chosen = modelOf(message.model_name, message.model_version, context);
      const parsed = requestOf(message);
      const inputs = inputsOf(parsed, chosen);
      const rows = await chosen.probabilitiesMany(inputs, { timeoutMs: callDeadline(call, timeoutMs), signal: callGone(call) });
      return responseOf(message.model_name, parsed.request, outputsOf(parsed.request, rows, chosen));
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
 * wrapper: `checkCall(call, method)` (a per-call check, such as a key in the `authorization` metadata:
 * throw a ChoripanError to refuse), the method, then the answer or toGrpcError's, its count and its log line.
 * @param {{ host: string, port: number, maxBodyBytes: number, logger: import('pino').Logger,
 *   checkCall?: (call: grpc.ServerUnaryCall<any, any>, method: string) => void }} options
 * @returns {Promise<{ port: number, server: grpc.Server,
 *   serve(options: { models: Map<string, import('../index').Model>, ready: () => boolean, timeoutMs: number,
 *     metrics: ReturnType<typeof import('./metrics').createMetrics> }): void,
 *   shutdown(): Promise<void> }>}
 */
async function startGrpcServer({ host, port, maxBodyBytes, logger, checkCall = () => {} }) {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': maxBodyBytes });
  let methods = null;
  let metrics = null;
  const handlers = Object.fromEntries(Object.keys(service).map((method) => [method, async (call, callback) => {
    const started = performance.now();
    const context = {};
    let answer;
    try {
      checkCall(call, method);
      if (REPOSITORY.has(method)) answer = { failure: unimplemented(method) };
      else answer = { response: await (methods?.[method] ?? loading)(call.request, call, context) };
    } catch (error) {
      answer = { failure: toGrpcError(error, { model: context.model }), error };
    }
    const seconds = (performance.now() - started) / 1000;
    const ms = Math.round(seconds * 10_000) / 10;
    const route = `/${SERVICE}/${method}`;
    metrics?.request(route, 'GRPC', answer.failure?.status ?? 200, seconds);
    if (!answer.failure) {
      logger.info({ grpc: method, model: context.name, status: 'OK', ms }, `gRPC ${method} OK in ${ms} ms`);
      callback(null, answer.response);
      return;
    }
    const { grpcCode, code, message, retryAfter } = answer.failure;
    const status = grpc.status[grpcCode];
    if (code === 'E_INTERNAL') logger.error({ err: answer.error }, 'unexpected error');
    logger.info({ grpc: method, model: context.name, status, errorCode: code, ms }, `gRPC ${method} ${status} in ${ms} ms`);
    const trailers = new grpc.Metadata();
    trailers.set('choripan-error-code', code);
    if (retryAfter !== undefined) {
      trailers.set('retry-after', String(retryAfter));
      trailers.set('grpc-retry-pushback-ms', String(retryAfter * 1000));
    }
    callback({ code: grpcCode, details: message, metadata: trailers });
  }]));
  server.addService(service, handlers);
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
