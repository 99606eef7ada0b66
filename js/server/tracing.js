'use strict';
// OpenTelemetry's SDK for the server (js/server/main.js), loaded only when js/server/config.js's
// readTracing() says that OTEL_* variables ask for an exporter: then spans go over OTLP/HTTP, protobuf or
// JSON, in batches. The SDK and its exporter read their other variables themselves (the endpoint,
// OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, …); what it has to say of itself (an export that failed) goes to the log,
// at OTEL_LOG_LEVEL. The spans themselves are js/server/trace-requests.js's.

const { format } = require('node:util');
const { diag } = require('@opentelemetry/api');
const { diagLogLevelFromString, getStringFromEnv } = require('@opentelemetry/core');
const { defaultResource, detectResources, envDetector, resourceFromAttributes } = require('@opentelemetry/resources');
const { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } = require('@opentelemetry/semantic-conventions');
const { NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node');
const { name, version } = require('../../package.json');

const EXPORTERS = {
  'http/protobuf': () => require('@opentelemetry/exporter-trace-otlp-proto').OTLPTraceExporter,
  'http/json': () => require('@opentelemetry/exporter-trace-otlp-http').OTLPTraceExporter,
};

/** The SDK's words about itself as log lines: diag's levels are pino's, verbose its trace. */
function diagToLog(logger) {
  const line = (level) => (message, ...args) => logger[level](format(message, ...args));
  return { error: line('error'), warn: line('warn'), info: line('info'), debug: line('debug'), verbose: line('trace') };
}

/**
 * Registers a tracer provider for the process (the W3C trace context propagator, an AsyncLocalStorage
 * context manager) that exports spans over OTLP/HTTP. The service is `choripan` at the package's version
 * unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise.
 * @param {{ protocol: 'http/protobuf' | 'http/json' }} config readTracing()'s
 * @param {import('pino').Logger} logger
 * @returns {{ tracer: import('@opentelemetry/api').Tracer, forceFlush(): Promise<void>, shutdown(): Promise<void> }}
 *   forceFlush() sends the spans held now; shutdown() sends them, then stops
 */
function startTracing({ protocol }, logger) {
  diag.setLogger(diagToLog(logger.child({ component: 'opentelemetry' })),
    { logLevel: diagLogLevelFromString(getStringFromEnv('OTEL_LOG_LEVEL')) });
  const resource = defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: name, [ATTR_SERVICE_VERSION]: version }))
    .merge(detectResources({ detectors: [envDetector] }));
  const Exporter = EXPORTERS[protocol]();
  const provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new Exporter())] });
  provider.register();
  return {
    tracer: provider.getTracer(name, version),
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

module.exports = { startTracing };
