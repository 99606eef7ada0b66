'use strict';
// What the people who run the service read: /readyz and /healthz for the orchestrator, /metrics for
// Prometheus, /openapi.json for whoever writes a client.

const express = require('express');
const { openapi } = require('./openapi');
const { PATHS } = require('./paths');

/**
 * @param {object} options createApp's
 * @param {Map<string, import('../index').Model>} options.models by name; the first is the default
 * @param {() => boolean} options.ready every model loaded and not disposed, and the server not draining
 * @param {ReturnType<typeof import('./metrics').createMetrics>} options.metrics
 * @param {{ keys: boolean, metricsOpen: boolean, limited: boolean }} options.access what the document says of
 *   keys and limits (js/server/openapi.js)
 */
function createOperationsRouter({ models, ready, metrics, access }) {
  const [defaultName] = models.keys();
  const router = express.Router();

  router.get(PATHS.readyz, (req, res) => {
    res.status(ready() ? 200 : 503).json({ status: ready() ? 'ready' : 'draining', models: [...models.keys()] });
  });

  router.get(PATHS.healthz, (req, res) => {
    const stats = Object.fromEntries([...models].map(([name, m]) => [name, m.disposed ? null : m.stats()]));
    res.json({ status: 'ok', model: defaultName, models: stats });
  });

  router.get(PATHS.metrics, async (req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  router.get(PATHS.openapi, (req, res) => res.json(openapi(models, access)));

  return router;
}

module.exports = { createOperationsRouter };
