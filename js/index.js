'use strict';
// choripan: classify images in Node with a PyTorch model exported by `python -m export`.

const fs = require('node:fs');
const path = require('node:path');
const { CODES, ChoripanError } = require('./errors');
const { Model, load } = require('./model');

// The AOTInductor package when setup compiled one (the fastest on the CPU: docs/benchmark.md), else
// the TorchScript artifact. (The server's CHORIPAN_MODEL picks another; the library reads no variable.)
const MODELS = path.resolve(__dirname, '..', 'models');
const DEFAULT_MODEL_PATH = ['default.pt2', 'default.pt'].map((name) => path.join(MODELS, name)).find((file) => fs.existsSync(file))
  ?? path.join(MODELS, 'default.pt');

let defaultModel = null;

/** The default model (EfficientNet-Lite0, ImageNet-1k), loaded once on first use. */
function getDefaultModel() {
  if (!defaultModel && !fs.existsSync(DEFAULT_MODEL_PATH)) {
    return Promise.reject(new ChoripanError('E_MODEL_LOAD', `The default model ${DEFAULT_MODEL_PATH} is missing: ` +
      'setup exports it: run `npm rebuild choripan` in your app, or `npm install` in choripan\'s own folder'));
  }
  defaultModel ??= load(DEFAULT_MODEL_PATH).catch((error) => {
    defaultModel = null; // let a later call try again
    throw error;
  });
  return defaultModel;
}

/**
 * Classify an image with the default model.
 * @param {Uint8Array} image encoded image bytes (JPEG, PNG, WebP, GIF, TIFF, AVIF)
 * @param {import('./index').PredictOptions} [options]
 */
async function predict(image, options) {
  const model = await getDefaultModel();
  return model.predict(image, options);
}

module.exports = {
  predict,
  load,
  getDefaultModel,
  Model,
  ChoripanError,
  codes: CODES,
  DEFAULT_MODEL_PATH,
};
