'use strict';
// Every failure the service answers, as HTTP answers it: the one owner of what other packages' errors
// mean in choripan's codes, of each code's status (native/core/vocabulary.json), of Retry-After and of
// the body's shape. The app's error handler, the answers while the models load and the answers to
// requests Node cannot parse (js/server/main.js) all come through here.

const multer = require('multer');
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

module.exports = { toHttpError, errorBody };
