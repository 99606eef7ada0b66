'use strict';

const { EventEmitter } = require('node:events');
const { debuglog } = require('node:util');
const { native } = require('./binding');
const { inspect, decode } = require('./decode');
const { signedDigest } = require('./signature');
const { ChoripanError, atCallSite } = require('./errors');
const validate = require('./validate');

const debug = debuglog('choripan');

/** The `k` most probable [index, probability] pairs, most probable first (ties: the lower index). */
function topIndices(probabilities, k) {
  const best = []; // kept sorted descending; k is small
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
  return best;
}

/** The `topk` most probable labels, most probable first. */
function topK(probabilities, labels, k) {
  return topIndices(probabilities, k).map(([index, probability]) => ({ label: labels[index], probability }));
}

function aborted(signal) {
  return new ChoripanError('E_ABORTED', 'The prediction was aborted', { cause: signal.reason });
}

/**
 * The caller's signal and timeoutMs for one call: every await in it races against them. This is where a
 * call's deadline is set; the core only receives what is left of it (remainingMs), so that a request
 * that expires while queued never reaches a forward pass even when this event loop is too busy to run
 * the timer, and cancel(id) withdraws a queued request when the timer or the signal comes first.
 */
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

/**
 * A loaded artifact. Create with `load()`; reuse it for every request; `dispose()` when done. Its state
 * (disposed or not, the work in hand) lives in the native core; this is the JS face of it.
 */
class Model extends EventEmitter {
  #native;

  /** @param {object} nativeModel @param {string} path */
  constructor(nativeModel, path) {
    super();
    this.#native = nativeModel;
    /** The artifact's metadata document (export/artifact.py). */
    this.metadata = Object.freeze(JSON.parse(nativeModel.metadata));
    this.path = path;
    this.name = this.metadata.name;
    this.labels = Object.freeze([...this.metadata.labels]);
  }

  /**
   * Classify one encoded image (JPEG, PNG, WebP, GIF, TIFF or AVIF bytes, as the decode policy lists them).
   * @param {Uint8Array} image
   * @param {{ topk?: number, signal?: AbortSignal, timeoutMs?: number }} [options]
   */
  async predict(image, options) {
    const callSite = {};
    Error.captureStackTrace(callSite, this.predict);
    const { topk, signal, timeoutMs } = validate.predictOptions(options, this.labels.length);
    validate.imageBytes(image);
    const probabilities = await this.#run(image, signal, timeoutMs, callSite);
    const top = topK(probabilities, this.labels, topk);
    return { label: top[0].label, probability: top[0].probability, top };
  }

  /**
   * Every label's probability, in label order, for an encoded image or for one preprocessed image (a
   * Float32Array of 3 × crop × crop values, normalised as the metadata's preprocessing says).
   * @param {Uint8Array | Float32Array} input
   * @param {{ signal?: AbortSignal, timeoutMs?: number }} [options]
   * @returns {Promise<Float32Array>}
   */
  async probabilities(input, options) {
    const callSite = {};
    Error.captureStackTrace(callSite, this.probabilities);
    const { signal, timeoutMs } = validate.runOptions(options);
    if (!(input instanceof Float32Array)) validate.imageBytes(input, 'input');
    return this.#run(input, signal, timeoutMs, callSite);
  }

  async #run(input, signal, timeoutMs, callSite) {
    if (this.#native.disposed) throw atCallSite(new ChoripanError('E_DISPOSED', 'The model was disposed'), callSite);
    const deadline = new Deadline(signal, timeoutMs);
    // Every check the header allows comes before any decoding. The call is then announced with the
    // bytes it will decode: the core refuses it if they would not fit (maxPendingBytes), and a worker
    // holding a batch open waits for it, while a lone call is never kept waiting for company.
    let announced = null;
    try {
      let submitted;
      if (input instanceof Float32Array) {
        submitted = this.#native.predictTensor(input, deadline.remainingMs());
      } else {
        const header = inspect(input, this.metadata.preprocessing.decode);
        this.#native.announce(header.bytes);
        announced = header.bytes;
        if (header.inCore) {
          submitted = this.#native.predictJpeg(input, header.width, header.height, deadline.remainingMs(), announced);
        } else {
          const decoded = await deadline.race(decode(input, header));
          submitted = this.#native.predict(decoded.pixels, decoded.width, decoded.height, decoded.channels,
            deadline.remainingMs(), announced, decoded.cmyk);
        }
        announced = null; // predict() ended the announcement, whatever it answered
      }
      let answer;
      try {
        answer = await deadline.race(submitted.promise);
      } catch (error) {
        if (submitted.id !== null) this.#native.cancel(submitted.id); // withdraws it if still queued
        throw error;
      }
      const totalMs = performance.now() - deadline.started;
      debug('%s: %d ms (queue %d, forward %d of a batch of %d)', this.name, Math.round(totalMs),
        Math.round(answer.queueMs), Math.round(answer.forwardMs), answer.batchSize);
      if (this.listenerCount('prediction')) {
        this.emit('prediction', { totalMs, queueMs: answer.queueMs, forwardMs: answer.forwardMs, batchSize: answer.batchSize });
      }
      return answer.probabilities;
    } catch (error) {
      throw atCallSite(error, callSite);
    } finally {
      if (announced !== null) this.#native.retract(announced);
      deadline.release();
    }
  }

  /** Counters and latency figures of this model's queue and workers. */
  stats() {
    return this.#native.stats();
  }

  get disposed() {
    return this.#native.disposed;
  }

  /**
   * Stops accepting requests: queued ones reject with E_DISPOSED, running ones still answer.
   * Resolves once the worker threads have exited and the model's memory is freed.
   */
  dispose() {
    return this.#native.dispose();
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
  const { trustedKeys, signature, ...checked } = validate.loadOptions(options);
  try {
    if (trustedKeys !== undefined) {
      // The core then loads the file only if it is exactly what the trusted key signed.
      const digest = signedDigest(path, trustedKeys, signature);
      if (checked.sha256 !== undefined && checked.sha256.toLowerCase() !== digest) {
        throw new ChoripanError('E_MODEL_LOAD', `cannot load model ${path}: its signature names SHA-256 ${digest}, ` +
          `not the ${checked.sha256} that options.sha256 pins`);
      }
      checked.sha256 = digest;
    }
    return new Model(await native().load(path, checked), path);
  } catch (error) {
    throw atCallSite(error, callSite);
  }
}

module.exports = { Model, load, topIndices };
