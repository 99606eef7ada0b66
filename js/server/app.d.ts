// Types of `require('choripan/server')`.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Express } from 'express';
import type { Logger } from 'pino';
import type { Tracer } from '@opentelemetry/api';
import type { ErrorCode, Model, Prediction } from '../index';

export interface AppOptions {
  /** The one model served (or `models`). */
  model?: Model;
  /** Models by name; the first is the default, the others are chosen with ?model=name. */
  models?: Map<string, Model>;
  /** Your logger; one JSON line per request. Default: a new pino logger. */
  logger?: Logger;
  /**
   * A span for each request, from your OpenTelemetry setup (`trace.getTracer('choripan')`), with a span for
   * each image's time in the queue and in the forward pass under it (docs/service.md#tracing). Default: none,
   * and no OpenTelemetry module is loaded.
   */
  tracer?: Tracer;
  /**
   * The keys that may call it (CHORIPAN_API_KEYS_FILE's lines for the server): every route but the probes,
   * /metrics and the page then needs `Authorization: Bearer KEY`, and the repository an admin key.
   * Default: none is asked for.
   */
  apiKeys?: ApiKey[];
  // <vocabulary appOptions>
  /** host[:port],… that GET /predict?url= may fetch. Default: none (CHORIPAN_URL_ALLOWLIST for the server). */
  urlAllowlist?: string;
  /** origins,… (https://app.example.com) whose browser apps may call the service and read its answers, or * for any. Default: none (CHORIPAN_CORS_ORIGINS for the server). */
  corsOrigins?: string;
  /** true: /metrics needs a key too (of either scope), as Prometheus sends one with authorization.credentials_file. Default: false (CHORIPAN_METRICS_AUTH for the server). */
  metricsAuth?: boolean;
  /** RATE:BURST (20:40): a token bucket per API key, or per client address without keys, of BURST requests refilled at RATE a second; past it, 429. Default: no limit (CHORIPAN_RATE_LIMIT for the server). */
  rateLimit?: string;
  /** the proxies in front (Express's trust proxy): addresses or CIDR ranges, comma-separated, loopback, linklocal and uniquelocal among them, or a count of hops from 1 to 10; the client is then the address X-Forwarded-For names before them, for the rate limit, the log and the spans. Default: none: the client is the connection's peer (CHORIPAN_TRUST_PROXY for the server). */
  trustProxy?: string;
  /** the longest a request may take, in ms; X-Request-Timeout-Ms may ask for less. Default: 30000 (CHORIPAN_TIMEOUT_MS for the server). */
  timeoutMs?: number;
  /** past its deadline, a request is answered 200 { label, default: true } with this label instead of 504. Default: 504 (CHORIPAN_DEFAULT_LABEL for the server). */
  defaultLabel?: string;
  /** the largest body or fetched image, in bytes. Default: 10485760 (CHORIPAN_MAX_BYTES for the server). */
  maxBodyBytes?: number;
  /** the longest a ?url= fetch may take, in ms. Default: 10000 (CHORIPAN_FETCH_TIMEOUT_MS for the server). */
  fetchTimeoutMs?: number;
  // </vocabulary appOptions>
}

/** A key of `apiKeys`: at least 16 characters of a Bearer token's; an admin key may infer too. */
export interface ApiKey {
  key: string;
  scope: 'infer' | 'admin';
}

/**
 * The service as an Express app: POST/GET /predict, the Open Inference Protocol v2 under /v2,
 * /healthz, /readyz, /metrics, /openapi.json and a page at /. Mounted in another app, it answers its
 * own routes and passes the others on. `app.locals.draining = true` turns /readyz to 503.
 */
export function createApp(options: AppOptions): Express;

/**
 * The request listener for a server of the app's own, as `choripan serve` runs it: POST /predict's raw
 * image bodies first on a path that skips the router (answered the same way, for less CPU), where no
 * tracer, CORS origins, API keys, rate limit or trusted proxy stand in front of the route; the app
 * answers everything else. `http.createServer(serverHandler(app))`.
 */
export function serverHandler(app: Express): (req: IncomingMessage, res: ServerResponse) => void;

/** The 200 answer of `POST /predict` and `GET /predict?url=`. */
export type PredictResponse = ModelAnswer | DefaultAnswer;

/** The model's answer: its most probable labels. */
export interface ModelAnswer extends Prediction {
  /** The model that answered (`?model=`, or the first). */
  model: string;
  /** Milliseconds from the request's image in hand to the answer. */
  elapsedMs: number;
  default?: never;
}

/** Past the deadline, with `defaultLabel` set: that label, said to be a default answer, and nothing else. */
export interface DefaultAnswer {
  label: string;
  default: true;
  model: string;
  elapsedMs: number;
}

/** Every failure of the service's own routes (those of the Open Inference Protocol answer `{ error: string }`). */
export interface ErrorResponse {
  error: { code: ErrorCode; message: string };
}
