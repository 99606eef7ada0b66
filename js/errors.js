'use strict';
// One error vocabulary for the whole package: native/core/vocabulary.json owns the codes, what each
// means and the HTTP status the service answers with. This module owns which class each error is: a bad
// call is a TypeError or a RangeError, as Node's own APIs throw, and a ChoripanError all the same; the
// native binding builds its errors through codedError() (js/binding.js hands it over), so nothing here
// re-wraps them.

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

  /** A bad call's TypeError or RangeError is a ChoripanError too: one `catch` still sees every code. */
  static [Symbol.hasInstance](value) {
    return Function.prototype[Symbol.hasInstance].call(this, value) ||
      (this === ChoripanError && (value instanceof ChoripanTypeError || value instanceof ChoripanRangeError));
  }
}

// A bad call's code, as the core's Error(Misuse, …) gives it too (native/core/errors.h).
const MISUSE_CODE = 'E_INVALID_ARGUMENT';

/** An argument or option of another type, name or form than the call takes. */
class ChoripanTypeError extends TypeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.code = MISUSE_CODE;
  }
}

/** A number (or a length) of the right type outside its range. */
class ChoripanRangeError extends RangeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.code = MISUSE_CODE;
  }
}

/**
 * A bad call, told which kind: 'type' (a value of another type, name or form) or 'range' (of the
 * right type, out of its range).
 * @param {'type' | 'range'} kind
 * @param {string} message
 */
function misuse(kind, message) {
  return kind === 'range' ? new ChoripanRangeError(message) : new ChoripanTypeError(message);
}

/**
 * The error for `code`: a bad call's class when `kind` says it is one (the native core's Misuse), a
 * ChoripanError otherwise. The native binding builds every error it raises with this.
 * @param {keyof typeof CODES} code
 * @param {string} message
 * @param {'type' | 'range'} [kind]
 */
function codedError(code, message, kind) {
  return kind ? misuse(kind, message) : new ChoripanError(code, message);
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

module.exports = { CODES, STATUS, ChoripanError, misuse, codedError, atCallSite, summary };
