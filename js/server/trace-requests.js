'use strict';
// A span for each request the service answers (but the probes' and the scrape's), when createApp has a
// tracer (js/server/app.js): the caller's trace continued from its `traceparent`, the attributes of
// OpenTelemetry's HTTP server conventions and the model's, and under it a `choripan.decode`, a
// `choripan.queue` and a `choripan.forward` span for each image, whose lengths are the timings the
// model's 'prediction' event carries (decodeMs: the core's decoding of a JPEG, or sharp's as the library
// timed it, `choripan.decoder` saying which; queueMs: submission to the start of its batch, preprocessing
// and a JPEG decoded in the core included; forwardMs: its batch's forward pass). Nothing here measures
// them again. Only @opentelemetry/api is used: the SDK behind it is js/server/tracing.js's, or an app's own.

const { context, propagation, trace, createContextKey, SpanKind, SpanStatusCode } = require('@opentelemetry/api');
const semconv = require('@opentelemetry/semantic-conventions');
const { PATHS, OIP_PATHS } = require('./paths');
const { clientAddress } = require('./trust-proxy');

// What probes and scrapers ask every few seconds: logged and counted, but no one's trace.
const UNTRACED = new Set([PATHS.healthz, PATHS.readyz, PATHS.metrics, OIP_PATHS.live, OIP_PATHS.ready]);

// Methods outside these are `_OTHER`, their own spelling in http.request.method_original.
const METHODS = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE']);

/**
 * A clock for the spans of one request: performance.now() milliseconds as OpenTelemetry's HrTime,
 * [seconds, nanoseconds] since the epoch, set on the wall clock once, when the request came. Only the
 * small difference from then is a fraction, so that a span is as long as the core said to the nanosecond.
 */
function requestClock() {
  const wallMs = Date.now();
  const anchor = performance.now();
  const wallSeconds = Math.floor(wallMs / 1000);
  return (ms) => {
    const nanoseconds = Math.round((wallMs - wallSeconds * 1000 + (ms - anchor)) * 1e6);
    const carry = Math.floor(nanoseconds / 1e9);
    return [wallSeconds + carry, nanoseconds - carry * 1e9];
  };
}

/** server.address and server.port from the Host header, as the client addressed the server. */
function hostAttributes(host) {
  const match = /^(\[[^\]]*\]|[^:]+)(?::(\d{1,5}))?$/.exec(host ?? '');
  if (!match) return {};
  return { [semconv.ATTR_SERVER_ADDRESS]: match[1], ...(match[2] ? { [semconv.ATTR_SERVER_PORT]: Number(match[2]) } : {}) };
}

/**
 * @param {object} options
 * @param {import('@opentelemetry/api').Tracer} options.tracer
 * @param {import('./catalog').Catalog} options.catalog the versions served, now and as they come
 * @returns {import('express').RequestHandler}
 */
function traceRequests({ tracer, catalog }) {
  // The request's record in its context: how the 'prediction' listener finds whose image it was. A key
  // of this app's own, so that two apps serving one model do not take each other's requests.
  const REQUEST = createContextKey('choripan request');
  const watch = ({ name, version, model }) => {
    model.on('prediction', ({ queueMs, forwardMs, batchSize, decoder, decodeStartMs, decodeMs }) => {
      const request = context.active().getValue(REQUEST);
      if (!request?.span.isRecording()) return;
      // The core says how long each step took, not when it ended: the forward pass is taken to end as
      // its answer reaches this event loop, which is later by the hop from the worker thread.
      const answered = performance.now();
      const forwardStarted = answered - forwardMs;
      const submitted = forwardStarted - queueMs;
      const parent = trace.setSpan(context.active(), request.span);
      const ofModel = { 'choripan.model.name': name, 'choripan.model.version': String(version) };
      const attributes = { ...ofModel, 'choripan.batch.size': batchSize };
      if (decoder) {
        // Decoded before submission by sharp, or by the core while it waited (within the queue's span).
        const decodeStarted = submitted + decodeStartMs;
        tracer.startSpan('choripan.decode', { startTime: request.at(decodeStarted), attributes: { ...ofModel, 'choripan.decoder': decoder } }, parent)
          .end(request.at(decodeStarted + decodeMs));
      }
      tracer.startSpan('choripan.queue', { startTime: request.at(submitted), attributes }, parent)
        .end(request.at(forwardStarted));
      tracer.startSpan('choripan.forward', { startTime: request.at(forwardStarted), attributes }, parent)
        .end(request.at(answered));
      request.batchSize = Math.max(request.batchSize, batchSize);
    });
  };
  catalog.all().forEach(watch);
  catalog.on('install', watch); // a version a model repository loads later

  return (req, res, next) => {
    if (UNTRACED.has(req.path)) return next();
    const at = requestClock();
    const started = performance.now();
    const known = METHODS.has(req.method);
    const method = known ? req.method : semconv.HTTP_REQUEST_METHOD_VALUE_OTHER;
    // Under an app's own HTTP server span (its instrumentation), this one is a part of it; otherwise it
    // is the server span, and continues the trace the caller's traceparent names.
    const hosted = trace.getSpan(context.active()) !== undefined;
    const client = clientAddress(req);
    const parent = hosted ? context.active() : propagation.extract(context.active(), req.headers);
    const span = tracer.startSpan(known ? method : 'HTTP', {
      kind: hosted ? SpanKind.INTERNAL : SpanKind.SERVER,
      startTime: at(started),
      attributes: {
        [semconv.ATTR_HTTP_REQUEST_METHOD]: method,
        ...(known ? {} : { [semconv.ATTR_HTTP_REQUEST_METHOD_ORIGINAL]: req.method }),
        [semconv.ATTR_URL_PATH]: req.originalUrl.split('?')[0],
        [semconv.ATTR_URL_SCHEME]: req.protocol,
        [semconv.ATTR_NETWORK_PROTOCOL_VERSION]: req.httpVersion,
        ...hostAttributes(req.get('host')),
        ...(client ? { [semconv.ATTR_CLIENT_ADDRESS]: client } : {}),
        // The connection's peer, where it is a proxy the client came through.
        ...(client !== req.socket.remoteAddress && req.socket.remoteAddress ? { [semconv.ATTR_NETWORK_PEER_ADDRESS]: req.socket.remoteAddress } : {}),
        ...(req.get('user-agent') ? { [semconv.ATTR_USER_AGENT_ORIGINAL]: req.get('user-agent') } : {}),
      },
    }, parent);
    const request = { span, at, batchSize: 0 };
    const traced = trace.setSpan(parent, span).setValue(REQUEST, request);
    const { traceId, spanId } = span.spanContext();
    res.locals.traceIds = { trace_id: traceId, span_id: spanId };
    // Where the routes call the model (js/server/request.js inRequestTrace): its 'prediction' events find
    // the request there, whatever context the rest of the request ran in.
    res.locals.inTrace = (work) => context.with(traced, work);
    const prefix = req.baseUrl; // where an app mounted this one: a part of every route

    const end = () => {
      res.off('finish', end);
      res.off('close', end);
      if (!span.isRecording()) return;
      const { model, version, errorCode } = res.locals;
      const route = req.route ? `${prefix}${req.route.path}` : undefined;
      if (route) {
        span.updateName(`${known ? method : 'HTTP'} ${route}`);
        span.setAttribute(semconv.ATTR_HTTP_ROUTE, route);
      }
      const answered = res.writableFinished;
      if (answered) span.setAttribute(semconv.ATTR_HTTP_RESPONSE_STATUS_CODE, res.statusCode);
      if (model !== undefined) {
        span.setAttributes({ 'choripan.model.name': model, 'choripan.model.version': String(version) });
        if (request.batchSize) span.setAttribute('choripan.batch.size', request.batchSize);
      }
      const id = res.get('x-request-id');
      if (id) span.setAttribute('choripan.request.id', id);
      if (errorCode) span.setAttribute('choripan.error.code', errorCode);
      // A server's span is an error for 5xx, or when no answer was sent; a 4xx is the client's.
      if (!answered || res.statusCode >= 500) {
        const type = errorCode ?? (answered ? String(res.statusCode) : 'aborted');
        span.setAttribute(semconv.ATTR_ERROR_TYPE, type);
        span.setStatus({ code: SpanStatusCode.ERROR, message: type });
      }
      span.end(at(performance.now()));
    };
    res.on('finish', end);
    res.on('close', end); // the client went away first
    return context.with(traced, next);
  };
}

module.exports = { traceRequests };
