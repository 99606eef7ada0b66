'use strict';
// What an inference route reads from its request beside the input: how long it may take, whether its
// client is still there to be answered, and the trace its model calls belong to.

const { ChoripanError } = require('../errors');

/**
 * The request's deadline, in ms: X-Request-Timeout-Ms may ask for less time than the server allows,
 * never more.
 * @param {import('node:http').IncomingMessage} req
 * @param {number} timeoutMs the server's
 */
function requestDeadline(req, timeoutMs) {
  const asked = req.headers['x-request-timeout-ms'];
  if (asked === undefined) return timeoutMs;
  const value = Number(asked);
  if (!Number.isInteger(value) || value < 1) {
    throw new ChoripanError('E_INVALID_ARGUMENT', `X-Request-Timeout-Ms must be a positive integer, got '${asked}'`);
  }
  return Math.min(value, timeoutMs);
}

/**
 * Aborts when the client goes away before the answer is written, so that no work is done for nobody.
 * @param {import('express').Response} res
 */
function clientGone(res) {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableEnded) controller.abort();
  });
  return controller.signal;
}

/**
 * `work()`, a call of the model, in the request's trace when it is traced (js/server/trace-requests.js),
 * so that the model's 'prediction' events are taken as this request's.
 * @template T
 * @param {import('express').Response} res
 * @param {() => T} work
 * @returns {T}
 */
function inRequestTrace(res, work) {
  return res.locals.inTrace ? res.locals.inTrace(work) : work();
}

module.exports = { requestDeadline, clientGone, inRequestTrace };
