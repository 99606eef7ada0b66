'use strict';
// API keys (CHORIPAN_API_KEYS_FILE): who may call the service, and what for. A key's scope is `infer`
// (the routes that run a model or describe one) or `admin` (the model repository's calls, under
// /v2/repository; an admin key may infer too). Which routes need which scope is js/server/paths.js's
// accessOf(); this module checks the key a request carries against it. Keys are compared in constant
// time, as SHA-256 digests of one length, and no message, log line or error ever holds one.

const crypto = require('node:crypto');
const { ChoripanError } = require('../errors');
const { accessOf } = require('./paths');

/** The scopes, the lesser first: a key of a scope may do what the scopes before it allow. */
const SCOPES = Object.freeze(['infer', 'admin']);

/** What a Bearer token may hold (RFC 6750's b64token), so that every key can be sent as one. */
const TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** The shortest key taken: a key anyone on the network may try to guess is long and random. */
const MIN_KEY_LENGTH = 16;

const REALM = 'realm="choripan"';

/**
 * The entries of a keys file: one `KEY SCOPE` a line; blank lines and lines that start with # are
 * skipped. Each entry keeps its line, for the messages of keyring().
 * @param {string} text
 * @returns {Array<{ key: string, scope: string, line: number }>}
 */
function parseKeysFile(text) {
  const entries = [];
  text.split(/\r?\n/).forEach((content, index) => {
    const fields = content.trim().split(/\s+/).filter(Boolean);
    if (!fields.length || fields[0].startsWith('#')) return;
    // Neither field is quoted back: a line whose fields are swapped would put its key in the message.
    if (fields.length !== 2) throw new Error(`line ${index + 1}: expected KEY SCOPE, got ${fields.length} field${fields.length === 1 ? '' : 's'}`);
    entries.push({ key: fields[0], scope: fields[1], line: index + 1 });
  });
  return entries;
}

/** A digest of one length whatever the key's, for crypto.timingSafeEqual. */
const digest = (key) => crypto.createHash('sha256').update(key, 'utf8').digest();

/**
 * The keys, checked, as their digests. Throws an Error that names the bad entry (by its line in the
 * file, or its index in the list) and never holds a key.
 * @param {Array<{ key: string, scope: string, line?: number }>} entries
 */
function keyring(entries) {
  if (!Array.isArray(entries) || entries.length === 0) throw new Error('lists no key');
  const seen = new Map();
  const keys = entries.map((entry, index) => {
    const where = entry?.line ? `line ${entry.line}` : `apiKeys[${index}]`;
    const { key, scope } = entry ?? {};
    if (typeof key !== 'string' || key === '') throw new Error(`${where}: the key is empty`);
    if (!SCOPES.includes(scope)) throw new Error(`${where}: the scope is not one of ${SCOPES.join(', ')}`);
    if (!TOKEN.test(key)) throw new Error(`${where}: a key holds only letters, digits and - . _ ~ + / (= at its end), as a Bearer token does`);
    if (key.length < MIN_KEY_LENGTH) throw new Error(`${where}: a key of ${key.length} characters; keys need at least ${MIN_KEY_LENGTH} (openssl rand -hex 32 makes one)`);
    const hash = digest(key);
    const first = seen.get(hash.toString('hex'));
    if (first !== undefined) throw new Error(`${where}: the same key as ${first}`);
    seen.set(hash.toString('hex'), where);
    return { id: index, scope, digest: hash };
  });
  return {
    /** Whether any key may call the repository. */
    hasAdmin: keys.some((k) => k.scope === 'admin'),
    /**
     * The key that an Authorization value (a request's header, or gRPC's metadata) names: `{ id, scope }`,
     * or null. Every key is compared, in constant time, whichever matches.
     * @param {string | undefined} authorization
     */
    find(authorization) {
      const token = /^Bearer +([^\s]+) *$/i.exec(authorization ?? '')?.[1];
      if (token === undefined) return null;
      const presented = digest(token);
      let found = null;
      for (const k of keys) {
        if (crypto.timingSafeEqual(k.digest, presented) && found === null) found = { id: k.id, scope: k.scope };
      }
      return found;
    },
  };
}

/** Whether a key of scope `have` may make a call that needs `need`. */
const allows = (have, need) => SCOPES.indexOf(have) >= SCOPES.indexOf(need);

function unauthorized(message, challenge) {
  return Object.assign(new ChoripanError('E_UNAUTHORIZED', message), { authenticate: challenge });
}

function forbidden(message, challenge) {
  return Object.assign(new ChoripanError('E_FORBIDDEN', message), { authenticate: challenge });
}

/**
 * The key of a call that needs `scope`, or the refusal to throw: E_UNAUTHORIZED (401) with no key or a
 * wrong one, E_FORBIDDEN (403) for a key of a lesser scope and for an admin call when no key is an admin
 * key (nor any key at all: the repository is never open). Each carries its WWW-Authenticate challenge
 * (RFC 6750) as `authenticate`. With no keys, infer calls are open: `{ key: null }`.
 * @param {ReturnType<typeof keyring> | null} keys
 * @param {string | undefined} authorization the Authorization value the call came with
 * @param {'infer' | 'admin'} scope
 * @returns {{ key: { id: number, scope: string } | null } | { refusal: ChoripanError }}
 */
function authorize(keys, authorization, scope) {
  if (scope === 'admin' && !keys?.hasAdmin) {
    return { refusal: forbidden('Repository calls need an admin key, and CHORIPAN_API_KEYS_FILE lists none', `Bearer ${REALM}, error="insufficient_scope", scope="admin"`) };
  }
  if (!keys) return { key: null };
  const key = keys.find(authorization);
  if (!key) {
    // RFC 6750: no error code for a request that carried no key at all.
    return { refusal: authorization === undefined
      ? unauthorized('This call needs an API key: send Authorization: Bearer KEY', `Bearer ${REALM}`)
      : unauthorized('The API key is not valid', `Bearer ${REALM}, error="invalid_token"`) };
  }
  if (!allows(key.scope, scope)) {
    return { refusal: forbidden(`This call needs a key of scope ${scope}`, `Bearer ${REALM}, error="insufficient_scope", scope="${scope}"`) };
  }
  return { key };
}

/**
 * The middleware that asks each request for the key its path needs (paths.js accessOf) before anything
 * reads its body, and leaves the key in `res.locals.apiKey` for the rate limit.
 * @param {{ keys: ReturnType<typeof keyring> | null, metricsOpen: boolean }} options
 */
function requireKeys({ keys, metricsOpen }) {
  return (req, res, next) => {
    const need = accessOf(req.path, { metricsOpen });
    if (need === 'open') return next();
    const { key, refusal } = authorize(keys, req.get('authorization'), need);
    if (refusal) return next(refusal);
    res.locals.apiKey = key;
    return next();
  };
}

module.exports = { SCOPES, parseKeysFile, keyring, authorize, requireKeys };
