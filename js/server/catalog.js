'use strict';
// The models the service answers with, by name and version: what its routes read. A model given to
// createApp is version 1 of its name; a model repository (js/server/repository.js) installs and removes
// versions while the service runs. Nothing is lost when it does: a request holds the version it was
// given until it is answered (acquire), a version replaced or removed takes no new request, and its
// model is disposed once the last request it holds is answered.

const { EventEmitter } = require('node:events');

/**
 * One version of a model, as served.
 * @typedef {object} Served
 * @property {string} name
 * @property {number} version
 * @property {import('../index').Model} model
 * @property {object} [source] what the repository loaded it from (its artifact's path and signature)
 */

class Catalog extends EventEmitter {
  /** @type {Map<string, Map<number, Served & { held: number, retired: boolean }>>} */
  #models = new Map();
  /** Disposals under way, of versions that no longer take requests. */
  #disposals = new Set();
  #sorted;

  /**
   * @param {{ sorted?: boolean }} [options] `sorted`: names in alphabetical order (a repository's), else
   *   in the order they were installed (the models given to createApp, the first the default)
   */
  constructor({ sorted = false } = {}) {
    super();
    this.#sorted = sorted;
  }

  /** A catalog of fixed models, each version 1 of its name. @param {Map<string, import('../index').Model>} models */
  static of(models) {
    const catalog = new Catalog();
    for (const [name, model] of models) catalog.install(name, 1, model);
    return catalog;
  }

  /** The names served, the default first. */
  names() {
    const names = [...this.#models.keys()];
    return this.#sorted ? names.sort() : names;
  }

  /** The name requests that name none get, or undefined while nothing is served. */
  defaultName() {
    return this.names()[0];
  }

  /** The versions of `name` served, lowest first. */
  versions(name) {
    return [...(this.#models.get(name)?.keys() ?? [])].sort((a, b) => a - b);
  }

  /**
   * The version of `name` that a request for it gets: `version`, or without one the highest.
   * @param {unknown} name
   * @param {number} [version]
   * @returns {Served | undefined}
   */
  find(name, version) {
    const versions = typeof name === 'string' ? this.#models.get(name) : undefined;
    if (!versions) return undefined;
    return versions.get(version ?? Math.max(...versions.keys()));
  }

  /** Every version served, by name then version. @returns {Served[]} */
  all() {
    return this.names().flatMap((name) => this.versions(name).map((version) => this.#models.get(name).get(version)));
  }

  /**
   * Serves `model` as `version` of `name`, for every request from now on. The version it replaces takes
   * no new request, and is disposed once it has answered those it holds.
   * @returns {Served}
   */
  install(name, version, model, source) {
    const served = { name, version, model, source, held: 0, retired: false };
    if (!this.#models.has(name)) this.#models.set(name, new Map());
    const versions = this.#models.get(name);
    const replaced = versions.get(version);
    versions.set(version, served);
    this.emit('install', served);
    if (replaced) this.#retire(replaced);
    return served;
  }

  /** Stops serving `version` of `name`: it takes no new request, and is disposed once it has answered those it holds. */
  remove(name, version) {
    const versions = this.#models.get(name);
    const served = versions?.get(version);
    if (!served) return;
    versions.delete(version);
    if (!versions.size) this.#models.delete(name);
    this.#retire(served);
  }

  /**
   * Holds `served` for one request: until the returned function is called, its model is not disposed,
   * though it may be replaced or removed meanwhile.
   * @returns {() => void} call once the request's model call has settled
   */
  acquire(served) {
    served.held++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      served.held--;
      if (served.retired && served.held === 0) this.#dispose(served);
    };
  }

  /** Stops serving every version; resolves once each has answered what it holds and been disposed. */
  async close() {
    for (const served of this.all()) this.remove(served.name, served.version);
    await Promise.all(this.#disposals);
  }

  #retire(served) {
    served.retired = true;
    if (served.held === 0) this.#dispose(served);
  }

  #dispose(served) {
    // 'dispose' tells whoever listens (the repository's log) that it is done, or why it failed.
    const disposal = served.model.dispose().then(() => undefined, (error) => error).then((error) => {
      this.#disposals.delete(disposal);
      this.emit('dispose', served, error);
    });
    this.#disposals.add(disposal);
  }
}

/**
 * Logs a model that has loaded, with `fields`; and, where its package's batch-1 model ran slower here than
 * its any-batch model (weights packed for another CPU's kernels: docs/runtime.md#one-package-on-other-cpus),
 * a warning that says so and what to do.
 * @param {{ info: Function, warn: Function }} logger
 * @param {import('..').Model} model
 * @param {object} fields
 * @param {string} message
 */
function logLoaded(logger, model, fields, message) {
  const lone = model.loneBatch;
  logger.info({ ...fields, ...(lone ? { loneBatch: lone.model } : {}), workers: model.stats().workers, intraOpThreads: model.stats().intraOpThreads }, message);
  if (lone?.model === 'model') {
    logger.warn({ model: fields.model, singleMs: round(lone.singleMs), batchedMs: round(lone.batchedMs) },
      `model ${fields.model}: its batch-1 model took ${round(lone.singleMs)} ms here against ${round(lone.batchedMs)} ms for ` +
      'its any-batch model: its weights were packed for another CPU\'s kernels, so lone requests and pairs run the ' +
      'any-batch model; export the package on a machine like this one for the fastest ones');
  }
}

function round(ms) {
  return Math.round(ms * 10) / 10;
}

module.exports = { Catalog, logLoaded };
