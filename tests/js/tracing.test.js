'use strict';
// Tracing (js/server/tracing.js): whether the server traces, from OpenTelemetry's own variables.

const assert = require('node:assert/strict');
const { test, describe } = require('node:test');
const { readConfig, readTracing, ConfigError } = require('../../js/server/config');

describe('readTracing: OpenTelemetry\'s variables as its specification means them', () => {
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };

  test('nothing set, or nothing that asks for an exporter: no tracing', () => {
    assert.equal(readTracing({}), null);
    assert.equal(readTracing({ OTEL_SERVICE_NAME: 'vision', OTEL_TRACES_SAMPLER: 'always_on' }), null);
    assert.equal(readTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_TRACES_EXPORTER: '' }), null, 'empty is unset');
    assert.equal(readConfig({}).tracing, null);
  });

  test('an endpoint, or OTEL_TRACES_EXPORTER=otlp (to the default endpoint), trace over http/protobuf unless the protocol says json', () => {
    assert.deepEqual(readTracing(endpoint), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://collector/v1/traces' }), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ OTEL_TRACES_EXPORTER: 'OTLP' }), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }), { protocol: 'http/json' });
    assert.deepEqual(readTracing({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' }),
      { protocol: 'http/json' }, 'the traces\' own variable wins');
    assert.deepEqual(readConfig(endpoint).tracing, { protocol: 'http/protobuf' });
  });

  test('OTEL_SDK_DISABLED=true (any case) and OTEL_TRACES_EXPORTER=none turn it off, whatever else is set', () => {
    assert.equal(readTracing({ ...endpoint, OTEL_SDK_DISABLED: 'TRUE' }), null);
    assert.equal(readTracing({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' }), null);
    assert.deepEqual(readTracing({ ...endpoint, OTEL_SDK_DISABLED: 'false' }), { protocol: 'http/protobuf' });
    assert.deepEqual(readTracing({ ...endpoint, OTEL_SDK_DISABLED: 'yes' }), { protocol: 'http/protobuf' }, 'only "true" is true');
  });

  test('another exporter, gRPC, or an endpoint that is no http URL: a ConfigError naming the variable', () => {
    const refused = (env, variable, message) => assert.throws(() => readTracing(env), (error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.variable, variable);
      assert.match(error.message, message);
      return true;
    });
    refused({ OTEL_TRACES_EXPORTER: 'otlp,console' }, 'OTEL_TRACES_EXPORTER', /expected otlp or none, got 'console'/);
    refused({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, 'OTEL_EXPORTER_OTLP_PROTOCOL', /expected http\/protobuf or http\/json, got 'grpc'/);
    refused({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, 'OTEL_EXPORTER_OTLP_ENDPOINT', /expected an http:\/\/ or https:\/\/ URL/);
  });
});
