'use strict';

const { debuglog } = require('node:util');
const { native } = require('./binding');
const { inspect, decode } = require('./decode');
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

function aborted(signal) {
  return new ChoripanError('E_ABORTED', 'The prediction was aborted', { cause: signal.reason });
}

/** The caller's signal and timeoutMs for one call: every await in it races against them. */
class Deadline {
  #timer;
  #signal;
  #onAbort;
  #lost;
  #reject;

  constructor(signal, timeoutMs) {
    this.timeoutMs = timeoutMs;
    this.started = performance.now();
    this.#signal = signal;
    if (!signal && timeoutMs === undefined) return;
    this.#lost = new Promise((_, reject) => { this.#reject = reject; });
    this.#lost.catch(() => {}); // observed through race()
    if (signal) {
      this.#onAbort = () => this.#reject(aborted(signal));
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    if (timeoutMs !== undefined) {
      this.#timer = setTimeout(() => this.#reject(new ChoripanError('E_TIMEOUT', `No answer within timeoutMs (${timeoutMs} ms)`)), timeoutMs);
    }
  }

  /** `promise`, unless the signal aborts or the time runs out first. */
  race(promise) {
    if (this.#signal?.aborted) return Promise.reject(aborted(this.#signal));
    return this.#lost ? Promise.race([promise, this.#lost]) : promise;
  }

  /** What is left of timeoutMs, for the native deadline (0: none). */
  remainingMs() {
    return this.timeoutMs === undefined ? 0 : Math.max(1, this.timeoutMs - (performance.now() - this.started));
  }

  release() {
    clearTimeout(this.#timer);
    this.#signal?.removeEventListener('abort', this.#onAbort);
  }
}

// Native models alive in this thread. C's exit() (process.exit, an uncaught exception) tears libtorch
// down under any worker still inside a forward pass, so they are stopped first.
const live = new Set();
const forget = new FinalizationRegistry((ref) => live.delete(ref));
let exitHookInstalled = false;

function track(nativeModel) {
  const ref = new WeakRef(nativeModel);
  live.add(ref);
  forget.register(nativeModel, ref);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const entry of live) entry.deref()?.disposeSync();
    });
  }
  return ref;
}

/** A loaded artifact. Create with `load()`; reuse it for every request; `dispose()` when done. */
class Model {
  #native;
  #ref;
  #disposing = null;
  #maxPendingBytes;
  #pendingBytes = 0;

  /** @param {object} nativeModel @param {string} path @param {number} maxPendingBytes */
  constructor(nativeModel, path, maxPendingBytes) {
    this.#native = nativeModel;
    this.#ref = track(nativeModel);
    this.#maxPendingBytes = maxPendingBytes;
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
    const { topk, signal, timeoutMs } = validate.predictOptions(options, this.labels.length);
    validate.imageBytes(image);
    if (this.#disposing) throw new ChoripanError('E_DISPOSED', 'The model was disposed');
    const { maxAspectRatio } = native().limits;
    const deadline = new Deadline(signal, timeoutMs);
    let reserved = 0;
    // Announced while it decodes, so that a worker holding a batch open waits for it; a lone call is
    // never kept waiting for company that is not coming.
    this.#native.announce();
    let announced = true;
    try {
      reserved = this.#reserve(inspect(image, maxAspectRatio).bytes);
      const decoded = await deadline.race(decode(image));
      if (this.#disposing) throw new ChoripanError('E_DISPOSED', 'The model was disposed');

      announced = false; // predict() ends the announcement, whatever it answers
      const { id, promise } = this.#native.predict(decoded.pixels, decoded.width, decoded.height, decoded.channels,
        deadline.remainingMs(), true);
      const bytes = reserved; // from here on, the native answer releases them: the pixels stay pinned until then
      reserved = 0;
      promise.then(() => this.#release(bytes), () => this.#release(bytes));
      let probabilities;
      try {
        probabilities = await deadline.race(promise);
      } catch (error) {
        if (id !== null) this.#native.cancel(id); // withdraws it if the deadline won and it is still queued
        throw fromNative(error, callSite);
      }
      const top = topK(probabilities, this.labels, topk);
      debug('%s: %s %d ms', this.name, top[0].label, Math.round(performance.now() - deadline.started));
      return { label: top[0].label, probability: top[0].probability, top };
    } finally {
      if (announced) this.#native.retract();
      deadline.release();
      this.#release(reserved);
    }
  }

  // Decoded pixels wait in the queue until a worker reads them; their total is bounded so that a burst
  // of large images is refused rather than exhausting memory.
  #reserve(bytes) {
    if (this.#pendingBytes > 0 && this.#pendingBytes + bytes > this.#maxPendingBytes) {
      throw new ChoripanError('E_QUEUE_FULL',
        `${Math.round(this.#pendingBytes / 2 ** 20)} MiB of decoded images are already waiting (maxPendingBytes); retry later`);
    }
    this.#pendingBytes += bytes;
    return bytes;
  }

  #release(bytes) {
    this.#pendingBytes -= bytes;
  }

  /** Counters and latency figures of this model's queue and workers. */
  stats() {
    return this.#native.stats();
  }

  get disposed() {
    return this.#disposing !== null;
  }

  /**
   * Stops accepting requests: queued ones reject with E_DISPOSED, running ones still answer.
   * Resolves once the worker threads have exited and the model's memory is freed.
   */
  dispose() {
    this.#disposing ??= this.#native.dispose().finally(() => live.delete(this.#ref));
    return this.#disposing;
  }
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
  const { maxPendingBytes, ...nativeOptions } = validate.loadOptions(options);
  try {
    const nativeModel = await native().load(path, nativeOptions);
    return new Model(nativeModel, path, maxPendingBytes);
  } catch (error) {
    throw fromNative(error, callSite);
  }
}

module.exports = { Model, load };
