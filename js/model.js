'use strict';

const { debuglog } = require('node:util');
const { native } = require('./binding');
const { decode } = require('./decode');
const { ChoripanError, fromNative } = require('./errors');
const validate = require('./validate');

const debug = debuglog('choripan');

/** The `topk` most probable labels, most probable first. */
function topK(probabilities, labels, k) {
  const best = []; // [index, probability], kept sorted descending; k is small
  for (let i = 0; i < probabilities.length; i++) {
    const p = probabilities[i];
    if (best.length === k && p <= best[k - 1][1]) continue;
    let at = best.length === k ? k - 1 : best.length;
    while (at > 0 && best[at - 1][1] < p) {
      best[at] = best[at - 1];
      at--;
    }
    best[at] = [i, p];
  }
  return best.map(([index, probability]) => ({ label: labels[index], probability }));
}

/** A loaded artifact. Create with `load()`; reuse it for every request; `dispose()` when done. */
class Model {
  #native;
  #disposed = false;

  /** @param {object} nativeModel @param {string} path */
  constructor(nativeModel, path) {
    this.#native = nativeModel;
    /** The artifact's metadata document (export/artifact.py). */
    this.metadata = Object.freeze(JSON.parse(nativeModel.metadata));
    this.path = path;
    this.name = this.metadata.name;
    this.labels = Object.freeze([...this.metadata.labels]);
  }

  /**
   * Classify one encoded image (JPEG, PNG or WebP bytes).
   * @param {Uint8Array} image
   * @param {{ topk?: number, signal?: AbortSignal, timeoutMs?: number }} [options]
   */
  async predict(image, options) {
    const callSite = {};
    Error.captureStackTrace(callSite, this.predict);
    const started = performance.now();
    const { topk, signal, timeoutMs } = validate.predictOptions(options, this.labels.length);
    validate.imageBytes(image);
    if (this.#disposed) throw new ChoripanError('E_DISPOSED', 'The model was disposed');
    if (signal?.aborted) throw aborted(signal);

    const decoded = await decode(image);
    if (signal?.aborted) throw aborted(signal);
    const remaining = timeoutMs === undefined ? 0 : Math.max(1, timeoutMs - (performance.now() - started));
    if (timeoutMs !== undefined && performance.now() - started >= timeoutMs) {
      throw new ChoripanError('E_TIMEOUT', `No answer within timeoutMs (${timeoutMs} ms)`);
    }
    if (this.#disposed) throw new ChoripanError('E_DISPOSED', 'The model was disposed');

    const { id, promise } = this.#native.predict(decoded.pixels, decoded.width, decoded.height, decoded.channels, remaining);
    let probabilities;
    try {
      probabilities = await this.#settle(id, promise, signal, timeoutMs, remaining);
    } catch (error) {
      throw fromNative(error, callSite);
    }
    const top = topK(probabilities, this.labels, topk);
    debug('%s: %s %d ms', this.name, top[0].label, Math.round(performance.now() - started));
    return { label: top[0].label, probability: top[0].probability, top };
  }

  // The native promise, raced against the caller's signal and deadline. Losing the race withdraws
  // the request if it is still queued; a running one finishes and its answer is dropped.
  #settle(id, promise, signal, timeoutMs, remaining) {
    if (!signal && timeoutMs === undefined) return promise;
    return new Promise((resolve, reject) => {
      let timer;
      const finish = (settle, value) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        settle(value);
      };
      const withdraw = (error) => {
        if (id !== null) this.#native.cancel(id);
        finish(reject, error);
      };
      const onAbort = () => withdraw(aborted(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => withdraw(new ChoripanError('E_TIMEOUT', `No answer within timeoutMs (${timeoutMs} ms)`)), remaining);
      }
      promise.then((value) => finish(resolve, value), (error) => finish(reject, error));
    });
  }

  /** Counters and latency figures of this model's queue and workers. */
  stats() {
    return this.#native.stats();
  }

  get disposed() {
    return this.#disposed;
  }

  /**
   * Stops accepting requests: queued ones reject with E_DISPOSED, running ones still answer.
   * Resolves once the worker threads have exited and the model's memory is freed.
   */
  async dispose() {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.#native.dispose();
  }
}

function aborted(signal) {
  return new ChoripanError('E_ABORTED', 'The prediction was aborted', { cause: signal.reason });
}

/**
 * Load an artifact written by `python -m export`.
 * @param {string} path
 * @param {import('./index').LoadOptions} [options]
 * @returns {Promise<Model>}
 */
async function load(path, options) {
  const callSite = {};
  Error.captureStackTrace(callSite, load);
  validate.modelPath(path);
  const nativeOptions = validate.loadOptions(options);
  try {
    const nativeModel = await native().load(path, nativeOptions);
    return new Model(nativeModel, path);
  } catch (error) {
    throw fromNative(error, callSite);
  }
}

module.exports = { Model, load, topK };
