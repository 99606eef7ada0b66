'use strict';
// Argument checks for the public API: types and names, with messages that name the option. The native
// core checks values against the ranges it owns, whatever reaches it.

const { KeyObject } = require('node:crypto');
const { ChoripanError } = require('./errors');

function describe(value) {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return String(value);
}

/** "Expected <what> for <name> but received <value> of type <type>". */
function invalid(what, name, value) {
  const type = value === null ? 'null' : typeof value;
  return new ChoripanError('E_INVALID_ARGUMENT',
    `Expected ${what} for ${name} but received ${describe(value)} of type ${type}`);
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
    throw new ChoripanError('E_INVALID_ARGUMENT',
      `Unknown option '${key}' for ${where}.${hint} Known options: ${known.join(', ')}`);
  }
}

function integer(value, name, min, max) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalid(`an integer between ${min} and ${max}`, name, value);
  }
  return value;
}

function number(value, name, min, max) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw invalid(`a number between ${min} and ${max}`, name, value);
  }
  return value;
}

function plainObject(value, name) {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid('an object', name, value);
  return value;
}

// load()'s options, with their types, defaults and ranges: the native core owns them (it applies the
// defaults and checks the ranges); here only the types and the names are checked.
const LOAD_OPTIONS = require('../native/core/vocabulary.json').options;

/** load()'s options, checked for type and name; what is left out takes the core's default. */
function loadOptions(options) {
  const given = plainObject(options, 'options');
  rejectUnknown(given, LOAD_OPTIONS.map((o) => o.name), 'load()');
  for (const { name, type, values } of LOAD_OPTIONS) {
    const value = given[name];
    if (value === undefined) continue;
    const ok = {
      integer: Number.isInteger(value),
      number: typeof value === 'number' && Number.isFinite(value),
      boolean: typeof value === 'boolean',
      string: typeof value === 'string',
      keys: Array.isArray(value) && value.length > 0 &&
        value.every((key) => typeof key === 'string' || key instanceof Uint8Array || key instanceof KeyObject),
      enum: values?.includes(value),
    }[type];
    if (!ok) {
      const what = { integer: 'an integer', number: 'a finite number', boolean: 'a boolean', string: 'a string',
        keys: 'a non-empty array of PEM public keys (strings, Buffers or KeyObjects)' }[type] ??
        values.map((v) => `'${v}'`).join(' or ');
      throw invalid(what, `options.${name}`, value);
    }
  }
  if (given.signature !== undefined && given.trustedKeys === undefined) {
    throw new ChoripanError('E_INVALID_ARGUMENT', 'options.signature names the file that options.trustedKeys checks: give trustedKeys too');
  }
  return { ...given };
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
    throw new ChoripanError('E_INVALID_ARGUMENT', 'options.topk is the old name of options.topK: give topK alone');
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
  const topK = given.topK === undefined ? Math.min(5, classes) : integer(given.topK, `options.${topKName}`, 1, classes);
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
  const timeoutMs = given.timeoutMs === undefined ? undefined : number(given.timeoutMs, 'options.timeoutMs', 1, 2 ** 31 - 1);
  return { signal: given.signal, timeoutMs };
}

function imageBytes(value, name = 'image') {
  if (!(value instanceof Uint8Array)) throw invalid('a Buffer or Uint8Array of encoded image bytes', name, value);
  if (value.byteLength === 0) throw new ChoripanError('E_INVALID_ARGUMENT', `Expected image bytes for ${name} but received an empty buffer`);
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
  if (!Number.isSafeInteger(k) || k < 1) throw invalid('a positive integer', 'k', k);
}

function modelPath(value) {
  if (typeof value !== 'string' || value.length === 0) throw invalid('a path to a .pt artifact', 'path', value);
  return value;
}

module.exports = { invalid, loadOptions, predictOptions, runOptions, imageBytes, modelInput, modelInputs, ranking, modelPath };
