'use strict';
// Prometheus metrics for the service (prom-client), in a registry of its own so that several apps in
// one process do not mix their counts. GET /metrics serves it in the text format.

const client = require('prom-client');
const { vocabulary, statMeaning } = require('../vocabulary');

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

// Every distinct label value is a series kept until the process exits, so no label takes a value a
// client chose: a request no route matched (a 404, a body refused on its headers) is `unmatched`, not
// its path, and a method outside these is `other`. A gRPC call counts as `GRPC`, under its method's
// path (`/inference.GRPCInferenceService/ModelInfer`), with the status HTTP would answer.
const UNMATCHED = 'unmatched';
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'GRPC']);

/** A served version's labels: its model's name and its version (1 for a model given to createApp). */
const labelsOf = ({ name, version }) => ({ model: name, version: String(version) });

/**
 * @param {import('./catalog').Catalog} catalog the models served, which may come and go
 * @param {() => Iterable<{ name: string, version: number, count: number }>} [loadFailures] a model
 *   repository's failed loads, by version (js/server/repository.js)
 */
function createMetrics(catalog, loadFailures) {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'choripan_' });
  const requests = new client.Counter({
    name: 'choripan_http_requests_total', help: 'HTTP requests (and gRPC calls, method GRPC) by route, method and status',
    labelNames: ['route', 'method', 'status'], registers: [registry],
  });
  const requestSeconds = new client.Histogram({
    name: 'choripan_http_request_duration_seconds', help: 'HTTP request (and gRPC call) latency, by route',
    labelNames: ['route', 'method'], buckets: LATENCY_BUCKETS, registers: [registry],
  });
  const inferenceSeconds = new client.Histogram({
    name: 'choripan_inference_duration_seconds', help: 'forward pass of the batch each request ran in, by model',
    labelNames: ['model', 'version'], buckets: LATENCY_BUCKETS, registers: [registry],
  });
  const queueSeconds = new client.Histogram({
    name: 'choripan_queue_wait_duration_seconds', help: 'time from submission to the start of its batch (preprocessing included), by model',
    labelNames: ['model', 'version'], buckets: LATENCY_BUCKETS, registers: [registry],
  });
  const batchSize = new client.Histogram({
    name: 'choripan_batch_size', help: 'size of the batch each request ran in, by model',
    labelNames: ['model', 'version'], buckets: [1, 2, 4, 8, 16, 32, 64], registers: [registry],
  });
  const defaults = new client.Counter({
    name: 'choripan_default_answers_total', help: 'requests past their deadline answered with CHORIPAN_DEFAULT_LABEL',
    labelNames: ['model', 'version'], registers: [registry],
  });
  const rateLimited = new client.Counter({
    name: 'choripan_rate_limited_total', help: 'requests refused 429 because their client was past CHORIPAN_RATE_LIMIT',
    registers: [registry],
  });
  // The model's own counts, read from its stats() when scraped; the vocabulary names each and says
  // whether it is a gauge (a count now) or a counter (a count since load).
  for (const stat of vocabulary.stats.filter((s) => s.metric)) {
    const Metric = stat.metric.type === 'counter' ? client.Counter : client.Gauge;
    new Metric({
      name: stat.metric.name, help: statMeaning(stat), labelNames: ['model', 'version'], registers: [registry],
      collect() {
        this.reset(); // a disposed or removed version's series go
        for (const served of catalog.all()) {
          if (served.model.disposed) continue;
          const value = served.model.stats()[stat.name];
          if (stat.metric.type === 'counter') this.inc(labelsOf(served), value);
          else this.set(labelsOf(served), value);
        }
      },
    });
  }
  if (loadFailures) {
    new client.Counter({
      name: 'choripan_model_load_failures_total', help: 'versions of the model repository that failed to load (E_MODEL_LOAD), by model and version',
      labelNames: ['model', 'version'], registers: [registry],
      collect() {
        this.reset();
        for (const failure of loadFailures()) this.inc(labelsOf(failure), failure.count);
      },
    });
  }

  // Each version's forward passes, from the versions served now and those installed later.
  const observe = (served) => served.model.on('prediction', ({ queueMs, forwardMs, batchSize: size }) => {
    const labels = labelsOf(served);
    queueSeconds.observe(labels, queueMs / 1000);
    inferenceSeconds.observe(labels, forwardMs / 1000);
    batchSize.observe(labels, size);
  });
  catalog.all().forEach(observe);
  catalog.on('install', observe);
  // A version no longer served takes its series with it, so that they stay as few as the versions served.
  catalog.on('dispose', (served) => {
    if (catalog.find(served.name, served.version)) return; // replaced: the same labels go on
    for (const metric of [queueSeconds, inferenceSeconds, batchSize, defaults]) metric.remove(labelsOf(served));
  });
  return {
    registry,
    /**
     * One answered HTTP request, or gRPC call.
     * @param {string | undefined} route the pattern of the route that matched it, if one did; a gRPC method's path
     */
    request(route = UNMATCHED, method, status, seconds) {
      const labels = { route, method: METHODS.has(method) ? method : 'other' };
      requests.inc({ ...labels, status });
      requestSeconds.observe(labels, seconds);
    },
    /** A request past its deadline answered with the default label, for `served`. */
    defaultAnswer(served) {
      defaults.inc(labelsOf(served));
    },
    /** One request refused by the rate limit (js/server/rate-limit.js). */
    rateLimited() {
      rateLimited.inc();
    },
  };
}

module.exports = { createMetrics };
