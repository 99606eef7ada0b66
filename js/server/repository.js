'use strict';
// A model repository, as Triton lays one out: DIR/NAME/VERSION/ holding one artifact (.pt2 or .pt), NAME
// a served model's name (the vocabulary's modelName), VERSION a positive integer. Each version loaded is
// served (js/server/catalog.js) under /v2/models/NAME/versions/VERSION, the highest under
// /v2/models/NAME and ?model=NAME too. How the repository changes what is served is its control mode,
// in Triton's words: `none` loads it at start, `poll` also reads it again every interval and loads the
// versions added or changed and unloads those removed, `explicit` loads and unloads a model only when
// a repository call asks (js/server/repository-routes.js).
//
// A version is loaded and warmed beside the one it replaces, which goes on answering until then; a file
// that does not load leaves what was served as it was, and is reported (E_MODEL_LOAD: on the call that
// asked, in the log, in choripan_model_load_failures_total). One change at a time: loads, unloads and
// polls wait for each other.
//
// The versions served share the cores: each change ends with every version on its share of them now
// (#rebalance). A model's workers are fixed once it is loaded (native/core/model.h starts its threads
// and their OpenMP teams at load), so a version whose share changed is loaded again from its file with
// its new share, and swapped in as a changed version is.
//
// Nothing outside DIR is read: a name or a version that breaks its rule is never a path, and every path
// is resolved (symbolic links included) and refused unless it lies inside DIR.

const fs = require('node:fs/promises');
const path = require('node:path');
const { load } = require('..');
const { ChoripanError } = require('../errors');
const { vocabulary } = require('../vocabulary');
const { Catalog, logLoaded } = require('./catalog');

const NAME = new RegExp(`^${vocabulary.modelName.pattern}$`);
/** A version's folder: a positive integer, in one spelling (no leading zero), small enough to be exact. */
const VERSION = /^[1-9]\d{0,14}$/;
const ARTIFACT = /\.pt2?$/;
const CONTROLS = ['none', 'poll', 'explicit'];

const key = (name, version) => `${name}/${version}`;
/** A share of the cores, as loadOptions gives it: its `workers`, or none for a model alone (every core, as its format runs best). */
const shareOf = (count) => (count === undefined ? 'every core' : `${count} worker${count === 1 ? '' : 's'}`);

/** A model's name, checked before it is used as a path; E_INVALID_ARGUMENT names the rule. */
function checkName(name) {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new ChoripanError('E_INVALID_ARGUMENT', `${JSON.stringify(String(name)).slice(0, 80)} is not a model's name: ${vocabulary.modelName.rule}`);
  }
  return name;
}

class ModelRepository {
  /** What is served. */
  catalog = new Catalog({ sorted: true });
  #root;
  #control;
  #pollMs;
  #loadOptions;
  #logger;
  /** The change under way, that the next waits for. */
  #queue = Promise.resolve();
  #timer = null;
  #closed = false;
  /** The versions being loaded now, for the index. */
  #loading = new Set();
  /** name/version → { signature, reason } of the last failed load of a version, until it loads. */
  #failed = new Map();
  /** name/version → { name, version, count } of failed loads, since start. */
  #failureCounts = new Map();
  /** What the log has said once and need not say at every poll. */
  #warned = new Set();
  /** The changes waiting for the one under way: while one waits, the one ending leaves the cores to it. */
  #waiting = 0;
  /** name/version → the signature and share of its last reload that failed, not tried again as it is. */
  #reshareFailed = new Map();

  /**
   * @param {string} root the repository's real path (open() resolves it)
   * @param {object} options
   * @param {'none' | 'poll' | 'explicit'} options.control
   * @param {number} options.pollMs with `poll`, the interval
   * @param {(count: number) => import('../index').LoadOptions} options.loadOptions the options of a model
   *   that will be one of `count` loaded in this process (its share of the cores: `workers`, which, when
   *   it does not depend on `count`, no version is reloaded for)
   * @param {import('pino').Logger} options.logger
   */
  constructor(root, { control, pollMs, loadOptions, logger }) {
    if (!CONTROLS.includes(control)) throw new TypeError(`control must be one of ${CONTROLS.join(', ')}, got ${control}`);
    this.#root = root;
    this.#control = control;
    this.#pollMs = pollMs;
    this.#loadOptions = loadOptions;
    this.#logger = logger;
    this.catalog.on('dispose', ({ name, version }, error) => {
      if (error) logger.error({ model: name, version, err: error }, `model ${name} version ${version} did not dispose cleanly`);
      else logger.info({ model: name, version }, `model ${name} version ${version} disposed, its requests answered`);
    });
  }

  /** The repository at `dir` (its real path: every path in it is checked against that). */
  static async open(dir, options) {
    return new ModelRepository(await fs.realpath(dir), options);
  }

  get control() {
    return this.#control;
  }

  /**
   * Loads what the control mode loads at start: with `none` and `poll`, every version in the
   * repository (with `none`, the first that fails stops the start: it rejects with E_MODEL_LOAD); with
   * `explicit`, nothing. With `poll`, then polls.
   */
  async start() {
    if (this.#control === 'explicit') return;
    const sync = () => this.#syncAll({ retry: true });
    // With `none`, every version found loads, each on the share of them all, or the start fails: no share changes.
    const failures = await (this.#control === 'none' ? this.#exclusive(sync) : this.#change(sync));
    if (failures.length && this.#control === 'none') throw failures[0];
    if (this.#control === 'poll') this.#schedulePoll();
  }

  /**
   * Loads model `name` as the repository holds it now (explicit control only): its versions added or
   * changed since they were loaded are loaded, each beside the one it replaces, and those removed are
   * unloaded. Rejects with E_MODEL_LOAD when a version does not load (what was served before goes on),
   * E_NOT_FOUND when the repository has no such model.
   */
  async load(name) {
    checkName(name);
    this.#explicitOnly('load');
    return this.#change(async () => {
      const found = await this.#readModel(name);
      if (!found) throw new ChoripanError('E_NOT_FOUND', `the model repository has no model named ${name}`);
      if (!found.size) throw new ChoripanError('E_NOT_FOUND', `model ${name} has no version in the repository: a folder named 1, 2, … holding its artifact`);
      const others = this.catalog.all().filter((served) => served.name !== name).length;
      const failures = await this.#syncModel(name, found, { retry: true, count: others + found.size });
      if (failures.length) throw new ChoripanError('E_MODEL_LOAD', failures.map((error) => error.message).join('; '));
    });
  }

  /**
   * Unloads every version of model `name` (explicit control only): each takes no new request, and is
   * disposed once it has answered those it holds. E_NOT_FOUND when it is neither served nor in the
   * repository; a model in the repository but not loaded is left as it is.
   */
  async unload(name) {
    checkName(name);
    this.#explicitOnly('unload');
    return this.#change(async () => {
      const versions = this.catalog.versions(name);
      if (!versions.length && !(await this.#readModel(name))) {
        throw new ChoripanError('E_NOT_FOUND', `the model repository has no model named ${name}`);
      }
      for (const version of versions) this.#unloadVersion(name, version);
      for (const failed of this.#failed.keys()) if (failed.startsWith(`${name}/`)) this.#failed.delete(failed);
    });
  }

  /**
   * Every version in the repository or served, by name then version, with its state: READY (served),
   * LOADING, or UNAVAILABLE with the reason (unloaded, or why it did not load); with `ready`, only
   * those READY. A model without a version is listed by its name alone.
   * @returns {Promise<Array<{ name: string, version?: string, state: string, reason?: string }>>}
   */
  async index({ ready = false } = {}) {
    const inRepository = await this.#readNames();
    const names = [...new Set([...inRepository, ...this.catalog.names()])].sort();
    const entries = [];
    for (const name of names) {
      const found = inRepository.has(name) ? await this.#readModel(name).catch(() => null) : null;
      if (!found && !this.catalog.versions(name).length) continue; // not a model: a folder that leads outside, or gone
      const versions = [...new Set([...(found?.keys() ?? []), ...this.catalog.versions(name)])].sort((a, b) => a - b);
      if (!versions.length) entries.push({ name, state: 'UNAVAILABLE', reason: 'no version in the repository' });
      for (const version of versions) {
        const failed = this.#failed.get(key(name, version));
        const entry = { name, version: String(version) };
        if (this.#loading.has(key(name, version))) entry.state = 'LOADING';
        else if (this.catalog.find(name, version)) entry.state = 'READY';
        else Object.assign(entry, { state: 'UNAVAILABLE', reason: failed?.reason ?? found?.get(version)?.problem ?? 'unloaded' });
        entries.push(entry);
      }
    }
    return ready ? entries.filter((entry) => entry.state === 'READY') : entries;
  }

  /** The failed loads since start (reloads on a new share of the cores too), by version, for choripan_model_load_failures_total. */
  loadFailures() {
    return this.#failureCounts.values();
  }

  /** Stops polling, waits for the change under way, and unloads every version once it has answered what it holds. */
  async close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#queue;
    await this.catalog.close();
  }

  #explicitOnly(call) {
    if (this.#control !== 'explicit') {
      throw new ChoripanError('E_INVALID_ARGUMENT', `models are not loaded or unloaded on request here: the model control mode is ${this.#control} ` +
        `(${this.#control === 'poll' ? 'the repository is polled' : 'the repository was loaded at start'}); ` +
        `--model-control explicit takes ${call} calls`);
    }
  }

  /** Runs `change` once the change before it is done; the next waits for it in turn. */
  #exclusive(change) {
    this.#waiting++;
    const run = this.#queue.then(() => {
      this.#waiting--;
      return change();
    });
    this.#queue = run.then(() => undefined, () => undefined);
    return run;
  }

  /**
   * A change of what is served (#exclusive), which ends, whether it succeeded or not, with every version
   * served on its share of the cores, unless another change waits: that one will.
   */
  #change(change) {
    return this.#exclusive(async () => {
      try {
        return await change();
      } finally {
        if (!this.#waiting) await this.#rebalance();
      }
    });
  }

  #schedulePoll() {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#change(() => this.#syncAll({ retry: false }))
        .catch((error) => this.#logger.error({ err: error }, `cannot read the model repository ${this.#root}: ${error.message}`))
        .finally(() => this.#schedulePoll());
    }, this.#pollMs);
    this.#timer.unref();
  }

  /**
   * Serves the repository as it is now: every model in it as #syncModel says, and none of those no
   * longer in it. A model whose folder cannot be read now is left as it is. Resolves to the failures.
   * @param {{ retry: boolean }} options `retry`: load again a file that failed before, unchanged
   */
  async #syncAll({ retry }) {
    const inRepository = await this.#readNames(); // a repository that cannot be read changes nothing
    const contents = new Map();
    for (const name of new Set([...inRepository, ...this.catalog.names()])) {
      try {
        contents.set(name, (inRepository.has(name) && (await this.#readModel(name))) || new Map());
      } catch (error) {
        this.#logger.error({ model: name, err: error }, `cannot read model ${name} in the repository; it stays as it is: ${error.message}`);
      }
    }
    const count = [...contents.values()].reduce((sum, found) => sum + found.size, 0);
    const failures = [];
    for (const [name, found] of contents) failures.push(...await this.#syncModel(name, found, { retry, count }));
    return failures;
  }

  /**
   * Serves the versions `found` of model `name`: loads those new or changed (highest first, each beside
   * the one it replaces), then unloads those not found, unless none would be left while some failed:
   * then what was served goes on. Resolves to the failures, E_MODEL_LOAD each.
   * @param {Map<number, { path?: string, signature: string, problem?: string }>} found
   * @param {{ retry: boolean, count: number }} options `count`: the versions this process will serve
   */
  async #syncModel(name, found, { retry, count }) {
    const failed = []; // [version, artifact, why]
    const wanted = [...found].filter(([version, artifact]) => this.catalog.find(name, version)?.source?.signature !== artifact.signature &&
      (retry || this.#failed.get(key(name, version))?.signature !== artifact.signature));
    for (const [version, artifact] of wanted.sort(([a], [b]) => b - a)) {
      const why = await this.#loadVersion(name, version, artifact, Math.max(1, count));
      if (why) failed.push([version, artifact, why]);
    }
    const gone = this.catalog.versions(name).filter((version) => !found.has(version));
    const staying = this.catalog.versions(name).filter((version) => found.has(version));
    if (gone.length && !staying.length && failed.length) {
      const [versions, their, they] = gone.length > 1 ? ['versions', 'their', 'they go'] : ['version', 'its', 'it goes'];
      this.#logger.warn({ model: name, versions: gone }, `model ${name}: ${versions} ${gone.join(', ')} left the repository, ` +
        `but no version loaded in ${their} place: ${they} on serving`);
    } else {
      for (const version of gone) this.#unloadVersion(name, version);
    }
    return failed.map(([version, artifact, why]) => this.#failedLoad(name, version, artifact, why));
  }

  /** Loads one version and serves it once warm; resolves to why it did not load, or undefined. */
  async #loadVersion(name, version, artifact, count) {
    const id = key(name, version);
    const started = performance.now();
    this.#loading.add(id);
    const options = this.#loadOptions(count);
    let model;
    let why = artifact.problem;
    try {
      if (!why) model = await load(artifact.path, options);
    } catch (error) {
      why = error.message;
    } finally {
      this.#loading.delete(id);
    }
    if (why) return why;
    const replaced = this.catalog.find(name, version);
    this.catalog.install(name, version, model, { path: artifact.path, signature: artifact.signature, workers: options.workers });
    this.#failed.delete(id);
    logLoaded(this.#logger, model, { model: name, version, path: artifact.path, ms: Math.round(performance.now() - started) },
      `model ${name} version ${version} ${replaced ? 'reloaded: it takes the new requests' : 'loaded'}`);
    return undefined;
  }

  /** A version that did not load, reported: remembered for the index, counted, logged; its E_MODEL_LOAD. */
  #failedLoad(name, version, artifact, why) {
    const id = key(name, version);
    const serving = this.catalog.versions(name);
    const still = this.catalog.find(name, version) ? `the version ${version} loaded before goes on serving`
      : serving.length ? `${name} goes on serving version${serving.length > 1 ? 's' : ''} ${serving.join(', ')}` : `${name} is not served`;
    const error = new ChoripanError('E_MODEL_LOAD', `model ${name} version ${version} did not load: ${why}; ${still}`);
    this.#failed.set(id, { signature: artifact.signature, reason: why });
    this.#countFailure(name, version);
    this.#logger.error({ model: name, version, path: artifact.path, errorCode: error.code }, error.message);
    return error;
  }

  #countFailure(name, version) {
    const id = key(name, version);
    const counted = this.#failureCounts.get(id) ?? { name, version, count: 0 };
    counted.count++;
    this.#failureCounts.set(id, counted);
  }

  /**
   * Puts every version served on its share of the cores now (loadOptions of their count): those whose
   * share changed, one after the other, by #reshare. Never rejects.
   */
  async #rebalance() {
    const served = this.catalog.all();
    const options = this.#loadOptions(Math.max(1, served.length));
    for (const { name, version, source } of served) {
      if (this.#closed) return;
      if (source.workers !== options.workers) await this.#reshare(name, version, source, options);
    }
  }

  /**
   * Loads a version again from its file with `options` (its new share), beside the one serving, and
   * swaps it in as a changed version is: the one serving answers what it holds, then is disposed. When
   * the file changed since (a load call has yet to ask for it), or the load fails, the one serving goes
   * on and the log says why; a reload that failed is not tried again for the same file and share.
   */
  async #reshare(name, version, source, options) {
    const id = key(name, version);
    const attempt = `${source.signature}:${options.workers}`;
    if (this.#reshareFailed.get(id) === attempt) return;
    const started = performance.now();
    const folder = path.join(this.#root, name, String(version));
    const unchanged = async () => (await this.#readVersion(folder)).signature === source.signature;
    let model;
    let changed = false;
    let failure;
    try {
      changed = !(await unchanged());
      if (!changed) model = await load(source.path, options);
      changed ||= !(await unchanged());
    } catch (error) {
      failure = error;
    }
    if (changed || failure) {
      await model?.dispose().catch((error) => this.#logger.error({ model: name, version, err: error }, `model ${name} version ${version}: its reload did not dispose cleanly`));
      this.#reshareFailed.set(id, attempt);
      if (failure) this.#countFailure(name, version);
      const why = failure?.message ?? 'its file changed since it was loaded, and no load has asked for the new one yet';
      this.#logger[failure ? 'error' : 'warn']({ model: name, version, path: source.path, ...(failure && { errorCode: failure.code ?? 'E_MODEL_LOAD' }) },
        `model ${name} version ${version} was not reloaded on its share of the cores (${shareOf(options.workers)}): ${why}; ` +
        `it goes on serving on ${shareOf(source.workers)}`);
      return;
    }
    this.#reshareFailed.delete(id);
    this.catalog.install(name, version, model, { ...source, workers: options.workers });
    logLoaded(this.#logger, model, { model: name, version, path: source.path, ms: Math.round(performance.now() - started) },
      `model ${name} version ${version} reloaded on its share of the cores (${shareOf(options.workers)}, was ${shareOf(source.workers)}): it takes the new requests`);
  }

  #unloadVersion(name, version) {
    this.#reshareFailed.delete(key(name, version));
    this.catalog.remove(name, version);
    this.#logger.info({ model: name, version }, `model ${name} version ${version} unloaded: it takes no new request`);
  }

  /** The names of the models in the repository: its folders whose names follow the rule. */
  async #readNames() {
    const names = new Set();
    for (const entry of await fs.readdir(this.#root, { withFileTypes: true })) {
      if (entry.name.startsWith('.') || entry.isFile()) continue; // hidden, or a file beside the models
      if (NAME.test(entry.name)) names.add(entry.name);
      else this.#warnOnce(`${entry.name} in the model repository is not a model's name (${vocabulary.modelName.rule}): it is not served`);
    }
    return names;
  }

  /**
   * The versions of model `name` in the repository, each its artifact's real path and signature (what
   * tells a changed file), or the problem that keeps it from loading; null when there is no such model
   * (or it leads outside the repository). Rejects when its folder cannot be read.
   * @returns {Promise<Map<number, { path?: string, signature: string, problem?: string }> | null>}
   */
  async #readModel(name) {
    let folder;
    try {
      folder = await this.#inside(path.join(this.#root, checkName(name)));
      if (!folder) {
        this.#warnOnce(`model ${name} in the repository leads outside it: it is not served`);
        return null;
      }
      const versions = new Map();
      for (const entry of await fs.readdir(folder, { withFileTypes: true })) {
        if (!VERSION.test(entry.name) || entry.isFile()) continue; // a file beside the versions (Triton's config.pbtxt)
        versions.set(Number(entry.name), await this.#readVersion(path.join(folder, entry.name)));
      }
      return versions;
    } catch (error) {
      if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return null;
      throw error;
    }
  }

  /** A version's one artifact, or the problem that keeps it from loading. */
  async #readVersion(folder) {
    const problem = (text) => ({ problem: `its folder ${text}`, signature: `problem: ${text}` });
    try {
      const real = await this.#inside(folder);
      if (!real) return problem('leads outside the repository');
      const artifacts = (await fs.readdir(real)).filter((file) => ARTIFACT.test(file));
      if (artifacts.length !== 1) {
        return problem(artifacts.length ? `holds ${artifacts.length} artifacts (${artifacts.sort().join(', ')}): a version holds one` : 'holds no artifact (.pt2 or .pt)');
      }
      const file = await this.#inside(path.join(real, artifacts[0]));
      if (!file) return problem(`holds ${artifacts[0]}, which leads outside the repository`);
      const stat = await fs.stat(file);
      if (!stat.isFile()) return problem(`holds ${artifacts[0]}, which is not a file`);
      return { path: file, signature: [file, stat.dev, stat.ino, stat.size, stat.mtimeMs, stat.ctimeMs].join(':') };
    } catch (error) {
      return problem(`cannot be read (${error.code ?? error.message})`);
    }
  }

  /** The real path of `file` when it lies inside the repository, symbolic links followed; null when it does not. */
  async #inside(file) {
    const real = await fs.realpath(file);
    return real.startsWith(this.#root.endsWith(path.sep) ? this.#root : `${this.#root}${path.sep}`) ? real : null;
  }

  #warnOnce(message) {
    if (this.#warned.has(message)) return;
    this.#warned.add(message);
    this.#logger.warn(message);
  }
}

module.exports = { ModelRepository, checkName, CONTROLS };
