'use strict';
// What the people who run the service read: /readyz and /healthz for the orchestrator, /metrics for
// Prometheus, /openapi.json for whoever writes a client.

const express = require('express');
const { openapi } = require('./openapi');
const { PATHS } = require('./paths');

/**
 * @param {object} options createApp's
 * @param {import('./catalog').Catalog} options.catalog the models served; the first name is the default
 * @param {() => boolean} options.ready every model loaded and not disposed, and the server not draining
 * @param {ReturnType<typeof import('./metrics').createMetrics>} options.metrics
 * @param {{ keys: boolean, metricsOpen: boolean, limited: boolean }} options.access what the document says of
 *   keys and limits (js/server/openapi.js)
 */
function createOperationsRouter({ catalog, ready, metrics, access }) {
  const router = express.Router();

  router.get(PATHS.readyz, (req, res) => {
    res.status(ready() ? 200 : 503).json({ status: ready() ? 'ready' : 'draining', models: catalog.names() });
  });

  // Each model's stats are those of the version a request that names none gets: its highest.
  router.get(PATHS.healthz, (req, res) => {
    const stats = Object.fromEntries(catalog.names().map((name) => {
      const { model } = catalog.find(name);
      return [name, model.disposed ? null : model.stats()];
    }));
    res.json({ status: 'ok', model: catalog.defaultName(), models: stats });
  });

  router.get(PATHS.metrics, async (req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  router.get(PATHS.openapi, (req, res) => res.json(openapi(catalog.names(), access)));

  return router;
}

module.exports = { createOperationsRouter };
