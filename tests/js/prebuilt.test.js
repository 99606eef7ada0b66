'use strict';
// As a Node developer installs choripan: `npm pack` and `npm run prebuild` here, then a new app installs
// the tarballs with nothing but node, npm and a shell on PATH — no Python, no compiler, no cmake, no make
// — and nothing is built. The app predicts with the prebuilt default model, `npx choripan serve`
// answers, the app still works once moved, and without its platform package it says what to do. The
// install's time and size are printed (docs/benchmark.md). It packs half a gigabyte: it runs in CI
// (.ci/run sets CI) and where CHORIPAN_SLOW_TESTS is set.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');
const { root, env, photoPath, CAT_LABELS, listening } = require('./helpers');

const skip = !process.env.CI && !process.env.CHORIPAN_SLOW_TESTS && 'packs and installs 500 MB: set CHORIPAN_SLOW_TESTS=1 (CI runs it)';

describe('npm install choripan, prebuilt, with only node and npm', { skip }, () => {
  let work;
  let tools;
  let app;
  let userEnv;

  // A process in the app with only node, npm and sh to run: nothing of this machine's toolchain.
  const inApp = (command, args, options = {}) => spawnSync(command, args, { cwd: app, encoding: 'utf8', env: userEnv, timeout: 300_000, ...options });

  function predictIn(folder, file = photoPath('chelsea.png')) {
    const script = `const c = require('choripan');
      c.predict(require('node:fs').readFileSync(${JSON.stringify(file)}))
        .then((r) => console.log(JSON.stringify({ ...r, model: c.DEFAULT_MODEL_PATH })), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))`;
    const run = inApp(path.join(tools, 'node'), ['-e', script], { cwd: folder });
    assert.equal(run.status, 0, run.stderr);
    return JSON.parse(run.stdout);
  }

  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-prebuilt-'));
    const dist = path.join(work, 'dist');
    const built = spawnSync(process.execPath, [path.join(root, 'scripts', 'prebuild.js'), '--out', dist], { cwd: root, encoding: 'utf8' });
    assert.equal(built.status, 0, `${built.stdout}\n${built.stderr}`);
    const packed = spawnSync('npm', ['pack', '--json', '--pack-destination', dist], { cwd: root, encoding: 'utf8' });
    assert.equal(packed.status, 0, packed.stderr);
    tools = path.join(work, 'bin');
    fs.mkdirSync(tools);
    const npm = path.dirname(fs.realpathSync(spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim()));
    for (const [name, target] of [['node', process.execPath], ['npm', path.join(npm, 'npm-cli.js')], ['npx', path.join(npm, 'npx-cli.js')], ['sh', '/bin/sh']]) {
      fs.symlinkSync(target, path.join(tools, name));
    }
    userEnv = { PATH: tools, HOME: path.join(work, 'home'), TMPDIR: work };
    app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'an-app', version: '1.0.0', private: true }));
  });

  after(() => fs.rmSync(work, { recursive: true, force: true }));

  test('installs the tarballs, building nothing, within 600 MB', { timeout: 600_000 }, () => {
    const tarballs = fs.readdirSync(path.join(work, 'dist')).filter((file) => file.endsWith('.tgz')).map((file) => path.join(work, 'dist', file));
    assert.equal(tarballs.length, 3, tarballs.join());
    for (const tool of ['python3', 'python', 'cc', 'gcc', 'g++', 'cmake', 'make']) {
      assert.notEqual(inApp(path.join(tools, 'sh'), ['-c', `command -v ${tool}`]).status, 0, `${tool} is within reach`);
    }
    const started = performance.now();
    const install = inApp(path.join(tools, 'npm'), ['install', '--no-audit', '--no-fund', '--foreground-scripts', ...tarballs]);
    const seconds = (performance.now() - started) / 1000;
    assert.equal(install.status, 0, `${install.stdout}\n${install.stderr}`);
    assert.match(install.stdout, /using the prebuilt addon from @choripan\/linux-x64-gnu: nothing to build/);
    const installed = path.join(app, 'node_modules');
    for (const built of [path.join(installed, 'choripan', 'build'), path.join(installed, 'choripan', '.venv'), path.join(installed, 'choripan', 'models')]) {
      assert.ok(!fs.existsSync(built), `${built} exists: something was built`);
    }
    const megabytes = Number(spawnSync('du', ['-sm', installed], { encoding: 'utf8' }).stdout.split('\t')[0]);
    console.log(`prebuilt install: ${seconds.toFixed(1)} s, node_modules ${megabytes} MB`);
    assert.ok(megabytes <= 600, `node_modules is ${megabytes} MB`);
    // libtorch_cpu's symbol tables alone are 87 MB, which only linkers and debuggers read.
    const libraries = fs.readdirSync(installed, { recursive: true }).filter((file) => /\.so(\.\d+)*$/.test(file));
    assert.ok(libraries.some((file) => file.endsWith('libtorch_cpu.so')), libraries.join());
    for (const file of libraries) {
      const sections = spawnSync('readelf', ['-S', '-W', path.join(installed, file)], { encoding: 'utf8' });
      assert.equal(sections.status, 0, sections.stderr);
      assert.doesNotMatch(sections.stdout, /\s\.symtab\s/, `${file} carries its symbol table`);
    }
  });

  test('predicts with the prebuilt default model: the .pt2 where the CPU runs it, else the .pt', { timeout: 120_000 }, () => {
    const answer = predictIn(app);
    assert.ok(CAT_LABELS.includes(answer.label), JSON.stringify(answer));
    const models = path.join(app, 'node_modules', '@choripan', 'linux-x64-gnu', 'models');
    const { models: listed } = JSON.parse(fs.readFileSync(path.join(models, 'default.json'), 'utf8'));
    assert.deepEqual(listed.map((m) => [m.file, m.cpuIsa, m.cpuTarget]), [['default.pt2', 'AVX2', 'x86-64-v3'], ['default.pt', undefined, undefined]]);
    const avx2 = /\bavx2\b/.test(fs.readFileSync('/proc/cpuinfo', 'utf8')) && /\bfma\b/.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    assert.equal(answer.model, path.join(models, avx2 ? 'default.pt2' : 'default.pt'));
    // A CPU without what the package was compiled for gets the TorchScript twin.
    const original = fs.readFileSync(path.join(models, 'default.json'));
    try {
      // An instruction set no CPU runs, as far as this choripan knows (it refuses words it does not know):
      // AMX_TILE, tried before, is what this machine kind's Xeons have.
      fs.writeFileSync(path.join(models, 'default.json'), JSON.stringify({ models: [{ ...listed[0], cpuIsa: 'AVX2 NOT_AN_ISA' }, listed[1]] }));
      const fallback = predictIn(app);
      assert.equal(fallback.model, path.join(models, 'default.pt'));
      assert.deepEqual(fallback.top.map((t) => t.label), answer.top.map((t) => t.label));
    } finally {
      fs.writeFileSync(path.join(models, 'default.json'), original);
    }
  });

  test('npx choripan serve answers POST /predict', { timeout: 120_000 }, async () => {
    // npx does not pass SIGTERM on to the server: the whole process group is stopped.
    const server = spawn(path.join(tools, 'npx'), ['choripan', 'serve', '--port', '0'], { cwd: app, env: userEnv, detached: true });
    try {
      const port = await listening(server);
      const response = await fetch(`http://127.0.0.1:${port}/predict`, { method: 'POST', body: fs.readFileSync(photoPath('coffee.png')),
        headers: { 'content-type': 'image/png' } });
      assert.equal(response.status, 200);
      assert.equal((await response.json()).label, 'espresso');
    } finally {
      const exited = new Promise((resolve) => server.on('exit', resolve));
      process.kill(-server.pid, 'SIGTERM');
      await exited;
    }
  });

  test('the app moved elsewhere still predicts', { timeout: 120_000 }, () => {
    const before = predictIn(app);
    const moved = path.join(work, 'elsewhere', 'the-app');
    fs.mkdirSync(path.dirname(moved));
    fs.renameSync(app, moved);
    app = moved;
    const after = predictIn(moved);
    assert.deepEqual(after.top, before.top);
  });

  // The export side as a Python user installs it: the wheel, into a new virtual environment that pip fills
  // from the registry (torch included); a torchvision model exported with it, served by the app above.
  test('pip installs the wheel into a new venv; what it exports, the Python-free app serves', { timeout: 1_800_000 }, () => {
    const wheels = path.join(work, 'wheels');
    const built = spawnSync(env.python, ['-m', 'pip', 'wheel', '--no-deps', '--quiet', '-w', wheels, root], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    const [wheel] = fs.readdirSync(wheels);
    assert.match(wheel, /^choripan-[\d.]+-py3-none-any\.whl$/);
    const venv = path.join(work, 'venv');
    const made = spawnSync('python3', ['-m', 'venv', venv], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const pip = spawnSync(path.join(venv, 'bin', 'pip'), ['install', '--quiet', '--disable-pip-version-check', path.join(wheels, wheel)],
      { encoding: 'utf8', timeout: 1_200_000 });
    assert.equal(pip.status, 0, pip.stderr);
    // Run away from the checkout, so that only the installed package can answer.
    const outside = { cwd: work, encoding: 'utf8', timeout: 600_000, env: { PATH: process.env.PATH, HOME: path.join(work, 'home') } };
    const weights = path.join(work, 'resnet18.pth');
    const saved = spawnSync(path.join(venv, 'bin', 'python'), ['-c',
      `import torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), ${JSON.stringify(weights)})`], outside);
    assert.equal(saved.status, 0, saved.stderr);
    const model = path.join(work, 'resnet18.pt');
    const exported = spawnSync(path.join(venv, 'bin', 'choripan-export'), ['torchvision', '--arch', 'resnet18', '--weights', weights,
      '--labels', 'Choripan,Not Choripan,Chimichurri', '--out', model], outside);
    assert.equal(exported.status, 0, exported.stderr);
    const where = spawnSync(path.join(venv, 'bin', 'python'), ['-c', 'import choripan; print(choripan.__file__)'], outside);
    assert.ok(where.stdout.startsWith(venv), `choripan was imported from ${where.stdout}`);

    const served = inApp(path.join(tools, 'npx'), ['choripan', 'predict', '--model', model, '--json', photoPath('chelsea.png')]);
    assert.equal(served.status, 0, served.stderr);
    const answer = JSON.parse(served.stdout);
    assert.ok(['Choripan', 'Not Choripan', 'Chimichurri'].includes(answer.label), served.stdout);
    const reference = spawnSync(path.join(venv, 'bin', 'python'), ['-m', 'choripan', 'predict', '--model', model, '--json', photoPath('chelsea.png')], outside);
    assert.equal(reference.status, 0, reference.stderr);
    assert.equal(JSON.parse(reference.stdout).label, answer.label);
  });

  test('without its platform package the app says what to do', () => {
    fs.rmSync(path.join(app, 'node_modules', '@choripan', 'linux-x64-gnu'), { recursive: true });
    const missing = predictIn(app);
    assert.equal(missing.code, 'E_ADDON');
    assert.match(missing.message, /not available on linux-x64-gnu \(Node v[\d.]+\): the prebuilt package @choripan\/linux-x64-gnu is not installed/);
    assert.match(missing.message, /npm install choripan --build-from-source/);
  });
});
