'use strict';
// Shared test fixtures: real photos from scikit-image (installed in the project's Python environment),
// the default artifact and its golden file.

const fs = require('node:fs');
const path = require('node:path');
const { recorded, probe } = require('../../scripts/environment');

const root = path.resolve(__dirname, '..', '..');
const env = recorded() ?? probe();
const photosDir = path.join(env.sitePackages, 'skimage', 'data');
const defaultModelPath = path.join(root, 'models', 'default.pt');
const defaultPackagePath = path.join(root, 'models', 'default.pt2'); // the AOTInductor twin setup compiles

const CAT_LABELS = ['tiger cat', 'Egyptian cat', 'tabby'];

function photoPath(name) {
  return path.join(photosDir, name);
}

function photo(name) {
  return fs.readFileSync(photoPath(name));
}

function golden(artifact = defaultModelPath) {
  return JSON.parse(fs.readFileSync(`${artifact}.golden.json`, 'utf8'));
}

/** Resolves to the rejection's error; fails if the promise resolves. */
async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

/**
 * Resolves to the port of a server child process once it is ready: the log line with "port" comes after
 * its models load (the one before it, when it takes the port, names only the url). Rejects if it exits first.
 */
function listening(child) {
  return new Promise((resolve, reject) => {
    let buffered = '';
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      const match = buffered.match(/"port":(\d+)/);
      if (match) resolve(Number(match[1]));
    });
    child.on('exit', (code) => reject(new Error(`the server exited with ${code}: ${buffered}`)));
  });
}

/** Debian's Chromium (apt-get install chromium; .ci/run installs it), or null: then the browser tests skip. */
const chromiumPath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((file) => fs.existsSync(file)) ?? null;

/** Chromium through playwright-core, headless, quiet: nothing it starts reaches the network. */
function launchChromium() {
  const { chromium } = require('playwright-core');
  return chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-gpu',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
}

module.exports = { root, env, photosDir, photoPath, photo, golden, defaultModelPath, defaultPackagePath, CAT_LABELS, rejection, listening,
  chromiumPath, launchChromium };
