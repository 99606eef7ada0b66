'use strict';
// Every code block in the README and in docs/ runs as written, from a new app that depends on choripan
// (and express and pino), as a reader copying it would: ```js as a CommonJS file with node, ```python with
// choripan's interpreter, ```sh with bash (PY, which blocks default to a .venv of the reader's, set to an
// interpreter that has the choripan Python package). ```text blocks are output, not code. ```sh ci blocks are the
// README's two commands, which .ci/run itself runs on a clean clone. The blocks of one page share one
// app folder and run in order, so that a page can build on what it made before.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');
const { root, env, CAT_LABELS } = require('./helpers');

const pages = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const RUNNERS = {
  js: (file) => [process.execPath, [file]],
  python: (file) => [env.python, [file]],
  sh: (file) => ['bash', ['-euo', 'pipefail', file]],
};
const EXTENSIONS = { js: '.cjs', python: '.py', sh: '.sh' };

function blocks(text) {
  const found = [];
  const fence = /^```(\S*)([^\n]*)\n([\s\S]*?)^```$/gm;
  for (let match; (match = fence.exec(text));) {
    found.push({ language: match[1], flags: match[2].trim(), code: match[3], line: text.slice(0, match.index).split('\n').length });
  }
  return found;
}

function newApp() {
  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-docs-'));
  const modules = path.join(app, 'node_modules');
  fs.mkdirSync(path.join(modules, '.bin'), { recursive: true });
  fs.symlinkSync(root, path.join(modules, 'choripan'));
  for (const dependency of ['express', 'pino']) fs.symlinkSync(path.join(root, 'node_modules', dependency), path.join(modules, dependency));
  fs.symlinkSync(path.join('..', 'choripan', 'bin', 'choripan.js'), path.join(modules, '.bin', 'choripan'));
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, dependencies: { choripan: '*' } }));
  fs.copyFileSync(path.join(root, 'examples', 'cat.jpg'), path.join(app, 'cat.jpg'));
  return app;
}

test('every block names its language, and only languages this test runs or shows', () => {
  for (const page of pages) {
    for (const block of blocks(fs.readFileSync(path.join(root, page), 'utf8'))) {
      assert.ok(['js', 'python', 'sh', 'text'].includes(block.language), `${page}:${block.line}: \`\`\`${block.language}`);
    }
  }
});

// That it is in the published package: setup.test.js.
test('the photo the examples read is a cat to the default model', () => {
  const run = spawnSync(process.execPath, ['-e', "require('choripan').predict(require('fs').readFileSync('examples/cat.jpg'))" +
    '.then((answer) => console.log(JSON.stringify(answer)))'], { cwd: root, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const { label } = JSON.parse(run.stdout);
  assert.ok(CAT_LABELS.includes(label), label);
});

for (const page of pages) {
  const runnable = blocks(fs.readFileSync(path.join(root, page), 'utf8'))
    .filter((b) => b.language in RUNNERS && b.flags !== 'ci');
  if (!runnable.length) continue;
  describe(page, () => {
    let app;
    before(() => {
      app = newApp();
    });
    after(() => fs.rmSync(app, { recursive: true, force: true }));
    for (const [index, block] of runnable.entries()) {
      test(`block ${index + 1} (${block.language}, line ${block.line}) runs`, () => {
        const file = path.join(app, `block-${index + 1}${EXTENSIONS[block.language]}`);
        fs.writeFileSync(file, block.code);
        const [command, args] = RUNNERS[block.language](file);
        // Output to files, in a process group of its own: whatever a block leaves running is stopped after it.
        const output = path.join(app, `block-${index + 1}.log`);
        const fd = fs.openSync(output, 'w');
        const run = spawnSync(command, args, { cwd: app, stdio: ['ignore', fd, fd], detached: true, timeout: 600_000,
          env: { ...process.env, PY: env.python } });
        fs.closeSync(fd);
        try {
          process.kill(-run.pid, 'SIGKILL');
        } catch {
          // nothing was left running
        }
        assert.equal(run.status, 0, `${page}:${block.line}\n${block.code}\n--- output\n${fs.readFileSync(output, 'utf8')}`);
      });
    }
  });
}
