'use strict';
// `npm test`: lint, then the Python tests, then the Node tests. Stops at the first failing stage.
// `npm run test:fast` (`--fast`): the same without what installs, packs, rebuilds, compiles a package,
// trains or drives a browser — the edit-test loop's tier; CI runs everything.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { root, recorded, probe } = require('./environment');

function python() {
  try {
    return (recorded() ?? probe()).python;
  } catch (error) {
    console.error(`npm test: no usable Python environment (${error.message}); run \`npm install\` first`);
    process.exit(1);
  }
}

const fast = process.argv.includes('--fast');
// The Node test files the fast tier leaves out, and why. (pytest's are marked `slow` in tests/python/conftest.py.)
const SLOW_JS = {
  'install.test.js': 'an app installs the packed tarball, building from source',
  'node-gyp.test.js': 'a full rebuild with node-gyp',
  'prebuilt.test.js': 'packs the platform packages and installs them into an app',
  'bundle.test.js': 'writes and starts the Python-free bundle',
  'page.test.js': 'drives the page in Chromium',
  'bench.test.js': "the benchmark's smoke run",
  'docs.test.js': "every documentation block, from a new app",
  'fuzz.test.js': '2,000 mutated images',
};

const interpreter = python();
const jsTests = fs.readdirSync(path.join(root, 'tests', 'js'))
  .filter((name) => name.endsWith('.test.js') && !(fast && name in SLOW_JS))
  .map((name) => path.join('tests', 'js', name));

const bin = (name) => path.join(root, 'node_modules', '.bin', name);

// moduleResolution node10 has no self-reference by package name: an app finds choripan in its
// node_modules, so the types' second check does too, through a link there for the run.
const linked = path.join(root, 'tests', 'types', 'node_modules', 'choripan');
fs.mkdirSync(path.dirname(linked), { recursive: true });
fs.rmSync(linked, { force: true });
fs.symlinkSync(path.relative(path.dirname(linked), root), linked);
process.on('exit', () => {
  fs.unlinkSync(linked);
  fs.rmdirSync(path.dirname(linked));
});

const stages = [
  ['eslint (JS lint)', bin('eslint'), ['.']],
  ['tsc (public types)', bin('tsc'), ['-p', 'tests/types']],
  ['tsc (public types, moduleResolution node10)', bin('tsc'), ['-p', 'tests/types/tsconfig.node10.json']],
  ['ruff check (Python lint)', interpreter, ['-m', 'ruff', 'check', 'export', 'tests/python', 'bench']],
  ['ruff format --check', interpreter, ['-m', 'ruff', 'format', '--check', 'export', 'tests/python', 'bench']],
  ['pytest', interpreter, ['-m', 'pytest', '-q', 'tests/python', ...(fast ? ['-m', 'not slow'] : [])]],
  // One file at a time: the machine may have two cores, and the timing assertions must not compete.
  ['node --test', process.execPath, ['--test', '--test-concurrency=1', ...jsTests]],
];

for (const [name, command, args] of stages) {
  console.log(`\n== ${name}`);
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root });
  if (result.status !== 0) {
    console.error(`\nnpm test: ${name} failed`);
    process.exit(result.status ?? 1);
  }
}
