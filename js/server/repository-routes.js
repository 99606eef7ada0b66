'use strict';
// The Open Inference Protocol's repository extension, as KServe's and Triton's clients call it
// (tritonclient's get_model_repository_index, load_model, unload_model): POST /v2/repository/index,
// POST /v2/repository/models/NAME/load and …/unload. A call names a model, never a file: the model
// repository (js/server/repository.js) finds its versions inside its own folder. Without a repository,
// the index lists the models served, and loads and unloads are refused. Paths: js/server/paths.js
// (REPOSITORY_PATHS, isRepository), where a guard on them all belongs. The gRPC service's
// RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload (js/server/grpc.js) call the same
// listModels, loadModel and unloadModel.

const express = require('express');
const { ChoripanError } = require('../errors');
const { REPOSITORY_PATHS } = require('./paths');
const { checkName } = require('./repository');

const bad = (message) => new ChoripanError('E_INVALID_ARGUMENT', message);

/** The call's JSON body (tritonclient sends none to the index, `{}` or `{ parameters }` to the others), or {}. */
function bodyOf(req) {
  const text = Buffer.isBuffer(req.body) ? req.body.toString('utf8').trim() : '';
  if (!text) return {};
  let body;
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw bad(`the request is not JSON: ${error.message}`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('the request must be a JSON object');
  if (body.parameters !== undefined && (body.parameters === null || typeof body.parameters !== 'object' || Array.isArray(body.parameters))) {
    throw bad('"parameters" must be an object');
  }
  return body;
}

/** The models given to createApp, as a repository that cannot change: each version 1, READY. */
function fixedModels(catalog) {
  const refuse = (name) => {
    checkName(name);
    throw bad('this server serves the models it was started with: `choripan serve --model-repository DIR --model-control explicit` ' +
      'loads and unloads models on request');
  };
  return {
    index: async ({ ready }) => catalog.all().map(({ name, version }) => ({ name, version: String(version), state: 'READY' }))
      .filter((entry) => !ready || entry.state === 'READY'),
    load: refuse,
    unload: refuse,
  };
}

/**
 * What loads, unloads and lists models: the repository, or, without one, the models given to createApp.
 * @param {import('./repository').ModelRepository | undefined} repository
 * @param {import('./catalog').Catalog} catalog
 */
const controlOf = (repository, catalog) => repository ?? fixedModels(catalog);

/**
 * The index (a repository index call, whichever transport): every version, or with `ready` those READY.
 * @param {ReturnType<typeof controlOf>} control
 * @param {{ ready?: unknown }} options
 */
async function listModels(control, { ready = false }) {
  if (typeof ready !== 'boolean') throw bad('"ready" must be true or false');
  return control.index({ ready });
}

/**
 * Loads model `name` (a repository load call, whichever transport): `parameters` are the call's.
 * @param {ReturnType<typeof controlOf>} control
 * @param {unknown} name
 * @param {Record<string, unknown>} [parameters]
 */
async function loadModel(control, name, parameters = {}) {
  // Triton's load may carry a model's configuration and files in place of the repository's: here a
  // call names a model, and its files are those in the repository.
  const files = Object.keys(parameters).filter((key) => key === 'config' || key.startsWith('file:'));
  if (files.length) throw bad(`a load names a model, never its files or configuration: ${files.join(', ')} is not taken`);
  await control.load(checkName(name));
}

/**
 * Unloads model `name` (a repository unload call, whichever transport).
 * @param {ReturnType<typeof controlOf>} control
 * @param {unknown} name
 */
async function unloadModel(control, name) {
  await control.unload(checkName(name));
}

/**
 * @param {object} options createApp's
 * @param {import('./repository').ModelRepository} [options.repository]
 * @param {import('./catalog').Catalog} options.catalog the models served, when there is no repository
 * @param {number} options.maxBodyBytes
 */
function createRepositoryRouter({ repository, catalog, maxBodyBytes }) {
  const control = controlOf(repository, catalog);
  const router = express.Router();
  const body = express.raw({ type: () => true, limit: maxBodyBytes });

  router.post(REPOSITORY_PATHS.index, body, async (req, res) => {
    res.json(await listModels(control, bodyOf(req)));
  });

  router.post(REPOSITORY_PATHS.load, body, async (req, res) => {
    const { parameters = {} } = bodyOf(req);
    res.locals.model = checkName(req.params.name);
    await loadModel(control, req.params.name, parameters);
    res.status(200).end();
  });

  router.post(REPOSITORY_PATHS.unload, body, async (req, res) => {
    bodyOf(req); // unload_dependents: a model here has none
    res.locals.model = checkName(req.params.name);
    await unloadModel(control, req.params.name);
    res.status(200).end();
  });

  return router;
}

module.exports = { createRepositoryRouter, controlOf, listModels, loadModel, unloadModel };
