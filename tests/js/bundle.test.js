'use strict';
// `npm run bundle` (the Dockerfile's builder step): unpacked elsewhere and run with no Python within
// reach, it serves the right label for a real photo, every library it maps comes from the bundle or the
// base system, and it weighs at most 600 MB.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { test } = require('node:test');
const { root, photo, CAT_LABELS, listening } = require('./helpers');

test('the bundle serves without Python, maps nothing from .venv, and weighs at most 600 MB', { timeout: 600_000 }, async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-bundle-'));
  let server;
  try {
    const built = spawnSync(process.execPath, [path.join(root, 'scripts', 'bundle.js'), '--out', path.join(work, 'dist')],
      { cwd: root, encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    const unpackedMb = Number(built.stdout.match(/: (\d+) MB unpacked/)[1]);
    assert.ok(unpackedMb <= 600, `${unpackedMb} MB`);

    const elsewhere = path.join(work, 'elsewhere');
    fs.mkdirSync(elsewhere);
    spawnSync('tar', ['-xzf', path.join(work, 'dist', 'choripan.tar.gz'), '-C', elsewhere]);
    fs.rmSync(path.join(work, 'dist'), { recursive: true });
    // Only node on PATH, nothing inherited: no python3, no LD_LIBRARY_PATH, no way back to .venv.
    server = spawn(path.join(elsewhere, 'choripan', 'serve'), ['--port', '0'], {
      env: { PATH: path.dirname(process.execPath), HOME: work, TMPDIR: work },
    });
    const port = await listening(server);
    const answer = await fetch(`http://127.0.0.1:${port}/predict`, { method: 'POST', body: photo('chelsea.png'),
      headers: { 'content-type': 'image/png' } }).then((r) => r.json());
    assert.ok(CAT_LABELS.includes(answer.label), JSON.stringify(answer));
    // A JPEG the core decodes, with the bundle's libjpeg: slim base images have none.
    const jpeg = await require('sharp')(photo('chelsea.png')).jpeg({ quality: 90 }).toBuffer();
    const jpegAnswer = await fetch(`http://127.0.0.1:${port}/predict`, { method: 'POST', body: jpeg,
      headers: { 'content-type': 'image/jpeg' } }).then((r) => r.json());
    assert.ok(CAT_LABELS.includes(jpegAnswer.label), JSON.stringify(jpegAnswer));

    const node = fs.readdirSync('/proc').filter((pid) => /^\d+$/.test(pid))
      .find((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(path.join(elsewhere, 'choripan', 'app')));
    const libraries = [...new Set(fs.readFileSync(`/proc/${node}/maps`, 'utf8').split('\n')
      .map((line) => line.split(/\s+/)[5]).filter((file) => /\.so(\.|$)/.test(file ?? '')))];
    const foreign = libraries.filter((file) => !file.startsWith(elsewhere) && !file.startsWith(work) &&
      !/^(\/usr)?\/lib(64)?\//.test(file));
    assert.deepEqual(foreign, [], 'libraries from outside the bundle and the base system');
    assert.ok(libraries.some((file) => file === path.join(elsewhere, 'choripan', 'lib', 'libtorch_cpu.so')));
    assert.ok(libraries.some((file) => file.startsWith(path.join(elsewhere, 'choripan', 'lib', 'libjpeg.so.'))), libraries.join('\n'));
    assert.ok(!libraries.some((file) => file.includes('.venv') || file.startsWith(root)));
  } finally {
    server?.kill('SIGTERM');
    await new Promise((resolve) => (server ? server.on('exit', resolve) : resolve()));
    fs.rmSync(work, { recursive: true, force: true });
  }
});
