// @ts-check
'use strict';
// choripan: classify images in Node with a PyTorch model exported by `python -m choripan`.

const fs = require('node:fs');
const path = require('node:path');
const { addonLocation, native } = require('./binding');
const { CODES, ChoripanError } = require('./errors');
const { Model, load, topIndices: rankIndices } = require('./model');
const validate = require('./validate');

/**
 * The default model's file, beside the addon (js/binding.js): the first in models/default.json that this
 * CPU runs — the AOTInductor package where the CPU has the vector instructions it was compiled for, the
 * TorchScript artifact everywhere else. (The server's CHORIPAN_MODEL picks another; the library reads no
 * variable.)
 */
function defaultModelPath() {
  const { models } = addonLocation(); // E_ADDON when there is none
  /** @type {Array<{ file: string, cpuIsa?: string }>} */
  let listed;
  try {
    listed = JSON.parse(fs.readFileSync(path.join(models, 'default.json'), 'utf8')).models;
  } catch {
    listed = [{ file: 'default.pt2' }, { file: 'default.pt' }]; // a build from before the list
  }
  /** @param {{ file: string, cpuIsa?: string }} entry */
  const runs = ({ file, cpuIsa }) => fs.existsSync(path.join(models, file)) && (!cpuIsa || native().cpuSupports(cpuIsa));
  return path.join(models, (listed.find(runs) ?? listed[listed.length - 1]).file);
}

/** @type {Promise<import('./model').Model> | null} */
let defaultModel = null;

/** The default model (EfficientNet-Lite0, ImageNet-1k), loaded once on first use. */
function getDefaultModel() {
  let file;
  try {
    file = defaultModelPath();
  } catch (error) {
    return Promise.reject(error);
  }
  if (!defaultModel && !fs.existsSync(file)) {
    return Promise.reject(new ChoripanError('E_MODEL_LOAD', `The default model ${file} is missing: ` +
      'setup exports it: run `npm rebuild choripan --build-from-source` in your app, or `npm install` in a checkout'));
  }
  defaultModel ??= load(file).catch((error) => {
    defaultModel = null; // let a later call try again
    throw error;
  });
  return defaultModel;
}

/**
 * Classify an image with the default model.
 * @param {Uint8Array} image an encoded image, in a format of docs/api.md's list
 * @param {import('./index').PredictOptions} [options]
 */
async function predict(image, options) {
  const model = await getDefaultModel();
  return model.predict(image, options);
}

/**
 * The `k` most probable `[index, probability]` pairs of a row of probabilities (as `probabilities()`
 * answers it), most probable first, ties to the lower index; every entry when the row has fewer.
 * `model.labels[index]` names each.
 * @param {Float32Array | number[]} probabilities
 * @param {number} k
 * @returns {Array<[number, number]>}
 */
function topIndices(probabilities, k) {
  validate.ranking(probabilities, k);
  return rankIndices(probabilities, k);
}

/**
 * The CPU cores this process may use (its affinity mask and cgroup CPU quota): what `workers: 0` and
 * `intraOpThreads: 0` count. Loads the addon (E_ADDON where there is none).
 * @returns {number}
 */
function availableCores() {
  return native().availableCores();
}

module.exports = {
  predict,
  load,
  getDefaultModel,
  topIndices,
  availableCores,
  Model,
  ChoripanError,
  codes: CODES,
};
// Read when asked for: finding it may load the addon, to ask the CPU what it runs. Without an addon it
// names the local build's model, and load() says why there is no addon.
Object.defineProperty(module.exports, 'DEFAULT_MODEL_PATH', {
  enumerable: true,
  get() {
    try {
      return defaultModelPath();
    } catch {
      return path.resolve(__dirname, '..', 'models', 'default.pt');
    }
  },
});
