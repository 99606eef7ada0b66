'use strict';
// One error vocabulary for the whole package: native/core/vocabulary.json owns the codes, what each
// means and the HTTP status the service answers with. The native binding builds this ChoripanError
// itself (js/binding.js hands it over), so nothing here re-wraps its errors.

const vocabulary = require('../native/core/vocabulary.json');

/** Each code and what it means. */
const CODES = Object.freeze(Object.fromEntries(vocabulary.errors.map((e) => [e.code, e.meaning])));

/** The HTTP status js/server answers each code with. */
const STATUS = Object.freeze(Object.fromEntries(vocabulary.errors.map((e) => [e.code, e.status])));

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

/**
 * `error`, with the stack of the JS call that led to it: an error the binding raised from a worker's
 * completion has no JS frames of its own.
 */
function atCallSite(error, callSite) {
  if (error instanceof ChoripanError && callSite?.stack) {
    error.stack = `${error.name} [${error.code}]: ${error.message}\n${callSite.stack.split('\n').slice(1).join('\n')}`;
  }
  return error;
}

/**
 * An error in one line, for a person at a terminal: its code, when it has one the message does not
 * already start with (Node's system errors do: `ENOENT: no such file…`), and its message's first line.
 */
function summary(error) {
  const [line] = String(error?.message ?? error).split('\n');
  return error?.code && !line.startsWith(error.code) ? `${error.code}: ${line}` : line;
}

module.exports = { CODES, STATUS, ChoripanError, atCallSite, summary };
