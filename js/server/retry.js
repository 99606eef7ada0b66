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

const PACED = Symbol('choripan.paced');

/**
 * Holds the retries that come too soon. A connection whose request a model refused with E_QUEUE_FULL
 * was told when to come back (Retry-After); a request for that model that comes on it before then, as
 * a client that retries at once sends it, waits with its body unread until a request of the model is
 * answered (a worker has then taken a place in its queue), oldest first, or until its Retry-After has
 * passed, and then goes on as any request does. Clients that retry at once would otherwise keep the
 * event loop busy refusing them, and on a small machine it takes a core the workers need.
 */
function createRetryPacing() {
  /** @type {WeakMap<import('../index').Model, Set<() => void>>} the held requests of each model, oldest first */
  const held = new WeakMap();
  // A model's line, made when it first holds a request: models come and go with a model repository.
  const lineOf = (model) => {
    if (!held.has(model)) {
      const line = new Set();
      held.set(model, line);
      model.on('prediction', () => {
        const [oldest] = line;
        oldest?.();
      });
    }
    return held.get(model);
  };
  return {
    /** The request was refused with E_QUEUE_FULL by `model`, and told to come back in `seconds`. */
    refused(req, model, seconds) {
      req.socket[PACED] = { model, until: Date.now() + seconds * 1000 };
    },
    /** Whether a request comes on a connection that a model refused and told to wait, still waiting. */
    holds(req) {
      const paced = req.socket[PACED];
      return paced !== undefined && paced.until > Date.now();
    },
    /**
     * Middleware that holds a request which came too soon on a connection that its model refused.
     * @param {(req: import('express').Request) => import('../index').Model | undefined} modelOf
     */
    hold(modelOf) {
      return (req, res, next) => {
        const paced = req.socket[PACED];
        const wait = paced ? paced.until - Date.now() : 0;
        if (!(wait > 0) || modelOf(req) !== paced.model) return next();
        const line = lineOf(paced.model);
        const leave = () => {
          line.delete(go);
          clearTimeout(timer);
          res.off('close', leave);
        };
        const go = () => {
          leave();
          next();
        };
        const timer = setTimeout(go, wait);
        line.add(go);
        res.on('close', leave); // the client went away while held
        return undefined;
      };
    },
  };
}

module.exports = { retryAfterSeconds, createRetryPacing };
