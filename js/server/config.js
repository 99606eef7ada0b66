'use strict';
// The server's configuration, in one place: every environment variable it reads, checked, turned into
// plain options. The library itself reads none. A bad value stops start-up with one line naming it.

const fs = require('node:fs');
const path = require('node:path');
const { native } = require('../binding');
const { publicKeys } = require('../signature');
const { parseOrigins } = require('./cors');

class ConfigError extends Error {
  constructor(variable, message) {
    super(`${variable}: ${message}`);
    this.variable = variable;
  }
}

/** Node's reasons a file cannot be read, in words. */
const FILE_ERRORS = { ENOENT: 'no such file', ENOTDIR: 'no such file', EISDIR: 'is a directory', EACCES: 'permission denied' };

/** Why a file could not be read, in words ('no such file', 'is a directory', …), from Node's error. */
function unreadableBecause(error) {
  return FILE_ERRORS[error.code] ?? error.code ?? error.message;
}

/** `cannot read FILE: why` when `file` is not a file this process can read; null when it is. */
function unreadable(file) {
  try {
    const stat = fs.statSync(file);
    if (stat.isDirectory()) return `cannot read ${file}: is a directory`;
    if (!stat.isFile()) return `cannot read ${file}: not a regular file`;
    fs.accessSync(file, fs.constants.R_OK);
    return null;
  } catch (error) {
    return `cannot read ${file}: ${unreadableBecause(error)}`;
  }
}

/** `text` as an absolute path, once it names a readable file. */
function existingFile(text) {
  const problem = unreadable(text);
  if (problem) throw new Error(problem);
  return path.resolve(text);
}

/** name → [what it is, parse(text) → value]; `help` lists them. */
const VARIABLES = {
  PORT: ['port to listen on (8080)', (t) => integer(t, 0, 65535)],
  HOST: ['address to listen on (127.0.0.1: this machine only; 0.0.0.0 opens it to the network)', (t) => t],
  CHORIPAN_MODEL: ['the artifact to load (the default model)', existingFile],
  CHORIPAN_MODELS: ['several models, name=path,… (served under /v2/models/{name} and ?model=name; the first is the default)', models],
  CHORIPAN_URL_ALLOWLIST: ['host[:port],… that GET /predict?url= may fetch (none)', (t) => t],
  // Checked here, so that a bad origin stops start-up; createApp takes the list as it is written.
  CHORIPAN_CORS_ORIGINS: ['origins,… (https://app.example.com) whose browser apps may call the service and read its answers, or * for any (none)', (t) => {
    parseOrigins(t);
    return t;
  }],
  CHORIPAN_TIMEOUT_MS: ['the longest a request may take, in ms (30000); X-Request-Timeout-Ms may ask for less', (t) => integer(t, 1, 3_600_000)],
  CHORIPAN_DEFAULT_LABEL: ['answer 200 { label, default: true } instead of 504 when a request runs out of time (unset: 504)', (t) => t],
  CHORIPAN_MAX_BYTES: ['the largest body or fetched image, in bytes (10485760)', (t) => integer(t, 1, 1 << 30)],
  CHORIPAN_FETCH_TIMEOUT_MS: ['the longest a ?url= fetch may take, in ms (10000)', (t) => integer(t, 1, 600_000)],
  CHORIPAN_MAX_QUEUE: ['maxQueue of each model', (t) => integer(t, 1, 1_000_000)],
  CHORIPAN_MAX_BATCH: ['maxBatch of each model', (t) => integer(t, 1, 1024)],
  CHORIPAN_MAX_DELAY_MS: ['maxDelayMs of each model', (t) => number(t, 0, 10_000)],
  CHORIPAN_WORKERS: ['workers of each model (the cores, divided between the models)', (t) => integer(t, 1, 64)],
  CHORIPAN_TRUSTED_KEYS: ['public keys (PEM files, comma-separated): every model must carry a model signing signature by one of them, MODEL.sig beside it (unset: none is checked)', trustedKeys],
  CHORIPAN_LOG_LEVEL: ['pino log level (info)', (t) => oneOf(t, ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])],
};

function integer(text, min, max) {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < min || value > max) throw new Error(`expected an integer from ${min} to ${max}, got '${text}'`);
  return value;
}

function number(text, min, max) {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < min || value > max) throw new Error(`expected a number from ${min} to ${max}, got '${text}'`);
  return value;
}

function oneOf(text, values) {
  if (!values.includes(text)) throw new Error(`expected one of ${values.join(', ')}, got '${text}'`);
  return text;
}

function trustedKeys(text) {
  const files = text.split(',').map((entry) => entry.trim()).filter(Boolean);
  if (!files.length) throw new Error('lists no key file');
  const pems = files.map((file) => {
    try {
      return fs.readFileSync(file);
    } catch (error) {
      throw new Error(`cannot read ${file}: ${unreadableBecause(error)}`);
    }
  });
  try {
    return publicKeys(pems, 'key');
  } catch (error) {
    throw new Error(error.message.replace(/^key\[(\d+)\]/, (_, i) => files[Number(i)]));
  }
}

/**
 * Models to serve from `NAME=PATH` entries (CHORIPAN_MODELS, `--model`), names unique; a lone entry may
 * be a bare PATH where `bare` allows it (named then by its metadata). The files are the caller's to check.
 */
function modelEntries(entries, { bare }) {
  if (!entries.length) throw new Error('lists no model');
  const parsed = entries.map((entry) => {
    const match = entry.match(/^([A-Za-z0-9_.-]+)=(.+)$/);
    if (match) return { name: match[1], path: match[2] };
    if (!bare) throw new Error(`expected name=path,…, got '${entry}'`);
    if (entries.length > 1) throw new Error(`several models need a name each (NAME=PATH), got '${entry}'`);
    return { name: null, path: entry };
  });
  const names = parsed.map((e) => e.name);
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice) throw new Error(`names ${twice} twice`);
  return parsed;
}

function models(text) {
  return modelEntries(text.split(',').map((entry) => entry.trim()).filter(Boolean), { bare: false })
    .map(({ name, path: file }) => ({ name, path: existingFile(file) }));
}

/** One variable's value, parsed; undefined when unset or empty. Throws ConfigError naming it. */
function readVariable(env, name) {
  if (env[name] === undefined || env[name] === '') return undefined;
  try {
    return VARIABLES[name][1](env[name]);
  } catch (error) {
    throw new ConfigError(name, error.message);
  }
}

/**
 * @param {NodeJS.ProcessEnv} env
 * @param {{ models?: Array<{ name: string | null, path: string }>, port?: number, host?: string }} [overrides]
 *   command-line flags, which win
 */
function readConfig(env = process.env, overrides = {}) {
  const read = (name) => readVariable(env, name);
  const modelList = overrides.models ?? read('CHORIPAN_MODELS') ?? [{ name: null, path: read('CHORIPAN_MODEL') ?? require('../index').DEFAULT_MODEL_PATH }];
  // Models in one process share the cores: each gets its share of workers, one thread each.
  const workers = read('CHORIPAN_WORKERS') ?? Math.max(1, Math.floor(native().availableCores() / modelList.length));
  const load = { workers };
  for (const [variable, option] of [['CHORIPAN_MAX_QUEUE', 'maxQueue'], ['CHORIPAN_MAX_BATCH', 'maxBatch'],
    ['CHORIPAN_MAX_DELAY_MS', 'maxDelayMs'], ['CHORIPAN_TRUSTED_KEYS', 'trustedKeys']]) {
    const value = read(variable);
    if (value !== undefined) load[option] = value;
  }
  return {
    port: overrides.port ?? read('PORT') ?? 8080,
    host: overrides.host ?? read('HOST') ?? '127.0.0.1',
    models: modelList,
    load,
    urlAllowlist: read('CHORIPAN_URL_ALLOWLIST') ?? '',
    corsOrigins: read('CHORIPAN_CORS_ORIGINS') ?? '',
    timeoutMs: read('CHORIPAN_TIMEOUT_MS') ?? 30_000,
    defaultLabel: read('CHORIPAN_DEFAULT_LABEL'),
    maxBodyBytes: read('CHORIPAN_MAX_BYTES') ?? 10 * 1024 * 1024,
    fetchTimeoutMs: read('CHORIPAN_FETCH_TIMEOUT_MS') ?? 10_000,
    logLevel: read('CHORIPAN_LOG_LEVEL') ?? 'info',
  };
}

/** The variables (all, or those named) and what each does, for --help. */
function describeVariables(names = Object.keys(VARIABLES)) {
  const width = Math.max(...names.map((name) => name.length));
  return names.map((name) => `  ${name.padEnd(width)}  ${VARIABLES[name][0]}`).join('\n');
}

module.exports = { readConfig, readVariable, describeVariables, modelEntries, unreadable, unreadableBecause, ConfigError, VARIABLES };
