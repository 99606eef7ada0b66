'use strict';
// GET /predict?url=…: fetch an image from an allow-listed host, with limits on size, time and redirects.

const { ChoripanError } = require('../errors');

const MAX_REDIRECTS = 3;

/**
 * "host[:port],…" → a predicate on URLs. A bare host allows the scheme's default port only.
 * @param {string | undefined} list
 */
function parseAllowlist(list) {
  const entries = new Set(
    String(list ?? '')
      .split(',')
      .map((entry) => entry.trim().toLowerCase())
      .filter(Boolean),
  );
  return (url) => entries.has(url.host.toLowerCase()); // URL#host omits the default port
}

function checkUrl(text, allowed) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new ChoripanError('E_INVALID_ARGUMENT', `Expected an absolute http(s) URL for url but received ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ChoripanError('E_INVALID_ARGUMENT', `Only http and https URLs are fetched, not ${url.protocol}`);
  }
  if (!allowed(url)) {
    throw new ChoripanError('E_URL_NOT_ALLOWED',
      `Fetching from ${url.host} is not allowed; the server's CHORIPAN_URL_ALLOWLIST must list it`);
  }
  return url;
}

/**
 * @param {string} text the URL
 * @param {{ allowed: (url: URL) => boolean, maxBytes: number, timeoutMs: number, signal?: AbortSignal }} limits
 * @returns {Promise<Buffer>}
 */
async function fetchImage(text, { allowed, maxBytes, timeoutMs, signal }) {
  let url = checkUrl(text, allowed);
  const deadline = AbortSignal.timeout(timeoutMs);
  const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
  try {
    for (let hop = 0; ; hop++) {
      const response = await fetch(url, { redirect: 'manual', signal: combined });
      if (response.status >= 300 && response.status < 400 && response.headers.has('location')) {
        await response.body?.cancel();
        if (hop === MAX_REDIRECTS) throw new ChoripanError('E_FETCH', `More than ${MAX_REDIRECTS} redirects from ${text}`);
        const next = new URL(response.headers.get('location'), url);
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          throw new ChoripanError('E_FETCH', `${url.href} redirected to a ${next.protocol} URL`);
        }
        url = checkUrl(next.href, allowed);
        continue;
      }
      if (!response.ok) {
        await response.body?.cancel();
        throw new ChoripanError('E_FETCH', `${url.href} answered ${response.status} ${response.statusText}`);
      }
      const declared = Number(response.headers.get('content-length'));
      if (declared > maxBytes) {
        await response.body?.cancel();
        throw new ChoripanError('E_TOO_LARGE', `The image at ${url.href} is ${declared} bytes; the limit is ${maxBytes}`);
      }
      const chunks = [];
      let size = 0;
      for await (const chunk of response.body ?? []) {
        size += chunk.byteLength;
        if (size > maxBytes) throw new ChoripanError('E_TOO_LARGE', `The image at ${url.href} exceeds ${maxBytes} bytes`);
        chunks.push(chunk);
      }
      return Buffer.concat(chunks);
    }
  } catch (error) {
    if (error instanceof ChoripanError) throw error;
    if (deadline.aborted) throw new ChoripanError('E_TIMEOUT', `Fetching ${url.href} took longer than ${timeoutMs} ms`);
    if (signal?.aborted) throw new ChoripanError('E_ABORTED', 'The client went away', { cause: error });
    throw new ChoripanError('E_FETCH', `Fetching ${url.href} failed: ${error.cause?.message ?? error.message}`, { cause: error });
  }
}

module.exports = { fetchImage, parseAllowlist };
