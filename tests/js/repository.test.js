'use strict';
// A model repository (js/server/repository.js) from Node: what is served while versions come and go,
// each model's share of the cores, the configuration that names a repository, and the repository calls
// of a server started without one. Triton's client drives a served repository in
// tests/python/test_repository.py.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const { spawnSync } = require('node:child_process');
const { test, describe, before, after } = require('node:test');
const pino = require('pino');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { ModelRepository } = require('../../js/server/repository');
const { loadOptionsFor } = require('../../js/server/main');
const { isRepository, REPOSITORY_PATHS } = require('../../js/server/paths');
const { root, photo, defaultModelPath, defaultPackagePath } = require('./helpers');

const ADMIN_KEY = 'repository-test-admin-key';
const ADMIN = { authorization: `Bearer ${ADMIN_KEY}` };

/** A repository folder from `layout`: { 'name/version': artifact path to copy }. */
function repositoryOf(layout) {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-repository-'));
  for (const [where, artifact] of Object.entries(layout)) {
    fs.mkdirSync(path.join(folder, where), { recursive: true });
    fs.copyFileSync(artifact, path.join(folder, where, path.basename(artifact)));
  }
  return folder;
}

/**
 * A repository over `folder`, its log lines collected, the counts its load options were asked for
 * recorded; by default, one worker whatever the count.
 */
async function open(folder, control, { pollMs = 100, loadOptions = () => ({ workers: 1, warmup: false }) } = {}) {
  const lines = [];
  const counts = [];
  const logger = pino({ level: 'info' }, { write: (line) => lines.push(JSON.parse(line)) });
  const repository = await ModelRepository.open(folder, { control, pollMs, logger,
    loadOptions: (count) => {
      counts.push(count);
      return loadOptions(count);
    } });
  return { repository, lines, counts };
}

const until = async (condition, ms = 15_000) => {
  for (const deadline = Date.now() + ms; !condition(); await new Promise((resolve) => setTimeout(resolve, 20))) {
    assert.ok(Date.now() < deadline, 'not within the time');
  }
};

describe('a version replaced while requests hold it', () => {
  let folder;
  before(() => {
    folder = repositoryOf({ 'cat/1': defaultModelPath });
  });
  after(() => fs.rmSync(folder, { recursive: true, force: true }));

  test('takes no new request, and is disposed once the last it holds is answered', async () => {
    const { repository, lines } = await open(folder, 'explicit');
    await repository.load('cat');
    const { catalog } = repository;
    const first = catalog.find('cat');
    const release = catalog.acquire(first);
    const answer = first.model.predict(photo('chelsea.png'));

    // The same version, changed: a file written beside, renamed over the one loaded.
    fs.copyFileSync(defaultPackagePath, path.join(folder, 'cat', '1', 'model.pt2'));
    fs.rmSync(path.join(folder, 'cat', '1', 'default.pt'));
    await repository.load('cat');
    const second = catalog.find('cat');
    assert.notEqual(second, first);
    assert.equal(second.model.path, path.join(fs.realpathSync(folder), 'cat', '1', 'model.pt2'));
    assert.equal(first.model.disposed, false, 'held by a request: not disposed');
    assert.ok((await answer).label);
    release();
    assert.equal(first.model.disposed, true);
    await until(() => lines.some((line) => line.msg === 'model cat version 1 disposed, its requests answered'));
    await repository.close();
    assert.equal(second.model.disposed, true);
  });
});

describe('a version that does not load', () => {
  test('in place of versions that left the repository: they go on serving until one loads', async () => {
    const folder = repositoryOf({ 'cat/1': defaultModelPath });
    const { repository, lines } = await open(folder, 'explicit');
    try {
      await repository.load('cat');
      fs.rmSync(path.join(folder, 'cat', '1'), { recursive: true });
      fs.mkdirSync(path.join(folder, 'cat', '2'));
      fs.writeFileSync(path.join(folder, 'cat', '2', 'model.pt'), 'not a model');
      await assert.rejects(repository.load('cat'), { code: 'E_MODEL_LOAD', message: /^model cat version 2 did not load: .*; cat goes on serving version 1$/ });
      assert.deepEqual(repository.catalog.versions('cat'), [1]);
      assert.ok(lines.some((line) => line.msg === 'model cat: version 1 left the repository, but no version loaded in its place: it goes on serving'));
      fs.copyFileSync(defaultModelPath, path.join(folder, 'cat', '2', 'model.pt'));
      await repository.load('cat');
      assert.deepEqual(repository.catalog.versions('cat'), [2]);
      assert.deepEqual([...repository.loadFailures()], [{ name: 'cat', version: 2, count: 1 }]);
    } finally {
      await repository.close();
      fs.rmSync(folder, { recursive: true, force: true });
    }
  });
});

describe('the cores', () => {
  const cores = choripan.availableCores();
  const skip = cores < 2 && 'one core: every share is one worker, and nothing is reloaded';
  /**
   * The server's own load options (CHORIPAN_WORKERS unset): alone, every core as its format runs them
   * (TorchScript here: one worker on all), else its share of workers, a thread each.
   */
  const shared = (count) => loadOptionsFor({ load: { warmup: true } }, count);
  const half = Math.floor(cores / 2);
  let folder;
  before(() => {
    folder = repositoryOf({ 'a/1': defaultModelPath, 'b/1': defaultModelPath });
  });
  after(() => fs.rmSync(folder, { recursive: true, force: true }));

  test('every load and unload ends with each version on its share, and under constant load every request is answered', { skip }, async () => {
    const { repository, lines } = await open(folder, 'explicit', { loadOptions: shared });
    const server = http.createServer(createApp({ repository, logger: pino({ level: 'silent' }), apiKeys: [{ key: ADMIN_KEY, scope: 'admin' }] }));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${server.address().port}`;
    const call = async (what) => assert.equal((await fetch(`${base}/v2/repository/models/${what}`, { method: 'POST', headers: ADMIN })).status, 200);
    const schedule = (name) => {
      const { workers, intraOpThreads } = repository.catalog.find(name).model.stats();
      return [workers, intraOpThreads];
    };
    const statuses = [];
    let loading = true;
    const client = async () => {
      const body = photo('chelsea.png');
      while (loading) {
        const answer = await fetch(`${base}/predict?model=a`, { method: 'POST', body, headers: { ...ADMIN, 'Content-Type': 'image/png' } });
        statuses.push(answer.status);
        await answer.arrayBuffer();
      }
    };
    try {
      await call('a/load');
      assert.deepEqual(schedule('a'), [1, cores], 'alone: every core');
      const clients = [client(), client()];
      await until(() => statuses.length > 5);
      const alone = repository.catalog.find('a');
      await call('b/load');
      assert.deepEqual([schedule('a'), schedule('b')], [[half, 1], [half, 1]], 'two: half each');
      assert.notEqual(repository.catalog.find('a'), alone, 'a, reloaded on its share');
      const before = statuses.length;
      await call('b/unload');
      assert.deepEqual(schedule('a'), [1, cores], 'alone again: every core');
      await until(() => statuses.length > before + 5);
      loading = false;
      await Promise.all(clients);
      assert.deepEqual(statuses.filter((status) => status !== 200), []);
      const reloads = lines.filter((line) => line.msg.startsWith('model a version 1 reloaded on its share of the cores'));
      assert.deepEqual(reloads.map((line) => [line.workers, line.intraOpThreads]), [[half, 1], [1, cores]]);
    } finally {
      loading = false;
      server.close();
      await repository.close();
    }
  });

  test('loads and unloads called together end with each version on its share, reloaded once, by the last', { skip }, async () => {
    const { repository, lines } = await open(folder, 'explicit', { loadOptions: (count) => loadOptionsFor({ load: { warmup: false } }, count) });
    try {
      await Promise.all([repository.load('a'), repository.load('b'), repository.unload('b'), repository.load('b')]);
      assert.deepEqual(repository.catalog.all().map(({ name, model }) => [name, model.stats().workers]), [['a', half], ['b', half]]);
      assert.deepEqual(lines.filter((line) => line.msg.includes('reloaded on its share')).map((line) => [line.model, line.workers]), [['a', half]]);
    } finally {
      await repository.close();
    }
  });

  test('with the workers fixed (CHORIPAN_WORKERS), nothing is reloaded', async () => {
    const { repository } = await open(folder, 'explicit', { loadOptions: (count) => loadOptionsFor({ load: { workers: 1, warmup: false } }, count) });
    try {
      await repository.load('a');
      const served = repository.catalog.find('a');
      await repository.load('b');
      await repository.unload('b');
      assert.equal(repository.catalog.find('a'), served);
      assert.equal(served.model.stats().workers, 1);
    } finally {
      await repository.close();
    }
  });

  test('a version whose file changed since it loaded is not reloaded on its share until a load asks for the new file', async () => {
    const changing = repositoryOf({ 'a/1': defaultModelPath, 'a/2': defaultModelPath, 'b/1': defaultModelPath });
    const { repository, lines } = await open(changing, 'explicit', { loadOptions: (count) => ({ warmup: false, workers: count }) });
    try {
      await repository.load('a');
      const [a1, a2] = [repository.catalog.find('a', 1), repository.catalog.find('a', 2)];
      assert.deepEqual([a1.model.stats().workers, a2.model.stats().workers], [2, 2]);
      fs.copyFileSync(defaultModelPath, path.join(changing, 'a', '2', 'incoming.tmp'));
      fs.renameSync(path.join(changing, 'a', '2', 'incoming.tmp'), path.join(changing, 'a', '2', 'default.pt'));
      await repository.load('b');
      assert.equal(repository.catalog.find('a', 2), a2, 'changed: as it was');
      assert.equal(repository.catalog.find('a', 1).model.stats().workers, 3, 'unchanged: on its share');
      assert.ok(lines.some((line) => line.level === 40 && line.msg === 'model a version 2 was not reloaded on its share of the cores (3 workers): ' +
        'its file changed since it was loaded, and no load has asked for the new one yet; it goes on serving on 2 workers'));
      await repository.load('a');
      assert.equal(repository.catalog.find('a', 2).model.stats().workers, 3, 'loaded from its new file, on its share');
    } finally {
      await repository.close();
      fs.rmSync(changing, { recursive: true, force: true });
    }
  });

  test('a reload that fails leaves the version serving as it was, logged once, not tried again at every poll', async () => {
    const polled = repositoryOf({ 'a/1': defaultModelPath, 'b/1': defaultModelPath });
    // Alone, a version would get more workers than the core takes (it refuses 65): its reload fails.
    const { repository, lines } = await open(polled, 'poll', { loadOptions: (count) => ({ warmup: false, workers: count === 1 ? 65 : count }) });
    try {
      await repository.start();
      const served = repository.catalog.find('a');
      fs.rmSync(path.join(polled, 'b'), { recursive: true });
      await until(() => lines.some((line) => line.level === 50 && line.model === 'a'));
      await new Promise((resolve) => setTimeout(resolve, 800)); // polls every 100 ms meanwhile
      const failed = lines.filter((line) => line.level === 50);
      assert.deepEqual(failed.map(({ msg, errorCode }) => [msg.slice(0, msg.indexOf(':')), errorCode]),
        [['model a version 1 was not reloaded on its share of the cores (65 workers)', 'E_INVALID_ARGUMENT']]);
      assert.deepEqual([...repository.loadFailures()], [{ name: 'a', version: 1, count: 1 }]);
      assert.equal(repository.catalog.find('a'), served);
      assert.ok((await served.model.predict(photo('chelsea.png'))).label);
    } finally {
      await repository.close();
      fs.rmSync(polled, { recursive: true, force: true });
    }
  });

  test('a poll that unloads a model puts the others on the larger share', { skip }, async () => {
    const polled = repositoryOf({ 'a/1': defaultModelPath, 'b/1': defaultModelPath });
    const { repository } = await open(polled, 'poll', { loadOptions: (count) => loadOptionsFor({ load: { warmup: false } }, count) });
    try {
      await repository.start();
      const schedule = () => {
        const { workers, intraOpThreads } = repository.catalog.find('a').model.stats();
        return [workers, intraOpThreads];
      };
      assert.deepEqual(schedule(), [Math.floor(cores / 2), 1]);
      fs.rmSync(path.join(polled, 'b'), { recursive: true });
      await until(() => schedule()[1] === cores); // TorchScript alone: one worker on every core
      assert.deepEqual(repository.catalog.names(), ['a']);
    } finally {
      await repository.close();
      fs.rmSync(polled, { recursive: true, force: true });
    }
  });

  test('none loads the whole repository at start, each version with the share of all', async () => {
    const folder = repositoryOf({ 'a/1': defaultModelPath, 'a/2': defaultModelPath, 'b/1': defaultModelPath });
    const { repository, counts } = await open(folder, 'none');
    try {
      await repository.start();
      assert.deepEqual(counts, [3, 3, 3]);
      assert.deepEqual(repository.catalog.all().map(({ name, version }) => `${name}/${version}`), ['a/1', 'a/2', 'b/1']);
      await assert.rejects(repository.load('a'), { code: 'E_INVALID_ARGUMENT', message: /the model control mode is none/ });
    } finally {
      await repository.close();
      fs.rmSync(folder, { recursive: true, force: true });
    }
  });
});

describe('polling', () => {
  test('a repository that cannot be read, for a while, leaves what is served as it was', async () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-repository-'));
    const folder = path.join(parent, 'models');
    fs.renameSync(repositoryOf({ 'cat/1': defaultModelPath }), folder);
    const { repository, lines } = await open(folder, 'poll');
    try {
      await repository.start();
      assert.deepEqual(repository.catalog.versions('cat'), [1]);
      fs.renameSync(folder, `${folder}.away`);
      await until(() => lines.some((line) => line.level === 50 && line.msg.startsWith(`cannot read the model repository ${folder}`)));
      assert.deepEqual(repository.catalog.versions('cat'), [1]);
      fs.renameSync(`${folder}.away`, folder);
      fs.rmSync(path.join(folder, 'cat', '1'), { recursive: true });
      await until(() => repository.catalog.versions('cat').length === 0);
    } finally {
      await repository.close();
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });
});

describe('the repository calls of a server started with its models', () => {
  let model;
  let server;
  let base;
  before(async () => {
    model = await choripan.load(defaultPackagePath, { workers: 1, warmup: false });
    // Repository calls need an admin key (docs/service.md#api-keys).
    server = http.createServer(createApp({ models: new Map([['lite0', model]]), logger: pino({ level: 'silent' }),
      apiKeys: [{ key: ADMIN_KEY, scope: 'admin' }] }));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${server.address().port}`;
  });
  after(async () => {
    server.close();
    await model.dispose();
  });

  test('the index lists the models served, each version 1; loads and unloads are refused, their code first', async () => {
    const index = await fetch(`${base}/v2/repository/index`, { method: 'POST', headers: ADMIN });
    assert.deepEqual(await index.json(), [{ name: 'lite0', version: '1', state: 'READY' }]);
    for (const call of ['load', 'unload']) {
      const refused = await fetch(`${base}/v2/repository/models/lite0/${call}`, { method: 'POST', body: '{}', headers: ADMIN });
      assert.equal(refused.status, 400);
      assert.match((await refused.json()).error, /^E_INVALID_ARGUMENT: this server serves the models it was started with/);
    }
    const malformed = await fetch(`${base}/v2/repository/index`, { method: 'POST', body: '{"ready": "yes"}', headers: ADMIN });
    assert.deepEqual([malformed.status, await malformed.json()], [400, { error: 'E_INVALID_ARGUMENT: "ready" must be true or false' }]);
  });

  test('isRepository() knows every path Express routes to a repository call, whatever its case', async () => {
    for (const route of ['/V2/Repository/Index', '/v2/repository/index/', '/v2/REPOSITORY/models/lite0/LOAD']) {
      assert.ok(isRepository(route), route);
      const answer = await fetch(`${base}${route}`, { method: 'POST', headers: ADMIN });
      assert.notEqual(answer.status, 404, `${route} is a repository call to Express`);
    }
    for (const route of ['/v2/repositoryx', '/v2/models/lite0/infer', '/repository/index']) assert.ok(!isRepository(route), route);
    assert.ok(Object.values(REPOSITORY_PATHS).every(isRepository));
  });
});

describe('the configuration of a repository', () => {
  const bin = path.join(root, 'bin', 'choripan.js');
  const serve = (args, env = {}) => spawnSync(process.execPath, [bin, 'serve', '--port', '0', ...args],
    { encoding: 'utf8', env: { ...process.env, CHORIPAN_MODELS: '', CHORIPAN_MODEL: '', ...env }, timeout: 60_000 });

  test('a bad repository or control mode, or a repository with models, stops start-up with one line (exit status 2)', () => {
    const file = defaultModelPath;
    for (const [args, env, line] of [
      [['--model-repository', '/no/such/folder'], {}, "choripan: --model-repository: cannot read /no/such/folder: no such folder; see `choripan serve --help`"],
      [['--model-repository', file], {}, `choripan: --model-repository: cannot read ${file}: not a folder; see \`choripan serve --help\``],
      [['--model-repository', os.tmpdir(), '--model-control', 'sometimes'], {},
        "choripan: --model-control: expected one of none, poll, explicit, got 'sometimes'; see `choripan serve --help`"],
      [['--model-repository', os.tmpdir(), '--model', file], {},
        'choripan: --model and --model-repository: serve models or a repository, not both; see `choripan serve --help`'],
      [['--model-control', 'poll'], {}, 'choripan: --model-control: poll needs a model repository (--model-repository or CHORIPAN_MODEL_REPOSITORY)'],
      [[], { CHORIPAN_MODEL_CONTROL: 'explicit' },
        'choripan: CHORIPAN_MODEL_CONTROL: explicit needs a model repository (--model-repository or CHORIPAN_MODEL_REPOSITORY)'],
      [[], { CHORIPAN_MODEL_REPOSITORY: os.tmpdir(), CHORIPAN_MODEL: file },
        'choripan: CHORIPAN_MODEL_REPOSITORY: serve a repository or CHORIPAN_MODEL, not both: unset one'],
      [[], { CHORIPAN_REPOSITORY_POLL_MS: '5' }, "choripan: CHORIPAN_REPOSITORY_POLL_MS: expected an integer from 100 to 86400000, got '5'"],
    ]) {
      const run = serve(args, env);
      assert.deepEqual([run.status, run.stderr], [2, `${line}\n`], `${args.join(' ')} ${JSON.stringify(env)}`);
    }
  });
});
