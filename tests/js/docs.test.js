'use strict';
// Every code block in the README and in docs/ runs as written, where its first line says (`# in your app`,
// `# in a checkout`; a block that says nothing runs in an app), as a reader copying it would: ```js as a
// CommonJS file with node, ```python with choripan's interpreter, ```sh with bash (PY, which blocks default
// to a .venv of the reader's, set to an interpreter that has the choripan Python package). An app is a new
// folder that depends on choripan (and express and pino); a checkout, a folder of links to this one's
// entries (what a block writes at its top stays there). ```text blocks are output, or commands no test here
// can run. ```sh ci blocks are the README's two commands, which .ci/run itself runs on a clean clone. The
// blocks of one page share one app folder and one checkout folder and run in order, so that a page can
// build on what it made before. The README's own blocks copy the photo it ships into the app; the other
// pages assume the reader did.

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
const PLACE = /^(?:#|\/\/) in (your app|a checkout)\b/;

function blocks(text) {
  const found = [];
  const fence = /^```(\S*)([^\n]*)\n([\s\S]*?)^```$/gm;
  for (let match; (match = fence.exec(text));) {
    found.push({ language: match[1], flags: match[2].trim(), code: match[3], line: text.slice(0, match.index).split('\n').length });
  }
  return found;
}

/** Where a block runs: 'your app' or 'a checkout', as its first line says; null when it says neither. */
function place(block) {
  return block.code.match(PLACE)?.[1] ?? null;
}

function newApp(page) {
  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-docs-'));
  const modules = path.join(app, 'node_modules');
  fs.mkdirSync(path.join(modules, '.bin'), { recursive: true });
  fs.symlinkSync(root, path.join(modules, 'choripan'));
  for (const dependency of ['express', 'pino']) fs.symlinkSync(path.join(root, 'node_modules', dependency), path.join(modules, dependency));
  fs.symlinkSync(path.join('..', 'choripan', 'bin', 'choripan.js'), path.join(modules, '.bin', 'choripan'));
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, dependencies: { choripan: '*' } }));
  if (page !== 'README.md') fs.copyFileSync(path.join(root, 'examples', 'cat.jpg'), path.join(app, 'cat.jpg'));
  return app;
}

/** A checkout to run blocks in without writing into this one: a folder of links to its entries. */
function newCheckout() {
  const checkout = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-docs-checkout-'));
  for (const entry of fs.readdirSync(root)) fs.symlinkSync(path.join(root, entry), path.join(checkout, entry));
  return checkout;
}

test('every block names its language, and only languages this test runs or shows', () => {
  for (const page of pages) {
    for (const block of blocks(fs.readFileSync(path.join(root, page), 'utf8'))) {
      assert.ok(['js', 'python', 'sh', 'text'].includes(block.language), `${page}:${block.line}: \`\`\`${block.language}`);
    }
  }
});

test('every README block of code or commands says where it runs: in your app or in a checkout', () => {
  const unsaid = blocks(fs.readFileSync(path.join(root, 'README.md'), 'utf8'))
    .filter((b) => b.language in RUNNERS && !place(b)).map((b) => `README.md:${b.line}`);
  assert.deepEqual(unsaid, []);
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
    let checkout;
    before(() => {
      app = newApp(page);
      checkout = newCheckout();
    });
    after(() => {
      for (const folder of [app, checkout]) fs.rmSync(folder, { recursive: true, force: true });
    });
    for (const [index, block] of runnable.entries()) {
      test(`block ${index + 1} (${block.language}, line ${block.line}, in ${place(block) ?? 'your app'}) runs`, () => {
        const cwd = place(block) === 'a checkout' ? checkout : app;
        const file = path.join(cwd, `block-${index + 1}${EXTENSIONS[block.language]}`);
        fs.writeFileSync(file, block.code);
        const [command, args] = RUNNERS[block.language](file);
        // Output to files, in a process group of its own: whatever a block leaves running is stopped after it.
        const output = path.join(cwd, `block-${index + 1}.log`);
        const fd = fs.openSync(output, 'w');
        const run = spawnSync(command, args, { cwd, stdio: ['ignore', fd, fd], detached: true, timeout: 600_000,
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
