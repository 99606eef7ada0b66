// @ts-check
'use strict';

const { EventEmitter } = require('node:events');
const { debuglog } = require('node:util');
const { native } = require('./binding');
const { inspect, decode } = require('./decode');
const { signedDigest } = require('./signature');
const { ChoripanError, misuse, atCallSite } = require('./errors');
const validate = require('./validate');

const debug = debuglog('choripan');

/**
 * The `k` most probable [index, probability] pairs, most probable first (ties: the lower index).
 * @param {ArrayLike<number>} probabilities
 * @param {number} k
 */
function topIndices(probabilities, k) {
  /** @type {Array<[number, number]>} */
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

/**
 * The `k` most probable labels, most probable first.
 * @param {ArrayLike<number>} probabilities
 * @param {readonly string[]} labels
 * @param {number} k
 */
function mostProbable(probabilities, labels, k) {
  return topIndices(probabilities, k).map(([index, probability]) => ({ label: labels[index], probability }));
}

// Errors of a whole call, not of one of its inputs.
/** @type {Set<string | number>} */
const CALL_ERRORS = new Set(['E_TIMEOUT', 'E_ABORTED', 'E_DISPOSED', 'E_QUEUE_FULL']);

/**
 * An input's own error, which says which input it was when the call had several.
 * @param {unknown} error
 * @param {number} index
 * @param {number} count
 */
function ofInput(error, index, count) {
  if (count > 1 && error instanceof ChoripanError && !CALL_ERRORS.has(error.code)) {
    error.message = `image ${index + 1} of ${count}: ${error.message}`;
  }
  return error;
}

/** @param {AbortSignal} signal */
function aborted(signal) {
  return new ChoripanError('E_ABORTED', 'The prediction was aborted', { cause: signal.reason });
}

/**
 * The caller's signal and timeoutMs for one call: every await in it races against them. This is where a
 * call's deadline is set; the core's reservation receives what is left of it (remainingMs), so that a
 * request that expires while queued never reaches a forward pass even when this event loop is too busy
 * to run the timer, and cancel() withdraws a queued request when the timer or the signal comes first.
 */
class Deadline {
  /** @type {NodeJS.Timeout | undefined} */
  #timer;
  /** @type {AbortSignal | undefined} */
  #signal;
  /** @type {(() => void) | undefined} */
  #onAbort;
  /** @type {Promise<never> | undefined} */
  #lost;
  /** @type {((error: ChoripanError) => void) | undefined} */
  #reject;

  /**
   * @param {AbortSignal | undefined} signal
   * @param {number | undefined} timeoutMs
   * @param {number} [started]
   */
  constructor(signal, timeoutMs, started = performance.now()) {
    this.timeoutMs = timeoutMs;
    this.started = started;
    this.#signal = signal;
    if (!signal && timeoutMs === undefined) return;
    this.#lost = new Promise((_, reject) => { this.#reject = reject; });
    this.#lost.catch(() => {}); // observed through race()
    if (signal) {
      this.#onAbort = () => this.#reject?.(aborted(signal));
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    if (timeoutMs !== undefined) {
      this.#timer = setTimeout(() => this.#reject?.(new ChoripanError('E_TIMEOUT', `No answer within timeoutMs (${timeoutMs} ms)`)), timeoutMs);
    }
  }

  /**
   * `promise`, unless the signal aborts or the time runs out first.
   * @template T
   * @param {Promise<T>} promise
   * @returns {Promise<T>}
   */
  race(promise) {
    if (this.#signal?.aborted) return Promise.reject(aborted(this.#signal));
    return this.#lost ? Promise.race([promise, this.#lost]) : promise;
  }

  /** What is left of timeoutMs, for the native deadline (undefined: none). */
  remainingMs() {
    return this.timeoutMs === undefined ? undefined : Math.max(1, this.timeoutMs - (performance.now() - this.started));
  }

  release() {
    clearTimeout(this.#timer);
    if (this.#onAbort) this.#signal?.removeEventListener('abort', this.#onAbort);
  }
}

/** @typedef {ReturnType<typeof inspect>} ImageHeader what an encoded input's header says */
/** @typedef {ImageHeader | { bytes: number }} Header an input's header, or a tensor's size */

/**
 * A loaded artifact. Create with `load()`; reuse it for every request; `dispose()` when done. Its state
 * (disposed or not, the work in hand) lives in the native core; this is the JS face of it.
 */
class Model extends EventEmitter {
  #native;

  /** @param {import('./binding').NativeModel} nativeModel @param {string} path */
  constructor(nativeModel, path) {
    super();
    this.#native = nativeModel;
    /** The artifact's metadata document (export/choripan/artifact.py). */
    this.metadata = Object.freeze(JSON.parse(nativeModel.metadata));
    this.path = path;
    this.name = this.metadata.name;
    this.labels = Object.freeze([...this.metadata.labels]);
    /** Which compiled model of a package runs a batch of one (index.d.ts LoneBatch), or null. */
    const loneBatch = nativeModel.loneBatch;
    this.loneBatch = loneBatch && Object.freeze(loneBatch);
  }

  /**
   * Classify one encoded image, in a format the artifact's decode policy lists (docs/api.md#formats).
   * @param {Uint8Array} image
   * @param {{ topK?: number, signal?: AbortSignal, timeoutMs?: number }} [options]
   */
  async predict(image, options) {
    const callSite = {};
    Error.captureStackTrace(callSite, this.predict);
    const { topK, signal, timeoutMs } = validate.predictOptions(options, this.labels.length);
    validate.imageBytes(image);
    const [probabilities] = await this.#run([image], signal, timeoutMs, callSite);
    const top = mostProbable(probabilities, this.labels, topK);
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
    const [probabilities] = await this.#run([validate.modelInput(input)], signal, timeoutMs, callSite);
    return probabilities;
  }

  /**
   * probabilities() of several inputs, in order, as one call: admitted together or refused together
   * before any is decoded, and the first to fail withdraws the others.
   * @param {Array<Uint8Array | Float32Array>} inputs
   * @param {{ signal?: AbortSignal, timeoutMs?: number }} [options]
   * @returns {Promise<Float32Array[]>}
   */
  async probabilitiesMany(inputs, options) {
    const callSite = {};
    Error.captureStackTrace(callSite, this.probabilitiesMany);
    const { signal, timeoutMs } = validate.runOptions(options);
    return this.#run(validate.modelInputs(inputs), signal, timeoutMs, callSite);
  }

  /**
   * @param {Array<Uint8Array | Float32Array>} inputs
   * @param {AbortSignal | undefined} signal
   * @param {number | undefined} timeoutMs
   * @param {object} callSite
   * @returns {Promise<Float32Array[]>}
   */
  async #run(inputs, signal, timeoutMs, callSite) {
    // Several inputs share a deadline, and one that fails aborts the others.
    const group = inputs.length > 1 ? new AbortController() : null;
    const deadline = new Deadline(group && signal ? AbortSignal.any([signal, group.signal]) : group?.signal ?? signal, timeoutMs);
    /** @type {import('./binding').NativeRequest | undefined} */
    let request;
    try {
      if (this.#native.disposed) throw new ChoripanError('E_DISPOSED', 'The model was disposed');
      const headers = this.#inspect(inputs);
      // Every check the headers allow came first; now the core reserves the inputs' places and the bytes
      // they will decode, all at once: it admits them together or refuses them together (the queue's
      // length, maxPendingBytes), and a worker holding a batch open waits for them, while a lone call is
      // never kept waiting for company.
      request = this.#native.reserve({
        count: inputs.length,
        bytes: headers.reduce((sum, header) => sum + header.bytes, 0),
        timeoutMs: deadline.remainingMs(),
      });
      const reserved = request;
      /** @type {unknown} */
      let failure = null;
      const runs = inputs.map((input, i) => this.#one(input, headers[i], reserved, deadline).catch((error) => {
        failure ??= ofInput(error, i, inputs.length);
        group?.abort();
        throw error;
      }));
      // Answered once every input is answered or withdrawn, so that a failed call leaves nothing queued.
      await Promise.allSettled(runs);
      if (failure) throw failure;
      return await Promise.all(runs);
    } catch (error) {
      throw atCallSite(error, callSite);
    } finally {
      request?.release(); // the places of inputs that never came, if any
      deadline.release();
    }
  }

  /**
   * What each input's header says (format, size, the bytes it decodes to), checked before anything is
   * decoded; a Float32Array is checked for its length.
   * @param {Array<Uint8Array | Float32Array>} inputs
   * @returns {Header[]}
   */
  #inspect(inputs) {
    const { crop, decode: policy } = this.metadata.preprocessing;
    return inputs.map((input, i) => {
      try {
        if (!(input instanceof Float32Array)) return inspect(input, policy);
        if (input.length !== 3 * crop * crop) {
          throw misuse('range', `Expected 3 × ${crop} × ${crop} = ${3 * crop * crop} floats, got ${input.length}`);
        }
        return { bytes: input.byteLength };
      } catch (error) {
        throw ofInput(error, i, inputs.length);
      }
    });
  }

  /**
   * One input through the core, to its probabilities: submitted through the call's reservation, as the
   * core decodes it (a tensor, the common JPEG) or decoded here first.
   * @param {Uint8Array | Float32Array} input
   * @param {Header} header
   * @param {import('./binding').NativeRequest} request
   * @param {Deadline} deadline
   * @returns {Promise<Float32Array>}
   */
  async #one(input, header, request, deadline) {
    let submitted;
    /** @type {{ decoder: 'core-jpeg' | 'sharp', decodeStartMs?: number, decodeMs?: number } | null} */
    let decoding = null;
    if (input instanceof Float32Array) {
      submitted = request.submit({ tensor: input });
    } else if ('inCore' in header && header.inCore) {
      decoding = { decoder: 'core-jpeg' }; // the core times it (the answer's decodeStartMs, decodeMs)
      submitted = request.submit({ jpeg: input, width: header.width, height: header.height });
    } else {
      // Sharp's work is this thread's to time: it ends before the core is given the pixels.
      const started = performance.now();
      const pixels = await deadline.race(decode(input, /** @type {ImageHeader} */ (header)));
      const decoded = performance.now();
      decoding = { decoder: 'sharp', decodeStartMs: started - decoded, decodeMs: decoded - started };
      submitted = request.submit(pixels);
    }
    let answer;
    try {
      answer = await deadline.race(submitted);
    } catch (error) {
      request.cancel(); // withdraws what the call still has queued
      throw error;
    }
    const totalMs = performance.now() - deadline.started;
    debug('%s: %d ms (queue %d, forward %d of a batch of %d)', this.name, Math.round(totalMs),
      Math.round(answer.queueMs), Math.round(answer.forwardMs), answer.batchSize);
    if (this.listenerCount('prediction')) {
      const { queueMs, forwardMs, batchSize, decodeStartMs, decodeMs } = answer;
      this.emit('prediction', { totalMs, queueMs, forwardMs, batchSize, ...(decoding && { decodeStartMs, decodeMs, ...decoding }) });
    }
    return answer.probabilities;
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
 * Load an artifact written by `python -m choripan`.
 * @param {string} path
 * @param {import('./index').LoadOptions} [options]
 * @returns {Promise<Model>}
 */
async function load(path, options) {
  const callSite = {};
  Error.captureStackTrace(callSite, load);
  validate.modelPath(path);
  const { trustedKeys, signature, core } = validate.loadOptions(options);
  try {
    const binding = native();
    binding.checkOptions(core); // a bad call is refused before anything is read
    if (trustedKeys !== undefined) {
      // The core then loads the file only if it is exactly what the trusted key signed.
      const digest = signedDigest(path, trustedKeys, signature);
      if (core.sha256 !== undefined && core.sha256.toLowerCase() !== digest) {
        throw new ChoripanError('E_MODEL_LOAD', `cannot load model ${path}: its signature names SHA-256 ${digest}, ` +
          `not the ${core.sha256} that options.sha256 pins`);
      }
      core.sha256 = digest;
    }
    return new Model(await binding.load(path, core), path);
  } catch (error) {
    throw atCallSite(error, callSite);
  }
}

module.exports = { Model, load, topIndices };
