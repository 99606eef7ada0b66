'use strict';
// Argument checks for what only JS has: buffers, AbortSignals, predict()'s options, and load()'s options
// that js/ reads itself (trustedKeys, signature). load()'s other options are read and checked by the
// native core, for Node and Python alike, from vocabulary.json's table (native/core/options.h
// ReadOptions). Every message has one shape, the core's included: "Expected <what> for <name> but
// received <value> of type <type>", the value shown by received() below. A bad call throws a TypeError,
// or a RangeError for a value of the right type out of its range (js/errors.js misuse()).

const { KeyObject } = require('node:crypto');
const { misuse } = require('./errors');
const { vocabulary } = require('./vocabulary');

/** predict()'s options that the vocabulary states: topK's default and least, timeoutMs's range. */
const PREDICT = Object.fromEntries(vocabulary.predictOptions.map((o) => [o.name, o]));

function describe(value) {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return String(value);
}

/** "<value> of type <type>": how every message about a bad argument shows it (the binding's too). */
function received(value) {
  return `${describe(value)} of type ${value === null ? 'null' : typeof value}`;
}

/**
 * "Expected <what> for <name> but received <value> of type <type>".
 * @param {'type' | 'range'} [kind] 'range': `value` has the right type but is out of its range
 */
function invalid(what, name, value, kind = 'type') {
  return misuse(kind, `Expected ${what} for ${name} but received ${received(value)}`);
}

/** invalid() for a value that must be a number in a range: a RangeError when it is a number. */
function outOfRange(what, name, value) {
  return invalid(what, name, value, typeof value === 'number' ? 'range' : 'type');
}

function distance(a, b) {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

/** Rejects option names that are not in `known`, suggesting the closest one. */
function rejectUnknown(options, known, where) {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const closest = known
      .map((name) => [name, distance(key.toLowerCase(), name.toLowerCase())])
      .sort((x, y) => x[1] - y[1])[0];
    const hint = closest && closest[1] <= 3 ? ` Did you mean '${closest[0]}'?` : '';
    throw misuse('type', `Unknown option '${key}' for ${where}.${hint} Known options: ${known.join(', ')}`);
  }
}

function integer(value, name, min, max) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw outOfRange(`an integer between ${min} and ${max}`, name, value);
  }
  return value;
}

function number(value, name, min, max) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw outOfRange(`a number between ${min} and ${max}`, name, value);
  }
  return value;
}

function plainObject(value, name) {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid('an object', name, value);
  return value;
}

// The load options that js/ reads itself (vocabulary.json's layer "js"); the core reads the others.
const JS_LOAD_OPTIONS = vocabulary.options.filter((o) => o.layer === 'js').map((o) => o.name);

/**
 * load()'s options, split: what js/ reads itself (trustedKeys and signature, checked here) and the rest,
 * which the native core reads and checks (names, types and ranges).
 */
function loadOptions(options) {
  const given = plainObject(options, 'options');
  const { trustedKeys, signature } = given;
  const core = { ...given };
  for (const name of JS_LOAD_OPTIONS) delete core[name];
  const isKey = (key) => typeof key === 'string' || key instanceof Uint8Array || key instanceof KeyObject;
  if (trustedKeys !== undefined && !(Array.isArray(trustedKeys) && trustedKeys.length > 0 && trustedKeys.every(isKey))) {
    throw invalid('a non-empty array of PEM public keys (strings, Buffers or KeyObjects)', 'options.trustedKeys', trustedKeys);
  }
  if (signature !== undefined && typeof signature !== 'string') throw invalid('a string', 'options.signature', signature);
  if (signature !== undefined && trustedKeys === undefined) {
    throw misuse('type', 'options.signature names the file that options.trustedKeys checks: give trustedKeys too');
  }
  return { trustedKeys, signature, core };
}

let warnedTopk = false;

/**
 * `topK` under its old name `topk`, which stays accepted: a DeprecationWarning the first time, as Node's
 * own deprecated APIs warn, and an error when both are given (which one was meant?).
 */
function renamedTopK(given) {
  const { topk, ...rest } = given;
  if (topk === undefined) return [given, 'topK'];
  if (rest.topK !== undefined) {
    throw misuse('type', 'options.topk is the old name of options.topK: give topK alone');
  }
  if (!warnedTopk) {
    warnedTopk = true;
    process.emitWarning('predict() option topk is deprecated: use topK', { type: 'DeprecationWarning', code: 'CHORIPAN_DEP0001' });
  }
  return [{ ...rest, topK: topk }, 'topk'];
}

/** predict()'s options, complete and checked against the model's class count. */
function predictOptions(options, classes) {
  const [given, topKName] = renamedTopK(plainObject(options, 'options'));
  rejectUnknown(given, ['topK', 'signal', 'timeoutMs'], 'predict()');
  const topK = given.topK === undefined ? Math.min(PREDICT.topK.default, classes) : integer(given.topK, `options.${topKName}`, PREDICT.topK.min, classes);
  return { topK, ...deadlineOptions(given) };
}

/** probabilities()'s options. */
function runOptions(options) {
  const given = plainObject(options, 'options');
  rejectUnknown(given, ['signal', 'timeoutMs'], 'probabilities()');
  return deadlineOptions(given);
}

function deadlineOptions(given) {
  if (given.signal !== undefined && !(given.signal instanceof AbortSignal)) {
    throw invalid('an AbortSignal', 'options.signal', given.signal);
  }
  const { min, max } = PREDICT.timeoutMs;
  const timeoutMs = given.timeoutMs === undefined ? undefined : number(given.timeoutMs, 'options.timeoutMs', min, max);
  return { signal: given.signal, timeoutMs };
}

function imageBytes(value, name = 'image') {
  if (!(value instanceof Uint8Array)) throw invalid('a Buffer or Uint8Array of encoded image bytes', name, value);
  if (value.byteLength === 0) throw misuse('range', `Expected image bytes for ${name} but received an empty buffer`);
  return value;
}

/** What probabilities() takes: encoded image bytes, or one preprocessed image as a Float32Array. */
function modelInput(value, name = 'input') {
  return value instanceof Float32Array ? value : imageBytes(value, name);
}

function modelInputs(value) {
  if (!Array.isArray(value) || value.length === 0) throw invalid('a non-empty array of inputs', 'inputs', value);
  value.forEach((input, i) => modelInput(input, `inputs[${i}]`));
  return value;
}

/** topIndices()'s arguments: a row of probabilities, and how many of them. */
function ranking(probabilities, k) {
  if (!(probabilities instanceof Float32Array) && !(Array.isArray(probabilities) && probabilities.every((p) => typeof p === 'number'))) {
    throw invalid('a Float32Array or an array of numbers', 'probabilities', probabilities);
  }
  if (!Number.isSafeInteger(k) || k < 1) throw outOfRange('a positive integer', 'k', k);
}

function modelPath(value) {
  if (typeof value !== 'string' || value.length === 0) throw invalid('a path to a .pt artifact', 'path', value);
  return value;
}

module.exports = { invalid, received, loadOptions, predictOptions, runOptions, imageBytes, modelInput, modelInputs, ranking, modelPath };
