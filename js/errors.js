'use strict';
// One error vocabulary for the whole package: native/core/errors.h defines the same codes.

const CODES = Object.freeze({
  E_INVALID_ARGUMENT: 'a bad call: an argument or option is wrong',
  E_DECODE: 'the bytes are not a decodable image',
  E_UNSUPPORTED_FORMAT: 'an image format or content type that choripan does not take',
  E_TOO_LARGE: 'the input is over a size limit',
  E_QUEUE_FULL: 'the model queue is full (maxQueue); retry later',
  E_TIMEOUT: 'the deadline (timeoutMs) passed',
  E_ABORTED: 'the caller aborted (AbortSignal)',
  E_DISPOSED: 'the model was disposed',
  E_MODEL_LOAD: 'the model file could not be loaded',
  E_DEVICE: 'the requested device is not available',
  E_INTERNAL: 'libtorch failed while running the model',
  E_URL_NOT_ALLOWED: 'the server refuses to fetch this URL (CHORIPAN_URL_ALLOWLIST)',
  E_FETCH: 'fetching the image URL failed',
  E_NOT_FOUND: 'no such route',
});

class ChoripanError extends Error {
  /**
   * @param {keyof typeof CODES} code
   * @param {string} message
   * @param {{ cause?: unknown }} [options]
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = 'ChoripanError';
    this.code = code;
  }
}

/** A native error (it has a `code`) re-thrown with the stack of the JS call that led to it. */
function fromNative(error, callSite) {
  if (error instanceof ChoripanError) return error;
  const code = typeof error?.code === 'string' && error.code in CODES ? error.code : 'E_INTERNAL';
  const wrapped = new ChoripanError(code, error?.message ?? String(error), { cause: error });
  if (callSite?.stack) wrapped.stack = `${wrapped.name} [${code}]: ${wrapped.message}\n${callSite.stack.split('\n').slice(1).join('\n')}`;
  return wrapped;
}

module.exports = { CODES, ChoripanError, fromNative };
