'use strict';
// The server's configuration, in one place: every environment variable it reads, checked, turned into
// plain options. The library itself reads none. A bad value stops start-up with one line naming it.

const fs = require('node:fs');
const path = require('node:path');
const { publicKeys } = require('../signature');
const { parseOrigins } = require('./cors');
const { parseKeysFile, keyring } = require('./api-keys');
const { parseRateLimit } = require('./rate-limit');
const { serverVariables, unsetValue } = require('../vocabulary');

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

/** How the text of each type of variable (native/core/vocabulary.json's `server`) becomes its value. */
const PARSERS = {
  integer: ({ min, max }) => (t) => integer(t, min, max),
  number: ({ min, max }) => (t) => number(t, min, max),
  string: () => (t) => t,
  enum: ({ values }) => (t) => oneOf(t, values),
  file: () => existingFile,
  models: () => models,
  // Checked here, so that a bad origin stops start-up; createApp takes the list as it is written.
  origins: () => (t) => {
    parseOrigins(t);
    return t;
  },
  keyFiles: () => trustedKeys,
  boolean: () => boolean,
  apiKeysFile: () => apiKeys,
  // Checked here, so that a bad limit stops start-up; createApp takes it as it is written, as it does origins.
  rateLimit: () => (t) => {
    parseRateLimit(t);
    return t;
  },
};

const SERVER = serverVariables();

/** name → [what it is, parse(text) → value]; `help` lists them. */
const VARIABLES = Object.fromEntries(SERVER.map((v) => [v.variable, [`${v.meaning} (${unsetValue(v)})`, PARSERS[v.type](v)]]));

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

function boolean(text) {
  const value = { true: true, 1: true, false: false, 0: false }[text.trim().toLowerCase()];
  if (value === undefined) throw new Error(`expected true or false, got '${text}'`);
  return value;
}

/** The entries of an API keys file (js/server/api-keys.js), checked; an error names a line, never a key. */
function apiKeys(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${file}: ${unreadableBecause(error)}`);
  }
  try {
    const entries = parseKeysFile(text);
    keyring(entries);
    return entries.map(({ key, scope }) => ({ key, scope }));
  } catch (error) {
    throw new Error(`${file}: ${error.message}`);
  }
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
  const choripan = require('..'); // here, not above: `choripan --help` reads this module, and needs no decoder
  const modelList = overrides.models ?? read('CHORIPAN_MODELS') ?? [{ name: null, path: read('CHORIPAN_MODEL') ?? choripan.DEFAULT_MODEL_PATH }];
  // Models in one process share the cores: each gets its share of workers, one thread each.
  const load = { workers: Math.max(1, Math.floor(choripan.availableCores() / modelList.length)) };
  const settings = {};
  for (const variable of SERVER) {
    if (variable.setting && overrides[variable.setting] !== undefined) {
      settings[variable.setting] = overrides[variable.setting]; // a flag wins, and its variable is not read
    } else if (variable.setting) {
      settings[variable.setting] = read(variable.variable) ?? variable.default;
    } else if (variable.option) {
      const value = read(variable.variable);
      if (value !== undefined) load[variable.option] = value;
    }
  }
  if (settings.metricsAuth && !settings.apiKeys) {
    throw new ConfigError('CHORIPAN_METRICS_AUTH', 'closes /metrics to requests without a key, and needs CHORIPAN_API_KEYS_FILE to say which keys');
  }
  return { ...settings, models: modelList, load };
}

/** The variables (all, or those named) and what each does, for --help. */
function describeVariables(names = Object.keys(VARIABLES)) {
  const width = Math.max(...names.map((name) => name.length));
  return names.map((name) => `  ${name.padEnd(width)}  ${VARIABLES[name][0]}`).join('\n');
}

module.exports = { readConfig, readVariable, describeVariables, modelEntries, unreadable, unreadableBecause, ConfigError, VARIABLES };
