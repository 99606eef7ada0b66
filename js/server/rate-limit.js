'use strict';
// Rate limits (CHORIPAN_RATE_LIMIT=RATE:BURST): a token bucket per API key, or per client address when
// the service has no keys, on every route a key would guard (paths.js accessOf). A bucket holds BURST
// requests and refills at RATE a second; a request that finds it empty is answered 429 E_RATE_LIMITED
// with Retry-After. Every answer of those routes says where its client stands in the fields of
// draft-ietf-httpapi-ratelimit-headers (-11): RateLimit-Policy, the bucket as a quota of BURST requests
// over the seconds an empty one takes to fill, and RateLimit, the requests left (r) and the seconds (t)
// until the bucket is full again, or on a 429 until the next request is let through (= Retry-After).
// The gRPC service's calls take from the same buckets (createLimiter; js/server/main.js grpcAccess), on
// every method a key would guard, refused RESOURCE_EXHAUSTED with retry-after in the trailing metadata.
// The queue's own 503 (E_QUEUE_FULL) is another matter: the server's capacity, not a client's share.

const { ChoripanError } = require('../errors');
const { accessOf } = require('./paths');
const { clientAddress } = require('./trust-proxy');

/** The most buckets kept: past it, the least recently used goes (it comes back full, which favours its client). */
const MAX_BUCKETS = 10_000;

/**
 * `RATE:BURST`: requests a second (a positive number) and the bucket's size (a positive integer).
 * Throws an Error saying what it expected.
 * @param {string} text
 * @returns {{ rate: number, burst: number }}
 */
function parseRateLimit(text) {
  const match = /^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+)\s*$/.exec(String(text));
  const rate = Number(match?.[1]);
  const burst = Number(match?.[2]);
  if (!match || !(rate > 0 && rate <= 1e6) || !(burst >= 1 && burst <= 1e6)) {
    throw new Error(`expected RATE:BURST, requests a second (above 0, at most 1e6) and a bucket of 1 to 1e6 requests (20:40), got '${text}'`);
  }
  return { rate, burst };
}

/**
 * Token buckets by client. Their number is bounded: a bucket refilled to the brim is the same as none,
 * so the oldest ones are dropped once full as requests come, and past `maxBuckets` the least recently
 * used goes whatever it holds. Times in ms from `now()`.
 * @param {{ rate: number, burst: number, maxBuckets?: number, now?: () => number }} options
 */
function createBuckets({ rate, burst, maxBuckets = MAX_BUCKETS, now = () => performance.now() }) {
  /** @type {Map<string, { tokens: number, at: number }>} by client, the least recently used first */
  const buckets = new Map();
  const perMs = rate / 1000;
  const level = (bucket, at) => Math.min(burst, bucket.tokens + (at - bucket.at) * perMs);

  /** Drops the oldest buckets while they are full again, two at the most: amortized, whatever the traffic. */
  function expire(at) {
    for (let i = 0; i < 2; i++) {
      const [oldest] = buckets;
      if (!oldest || level(oldest[1], at) < burst) return;
      buckets.delete(oldest[0]);
    }
  }

  return {
    rate,
    burst,
    get size() {
      return buckets.size;
    },
    /**
     * Takes a request from `client`'s bucket.
     * @param {string} client
     * @returns {{ allowed: boolean, remaining: number, resetSeconds: number }} `resetSeconds`: with
     *   `allowed`, until the bucket is full; without, until it holds a request again (at least 1)
     */
    take(client) {
      const at = now();
      const bucket = buckets.get(client);
      let tokens = bucket ? level(bucket, at) : burst;
      buckets.delete(client);
      expire(at);
      if (buckets.size >= maxBuckets) buckets.delete(buckets.keys().next().value);
      const allowed = tokens >= 1;
      if (allowed) tokens -= 1;
      buckets.set(client, { tokens, at });
      const seconds = (allowed ? burst - tokens : 1 - tokens) / rate;
      return { allowed, remaining: Math.floor(tokens), resetSeconds: allowed ? Math.ceil(seconds) : Math.max(1, Math.ceil(seconds)) };
    },
  };
}

/**
 * The client a request counts against when the service has no keys: its address, an IPv6 one by its
 * /64 (the least a host is given, so that one host cycling through its addresses is one client).
 * Behind a proxy every request comes from the proxy unless trustProxy names it (js/server/trust-proxy.js).
 * @param {string | undefined} address the client's, as clientAddress() tells it
 */
function clientOf(address = '') {
  const bare = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped) return mapped[1];
  if (!bare.includes(':')) return bare;
  const [head, tail] = bare.split('::');
  const groups = (part) => (part ? part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : []);
  const all = tail === undefined ? groups(head) : [...groups(head), ...Array(8 - groups(head).length - groups(tail).length).fill('0'), ...groups(tail)];
  return `${all.slice(0, 4).map((g) => Number.parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/**
 * The service's one rate limit, which its HTTP requests and its gRPC calls (js/server/main.js) both take
 * from, so that a client has one bucket whichever way it calls: its key's, by the key's id (its place
 * in the list of keys, the same in every keyring made of that list: HTTP's and gRPC's), or without keys
 * its address's (clientOf). `take` answers where the client stands, and with `refusal` when its bucket is
 * empty: an E_RATE_LIMITED carrying `retryAfter`, already counted in choripan_rate_limited_total.
 * @param {{ buckets: ReturnType<typeof createBuckets>,
 *   metrics: ReturnType<typeof import('./metrics').createMetrics> }} options
 */
function createLimiter({ buckets, metrics }) {
  const { rate, burst } = buckets;
  return {
    rate,
    burst,
    /** The seconds an empty bucket takes to fill: RateLimit-Policy's window. */
    window: Math.max(1, Math.ceil(burst / rate)),
    /**
     * @param {{ key: { id: number } | null | undefined, address: string | undefined }} client its key, if
     *   any, else its address (as clientAddress() or peerAddress() tells it)
     * @returns {{ policy: 'per-key' | 'per-address', remaining: number, resetSeconds: number, refusal?: ChoripanError }}
     */
    take({ key, address }) {
      const policy = key ? 'per-key' : 'per-address';
      const { allowed, remaining, resetSeconds } = buckets.take(key ? `key ${key.id}` : clientOf(address));
      if (allowed) return { policy, remaining, resetSeconds };
      metrics.rateLimited();
      const refusal = new ChoripanError('E_RATE_LIMITED', `Past the rate limit of ${rate} requests a second (bursts of ${burst}): retry in ${resetSeconds} s`);
      return { policy, remaining, resetSeconds, refusal: Object.assign(refusal, { retryAfter: resetSeconds }) };
    },
  };
}

/**
 * Where a client's bucket stands after a take, as draft-ietf-httpapi-ratelimit-headers' two fields: HTTP's
 * headers, and (their names in lower case) a gRPC call's trailing metadata.
 * @param {ReturnType<typeof createLimiter>} limiter
 * @param {ReturnType<ReturnType<typeof createLimiter>['take']>} taken
 */
function rateLimitFields({ burst, window }, { policy, remaining, resetSeconds }) {
  return { 'RateLimit-Policy': `"${policy}";q=${burst};w=${window}`, RateLimit: `"${policy}";r=${remaining};t=${resetSeconds}` };
}

/**
 * The middleware: after the keys (js/server/api-keys.js), before any body is read.
 * @param {{ limiter: ReturnType<typeof createLimiter>, metricsOpen: boolean }} options
 */
function limitRate({ limiter, metricsOpen }) {
  return (req, res, next) => {
    if (accessOf(req.path, { metricsOpen }) === 'open') return next();
    const taken = limiter.take({ key: res.locals.apiKey, address: clientAddress(req) });
    res.set(rateLimitFields(limiter, taken));
    return next(taken.refusal);
  };
}

module.exports = { parseRateLimit, createBuckets, clientOf, createLimiter, limitRate, rateLimitFields, MAX_BUCKETS };
