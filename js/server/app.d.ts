// Types of `require('choripan/server')`.

import type { Express } from 'express';
import type { Logger } from 'pino';
import type { Model } from '../index';

export interface AppOptions {
  /** The one model served (or `models`). */
  model?: Model;
  /** Models by name; the first is the default, the others are chosen with ?model=name. */
  models?: Map<string, Model>;
  /** Comma list of host[:port] that GET /predict?url= may fetch. Default: none. */
  urlAllowlist?: string;
  /**
   * Comma list of origins (`https://app.example.com`) whose browser apps may call the service across
   * origins and read its answers, or `'*'` for any. Default: none.
   */
  corsOrigins?: string;
  /** Your logger; one JSON line per request. Default: a new pino logger. */
  logger?: Logger;
  /** The largest body or fetched image. Default 10 MiB. */
  maxBodyBytes?: number;
  /** The longest a ?url= fetch may take. Default 10000. */
  fetchTimeoutMs?: number;
  /** The longest a request may take; X-Request-Timeout-Ms may ask for less. Default 30000. */
  timeoutMs?: number;
  /** Past the deadline, answer 200 { label: defaultLabel, default: true } instead of 504. */
  defaultLabel?: string;
}

/**
 * The service as an Express app: POST/GET /predict, the Open Inference Protocol v2 under /v2,
 * /healthz, /readyz, /metrics, /openapi.json and a page at /. Mounted in another app, it answers its
 * own routes and passes the others on. `app.locals.draining = true` turns /readyz to 503.
 */
export function createApp(options: AppOptions): Express;
