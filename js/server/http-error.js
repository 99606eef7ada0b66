'use strict';
// Every failure the service answers, as HTTP answers it: the one owner of what other packages' errors
// mean in choripan's codes, of each code's status (native/core/vocabulary.json), of Retry-After and of
// the body's shape. The app's error handler, the answers while the models load and the answers to
// requests Node cannot parse (js/server/main.js) all come through here; and the gRPC service's
// (js/server/grpc.js), through toGrpcError, which gives each code its gRPC status.

const multer = require('multer');
const { status: GRPC } = require('@grpc/grpc-js');
const { ChoripanError, STATUS } = require('../errors');
const { isProtocol, isRepository } = require('./paths');
const { retryAfterSeconds } = require('./retry');

/** body-parser's, multer's and the router's own errors, in choripan's vocabulary. */
function translate(error, maxBodyBytes) {
  if (error instanceof ChoripanError) return error;
  if (error?.type === 'entity.too.large' || error?.code === 'LIMIT_FILE_SIZE') {
    return new ChoripanError('E_TOO_LARGE', `The body is over the ${maxBodyBytes}-byte limit`);
  }
  if (error?.status === 415) return new ChoripanError('E_UNSUPPORTED_FORMAT', error.message);
  // The router's, for a path parameter that is not valid percent-encoding.
  if (error instanceof URIError && error.status === 400) {
    return new ChoripanError('E_INVALID_ARGUMENT', `The path is malformed: ${error.message}`);
  }
  // multer passes the multipart parser's own errors (no boundary, truncated body) on as plain Errors,
  // which js/server/predict.js marks `multipart`.
  if (error instanceof multer.MulterError || error?.multipart || (error?.status >= 400 && error?.status < 500)) {
    return new ChoripanError('E_INVALID_ARGUMENT', `The request body is malformed: ${error.message}`);
  }
  return new ChoripanError('E_INTERNAL', 'Unexpected server error', { cause: error });
}

/**
 * What to answer for `error`. A refusal that passes carries `retryAfter`, in seconds: E_QUEUE_FULL the
 * time the refusing model needs for the work ahead (js/server/retry.js), E_NOT_READY one second,
 * E_RATE_LIMITED the time the client's bucket takes to hold a request. E_UNAUTHORIZED and E_FORBIDDEN
 * carry `authenticate`, the WWW-Authenticate challenge.
 * @param {unknown} error whatever a route or middleware threw, or Node's HTTP parser raised
 * @param {{ maxBodyBytes?: number, model?: import('../index').Model, unparsed?: boolean }} [context]
 *   `model`: the one the request was for; `unparsed`: `error` is the server's 'clientError', for a
 *   request Node could not parse
 * @returns {{ status: number, code: import('../index').ErrorCode, message: string, retryAfter?: number, authenticate?: string }}
 */
function toHttpError(error, { maxBodyBytes, model, unparsed = false } = {}) {
  if (unparsed) {
    const tooLarge = error?.code === 'HPE_HEADER_OVERFLOW';
    return { status: tooLarge ? 431 : STATUS.E_INVALID_ARGUMENT, code: tooLarge ? 'E_TOO_LARGE' : 'E_INVALID_ARGUMENT',
      message: `The request could not be parsed (${error?.code ?? error?.message})` };
  }
  const translated = translate(error, maxBodyBytes);
  const { code, message } = translated;
  const failure = { status: STATUS[code] ?? 500, code, message };
  if (code === 'E_QUEUE_FULL') failure.retryAfter = model ? retryAfterSeconds(model) : 1;
  if (code === 'E_NOT_READY') failure.retryAfter = 1;
  // js/server/rate-limit.js knows when the client's bucket holds a request again.
  if (code === 'E_RATE_LIMITED') failure.retryAfter = translated.retryAfter ?? 1;
  // js/server/api-keys.js: the challenge of RFC 6750 for a missing, wrong or lesser key.
  if (translated.authenticate) failure.authenticate = translated.authenticate;
  return failure;
}

/**
 * The body of a failure: the Open Inference Protocol's `{ error: "…" }` on its routes, and
 * `{ error: { code, message } }` on every other (and when there is no path: a request Node could not parse).
 * A repository call's message begins with its code (`E_MODEL_LOAD: …`), the one way that shape has to
 * tell an operator's script which failure it was.
 * @param {string | undefined} path the request's
 * @param {{ code: string, message: string }} failure
 */
function errorBody(path, { code, message }) {
  if (path === undefined || !isProtocol(path)) return { error: { code, message } };
  return { error: isRepository(path) ? `${code}: ${message}` : message };
}

/**
 * Each code's gRPC status (tests/js/vocabulary.test.js checks that every code of the vocabulary has one). A full
 * queue is UNAVAILABLE, as HTTP's 503 is and as Triton answers it: a transient refusal that gRPC's retry
 * policies retry by default, told when in `grpc-retry-pushback-ms`. RESOURCE_EXHAUSTED is left to what
 * never fits (E_TOO_LARGE), which is also what gRPC itself answers for a message over its limit, and to a
 * client past its rate (E_RATE_LIMITED), gRPC's status for a quota spent: its own share, not the server's.
 */
const GRPC_STATUS = Object.freeze({
  E_INVALID_ARGUMENT: GRPC.INVALID_ARGUMENT,
  E_DECODE: GRPC.INVALID_ARGUMENT,
  E_UNSUPPORTED_FORMAT: GRPC.INVALID_ARGUMENT,
  E_TOO_LARGE: GRPC.RESOURCE_EXHAUSTED,
  E_QUEUE_FULL: GRPC.UNAVAILABLE,
  E_TIMEOUT: GRPC.DEADLINE_EXCEEDED,
  E_ABORTED: GRPC.CANCELLED,
  E_DISPOSED: GRPC.UNAVAILABLE,
  E_MODEL_LOAD: GRPC.INTERNAL,
  E_DEVICE: GRPC.INTERNAL,
  E_INTERNAL: GRPC.INTERNAL,
  E_ADDON: GRPC.INTERNAL,
  E_URL_NOT_ALLOWED: GRPC.PERMISSION_DENIED,
  E_FETCH: GRPC.UNAVAILABLE,
  E_NOT_FOUND: GRPC.NOT_FOUND,
  E_NOT_READY: GRPC.UNAVAILABLE,
  E_UNAUTHORIZED: GRPC.UNAUTHENTICATED,
  E_FORBIDDEN: GRPC.PERMISSION_DENIED,
  E_RATE_LIMITED: GRPC.RESOURCE_EXHAUSTED,
});

/**
 * What to answer a gRPC call that failed with `error`: toHttpError's failure (its `status` is what HTTP
 * would answer, which the metrics count) with the gRPC status `grpcCode`; the service sends `code` and
 * `retryAfter` in the trailing metadata.
 * @param {unknown} error
 * @param {{ model?: import('../index').Model }} [context]
 */
function toGrpcError(error, context = {}) {
  const failure = toHttpError(error, context);
  return { ...failure, grpcCode: GRPC_STATUS[failure.code] ?? GRPC.INTERNAL };
}

module.exports = { toHttpError, toGrpcError, errorBody, GRPC_STATUS };
