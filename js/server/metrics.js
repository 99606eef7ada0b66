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

/**
 * @param {Map<string, import('../index').Model>} models by name
 */
function createMetrics(models) {
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
    labelNames: ['model'], buckets: LATENCY_BUCKETS, registers: [registry],
  });
  const queueSeconds = new client.Histogram({
    name: 'choripan_queue_wait_duration_seconds', help: 'time from submission to the start of its batch (preprocessing included), by model',
    labelNames: ['model'], buckets: LATENCY_BUCKETS, registers: [registry],
  });
  const batchSize = new client.Histogram({
    name: 'choripan_batch_size', help: 'size of the batch each request ran in, by model',
    labelNames: ['model'], buckets: [1, 2, 4, 8, 16, 32, 64], registers: [registry],
  });
  const defaults = new client.Counter({
    name: 'choripan_default_answers_total', help: 'requests past their deadline answered with CHORIPAN_DEFAULT_LABEL',
    labelNames: ['model'], registers: [registry],
  });
  // The model's own counts, read from its stats() when scraped; the vocabulary names each and says
  // whether it is a gauge (a count now) or a counter (a count since load).
  for (const stat of vocabulary.stats.filter((s) => s.metric)) {
    const Metric = stat.metric.type === 'counter' ? client.Counter : client.Gauge;
    new Metric({
      name: stat.metric.name, help: statMeaning(stat), labelNames: ['model'], registers: [registry],
      collect() {
        this.reset(); // a disposed model's series go
        for (const [label, model] of models) {
          if (model.disposed) continue;
          const value = model.stats()[stat.name];
          if (stat.metric.type === 'counter') this.inc({ model: label }, value);
          else this.set({ model: label }, value);
        }
      },
    });
  }

  for (const [label, model] of models) {
    model.on('prediction', ({ queueMs, forwardMs, batchSize: size }) => {
      queueSeconds.observe({ model: label }, queueMs / 1000);
      inferenceSeconds.observe({ model: label }, forwardMs / 1000);
      batchSize.observe({ model: label }, size);
    });
  }
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
    defaultAnswer(model) {
      defaults.inc({ model });
    },
  };
}

module.exports = { createMetrics };
