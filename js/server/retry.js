'use strict';

/**
 * Retry-After for a request the model's queue refused: the work ahead of a retry (queued and running
 * requests) over the rate the model has been answering, in whole seconds as HTTP has them, at least one.
 * A client told when a place will be free does not come back before, so a retry storm meets a short
 * queue that stays full and busy workers, not a flood of refusals.
 * @param {{ stats(): { queued: number, inflight: number, drainPerSecond: number } }} model
 */
function retryAfterSeconds(model) {
  const { queued, inflight, drainPerSecond } = model.stats();
  if (!(drainPerSecond > 0)) return 1;
  return Math.max(1, Math.ceil((queued + inflight) / drainPerSecond));
}

module.exports = { retryAfterSeconds };
