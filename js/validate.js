'use strict';
// Argument checks for the public API. The native layer trusts what passes here.

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

const LOAD_DEFAULTS = Object.freeze({
  maxBatch: 2,
  maxDelayMs: 2,
  maxQueue: 256,
  workers: 0,
  intraOpThreads: 0,
  device: 'cpu',
  warmup: true,
  maxPendingBytes: 2 ** 30,
});

/** load()'s options, complete and checked. */
function loadOptions(options) {
  const given = plainObject(options, 'options');
  rejectUnknown(given, Object.keys(LOAD_DEFAULTS), 'load()');
  const o = { ...LOAD_DEFAULTS, ...given };
  integer(o.maxBatch, 'options.maxBatch', 1, 1024);
  number(o.maxDelayMs, 'options.maxDelayMs', 0, 10_000);
  integer(o.maxQueue, 'options.maxQueue', 1, 1_000_000);
  integer(o.workers, 'options.workers', 0, 64);
  integer(o.intraOpThreads, 'options.intraOpThreads', 0, 256);
  if (o.device !== 'cpu' && o.device !== 'cuda') throw invalid("'cpu' or 'cuda'", 'options.device', o.device);
  if (typeof o.warmup !== 'boolean') throw invalid('a boolean', 'options.warmup', o.warmup);
  integer(o.maxPendingBytes, 'options.maxPendingBytes', 2 ** 20, Number.MAX_SAFE_INTEGER);
  return o;
}

/** predict()'s options, complete and checked against the model's class count. */
function predictOptions(options, classes) {
  const given = plainObject(options, 'options');
  rejectUnknown(given, ['topk', 'signal', 'timeoutMs'], 'predict()');
  const topk = given.topk === undefined ? Math.min(5, classes) : integer(given.topk, 'options.topk', 1, classes);
  if (given.signal !== undefined && !(given.signal instanceof AbortSignal)) {
    throw invalid('an AbortSignal', 'options.signal', given.signal);
  }
  const timeoutMs = given.timeoutMs === undefined ? undefined : number(given.timeoutMs, 'options.timeoutMs', 1, 2 ** 31 - 1);
  return { topk, signal: given.signal, timeoutMs };
}

function imageBytes(value, name = 'image') {
  if (!(value instanceof Uint8Array)) throw invalid('a Buffer or Uint8Array of JPEG, PNG or WebP bytes', name, value);
  if (value.byteLength === 0) throw new ChoripanError('E_INVALID_ARGUMENT', `Expected image bytes for ${name} but received an empty buffer`);
  return value;
}

function modelPath(value) {
  if (typeof value !== 'string' || value.length === 0) throw invalid('a path to a .pt artifact', 'path', value);
  return value;
}

module.exports = { invalid, loadOptions, predictOptions, imageBytes, modelPath };
