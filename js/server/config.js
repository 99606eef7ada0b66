// @ts-check
'use strict';
// The server's configuration, in one place: every environment variable it reads, checked, turned into
// plain options. The library itself reads none. A bad value stops start-up with one line naming it.

const fs = require('node:fs');
const path = require('node:path');
const { publicKeys } = require('../signature');
const { parseOrigins } = require('./cors');
const { parseKeysFile, keyring } = require('./api-keys');
const { parseRateLimit } = require('./rate-limit');
const { parseTrustProxy } = require('./trust-proxy');
const { vocabulary, serverVariables, unsetValue } = require('../vocabulary');

class ConfigError extends Error {
  /** @param {string} variable @param {string} message */
  constructor(variable, message) {
    super(`${variable}: ${message}`);
    this.variable = variable;
  }
}

/** Node's reasons a file cannot be read, in words. */
const FILE_ERRORS = { ENOENT: 'no such file', ENOTDIR: 'no such file', EISDIR: 'is a directory', EACCES: 'permission denied' };

/**
 * Why a file could not be read, in words ('no such file', 'is a directory', …), from Node's error.
 * @param {unknown} error
 * @returns {string}
 */
function unreadableBecause(error) {
  const { code, message } = /** @type {NodeJS.ErrnoException} */ (error);
  return FILE_ERRORS[/** @type {keyof FILE_ERRORS} */ (code)] ?? code ?? message;
}

/**
 * `cannot read FILE: why` when `file` is not a file this process can read; null when it is.
 * @param {string} file
 */
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

/**
 * `text` as an absolute path, once it names a readable file.
 * @param {string} text
 */
function existingFile(text) {
  const problem = unreadable(text);
  if (problem) throw new Error(problem);
  return path.resolve(text);
}

/**
 * `text` as an absolute path, once it names a folder this process can list.
 * @param {string} text
 */
function existingFolder(text) {
  /** @param {string} why */
  const cannot = (why) => new Error(`cannot read ${text}: ${why}`);
  try {
    if (!fs.statSync(text).isDirectory()) throw cannot('not a folder');
    fs.accessSync(text, fs.constants.R_OK | fs.constants.X_OK);
  } catch (error) {
    const code = /** @type {NodeJS.ErrnoException} */ (error).code;
    throw code ? cannot(code === 'ENOENT' ? 'no such folder' : unreadableBecause(error)) : error;
  }
  return path.resolve(text);
}

/**
 * The text as it is, once `parse` (which throws what is wrong with it) has read it.
 * @param {(text: string) => unknown} parse
 */
const checkedText = (parse) => (/** @type {string} */ text) => {
  parse(text);
  return text;
};

/**
 * How the text of each type of variable (native/core/vocabulary.json's `server`) becomes its value.
 * @type {Record<string, (variable: any) => (text: string) => unknown>}
 */
const PARSERS = {
  integer: ({ min, max }) => (t) => integer(t, min, max),
  number: ({ min, max }) => (t) => number(t, min, max),
  string: () => (t) => t,
  enum: ({ values }) => (t) => oneOf(t, values),
  file: () => existingFile,
  directory: () => existingFolder,
  models: () => models,
  // Checked here, so that a bad origin, limit or proxy stops start-up; createApp takes each as it is written.
  origins: () => checkedText(parseOrigins),
  keyFiles: () => trustedKeys,
  boolean: () => boolean,
  apiKeysFile: () => apiKeys,
  rateLimit: () => checkedText(parseRateLimit),
  trustProxy: () => checkedText(parseTrustProxy),
};

/** @type {any[]} the variables as native/core/vocabulary.json lists them */
const SERVER = serverVariables();

/** NAME=PATH, NAME as the vocabulary's modelName allows (the names python -m choripan exports). */
const NAMED_ENTRY = new RegExp(`^(${vocabulary.modelName.pattern})=(.+)$`);

/**
 * name → [what it is, parse(text) → value]; `help` lists them.
 * @type {Record<string, [string, (text: string) => unknown]>}
 */
const VARIABLES = Object.fromEntries(SERVER.map((v) => [v.variable, [`${v.meaning} (${unsetValue(v)})`, PARSERS[v.type](v)]]));

/** @param {string} text @param {number} min @param {number} max */
function integer(text, min, max) {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < min || value > max) throw new Error(`expected an integer from ${min} to ${max}, got '${text}'`);
  return value;
}

/** @param {string} text @param {number} min @param {number} max */
function number(text, min, max) {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < min || value > max) throw new Error(`expected a number from ${min} to ${max}, got '${text}'`);
  return value;
}

/** @param {string} text @param {string[]} values */
function oneOf(text, values) {
  if (!values.includes(text)) throw new Error(`expected one of ${values.join(', ')}, got '${text}'`);
  return text;
}

/** @param {string} text */
function boolean(text) {
  const value = { true: true, 1: true, false: false, 0: false }[text.trim().toLowerCase()];
  if (value === undefined) throw new Error(`expected true or false, got '${text}'`);
  return value;
}

/**
 * The entries of an API keys file (js/server/api-keys.js), checked; an error names a line, never a key.
 * @param {string} file
 */
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
    throw new Error(`${file}: ${/** @type {Error} */ (error).message}`);
  }
}

/** @param {string} text */
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
    throw new Error(/** @type {Error} */ (error).message.replace(/^key\[(\d+)\]/, (_, i) => files[Number(i)]));
  }
}

/**
 * Models to serve from `NAME=PATH` entries (CHORIPAN_MODELS, `--model`), names unique; a lone entry may
 * be a bare PATH where `bare` allows it (named then by its metadata). The files are the caller's to check.
 * @param {string[]} entries
 * @param {{ bare: boolean }} options
 * @returns {Array<{ name: string | null, path: string }>}
 */
function modelEntries(entries, { bare }) {
  if (!entries.length) throw new Error('lists no model');
  const parsed = entries.map((entry) => {
    const match = entry.match(NAMED_ENTRY);
    if (match) return { name: match[1], path: match[2] };
    if (!bare && entry.includes('=')) {
      throw new Error(`'${entry.slice(0, entry.indexOf('='))}' cannot be a model's name: use ${vocabulary.modelName.rule}`);
    }
    if (!bare) throw new Error(`expected name=path,…, got '${entry}'`);
    if (entries.length > 1) throw new Error(`several models need a name each (NAME=PATH), got '${entry}'`);
    return { name: null, path: entry };
  });
  const names = parsed.map((e) => e.name);
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice) throw new Error(`names ${twice} twice`);
  return parsed;
}

/** @param {string} text */
function models(text) {
  return modelEntries(text.split(',').map((entry) => entry.trim()).filter(Boolean), { bare: false })
    .map(({ name, path: file }) => ({ name, path: existingFile(file) }));
}

/**
 * One variable's value, parsed; undefined when unset or empty. Throws ConfigError naming it.
 * @param {NodeJS.ProcessEnv} env
 * @param {string} name
 * @returns {any}
 */
function readVariable(env, name) {
  if (env[name] === undefined || env[name] === '') return undefined;
  try {
    return VARIABLES[name][1](env[name]);
  } catch (error) {
    throw new ConfigError(name, /** @type {Error} */ (error).message);
  }
}

/**
 * What the server is to do. It serves `models` (a list, each loaded at start), or, where `modelRepository`
 * names a folder, that model repository (then `models` is null). `load` holds the load options the
 * variables set; a model's share of the cores is the server's to add (js/server/main.js), since a
 * repository's models come and go.
 * @param {NodeJS.ProcessEnv} env
 * @param {{ models?: Array<{ name: string | null, path: string }>, modelRepository?: string | null,
 *   modelControl?: string, port?: number, grpcPort?: number, host?: string, [setting: string]: unknown }} [overrides]
 *   command-line flags, which win
 */
function readConfig(env = process.env, overrides = {}) {
  /** @param {string} name */
  const read = (name) => readVariable(env, name);
  // --model wins over a repository a variable names, as over the variables that name models.
  const flags = overrides.models ? { modelRepository: null, ...overrides } : overrides;
  /** @type {Record<string, unknown>} */
  const load = {};
  /** @type {Record<string, any>} */
  const settings = {};
  for (const variable of SERVER) {
    if (variable.setting && flags[variable.setting] !== undefined) {
      settings[variable.setting] = flags[variable.setting] ?? undefined; // a flag wins, and its variable is not read
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
  if (settings.modelControl !== 'none' && !settings.modelRepository) {
    throw new ConfigError(flags.modelControl ? '--model-control' : 'CHORIPAN_MODEL_CONTROL',
      `${settings.modelControl} needs a model repository (--model-repository or CHORIPAN_MODEL_REPOSITORY)`);
  }
  if (settings.modelRepository) {
    const named = ['CHORIPAN_MODELS', 'CHORIPAN_MODEL'].filter((name) => env[name]);
    if (!flags.modelRepository && named.length) {
      throw new ConfigError('CHORIPAN_MODEL_REPOSITORY', `serve a repository or ${named.join(' and ')}, not both: unset one`);
    }
    return { ...settings, models: null, load, tracing: readTracing(env) };
  }
  const choripan = require('..'); // here, not above: `choripan --help` reads this module, and needs no decoder
  const models = overrides.models ?? read('CHORIPAN_MODELS') ?? [{ name: null, path: read('CHORIPAN_MODEL') ?? choripan.DEFAULT_MODEL_PATH }];
  return { ...settings, models, load, tracing: readTracing(env) };
}

/** @param {string} text */
function isHttpUrl(text) {
  try {
    return ['http:', 'https:'].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

/** OTLP's two encodings over HTTP that this service sends (the SDK's exporters for each). */
const OTLP_PROTOCOLS = ['http/protobuf', 'http/json'];

/**
 * Whether the service traces its requests (js/server/tracing.js), from OpenTelemetry's own variables as
 * its specification means them: an empty one is unset, OTEL_SDK_DISABLED=true turns everything off,
 * OTEL_TRACES_EXPORTER=none runs no exporter, and values are case-insensitive. One difference: the SDK's
 * default exporter (otlp, to localhost:4318) runs only when asked for, by OTEL_TRACES_EXPORTER=otlp or
 * an endpoint, so that a server nobody configured for tracing loads no SDK and pays nothing. The SDK
 * reads the rest itself (endpoint, headers, sampler, service name…); a value it could not honour stops
 * start-up here instead of being ignored: another exporter, gRPC, an endpoint that is not a URL.
 * @param {NodeJS.ProcessEnv} env
 * @returns {{ protocol: string } | null} null: no tracing
 */
function readTracing(env) {
  /** @param {string} name */
  const read = (name) => env[name]?.trim().toLowerCase() || undefined;
  if (read('OTEL_SDK_DISABLED') === 'true') return null;
  const exporters = (read('OTEL_TRACES_EXPORTER') ?? '').split(',').map((exporter) => exporter.trim()).filter(Boolean);
  if (exporters.includes('none')) return null;
  const other = exporters.find((exporter) => exporter !== 'otlp');
  if (other) throw new ConfigError('OTEL_TRACES_EXPORTER', `expected otlp or none, got '${other}' (this service sends OTLP only)`);
  const endpoints = ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT'].filter((name) => read(name));
  if (!exporters.length && !endpoints.length) return null;
  for (const name of endpoints) {
    if (!isHttpUrl(String(env[name]).trim())) throw new ConfigError(name, `expected an http:// or https:// URL, got '${env[name]}'`);
  }
  const protocolVariable = ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL'].find((name) => read(name));
  const protocol = (protocolVariable && read(protocolVariable)) || OTLP_PROTOCOLS[0];
  if (protocolVariable && !OTLP_PROTOCOLS.includes(protocol)) {
    throw new ConfigError(protocolVariable, `expected ${OTLP_PROTOCOLS.join(' or ')}, got '${env[protocolVariable]}'`);
  }
  return { protocol };
}

/**
 * The variables (all, or those named) and what each does, for --help.
 * @param {string[]} [names]
 */
function describeVariables(names = Object.keys(VARIABLES)) {
  const width = Math.max(...names.map((name) => name.length));
  return names.map((name) => `  ${name.padEnd(width)}  ${VARIABLES[name][0]}`).join('\n');
}

module.exports = { readConfig, readTracing, readVariable, describeVariables, modelEntries, unreadable, unreadableBecause, ConfigError, VARIABLES };
