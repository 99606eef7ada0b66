'use strict';
// Cross-origin requests (CORS): the origins whose browser apps may call the service and read its answers
// (CHORIPAN_CORS_ORIGINS). None by default, so that a page of another origin cannot read what the service
// answers a visitor's browser. The service takes no cookies, so no credentials are allowed; an API key
// is a header the page's script sets (Authorization), which a preflight asks for like any other.

const cors = require('cors');

/**
 * A comma list of origins, each as a browser sends it in `Origin` (scheme, host and port only), or `*`
 * alone for any: '*', or the list (empty for none). Throws an Error that names the bad entry.
 * @param {string} [text]
 * @returns {'*' | string[]}
 */
function parseOrigins(text) {
  const entries = String(text ?? '').split(',').map((entry) => entry.trim()).filter(Boolean);
  if (entries.includes('*')) {
    if (entries.length > 1) throw new Error(`'*' allows every origin, and is listed alone; got '${text}'`);
    return '*';
  }
  for (const entry of entries) {
    let url = null;
    try {
      url = new URL(entry);
    } catch {
      // named below
    }
    // The origin a browser sends is serialized this one way: lower case, no default port, no path.
    if (url?.origin !== entry || !['http:', 'https:'].includes(url.protocol)) {
      const hint = url && url.origin !== 'null' ? ` (did you mean ${url.origin}?)` : '';
      throw new Error(`expected origins such as https://app.example.com (scheme, host and port only), got '${entry}'${hint}`);
    }
  }
  return entries;
}

/**
 * The middleware for those origins: it answers preflight requests, and lets their scripts read the
 * request id, Retry-After, the rate limit's fields and a refused key's challenge as well as the body.
 * Null when there are none.
 * @param {'*' | string[]} origins
 */
function corsFor(origins) {
  if (origins !== '*' && origins.length === 0) return null;
  return cors({ origin: origins, methods: ['GET', 'HEAD', 'POST'], exposedHeaders: ['X-Request-Id', 'Retry-After', 'RateLimit', 'RateLimit-Policy', 'WWW-Authenticate'], maxAge: 600 });
}

module.exports = { parseOrigins, corsFor };
