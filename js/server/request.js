'use strict';
// What an inference route reads from its request beside the input: how long it may take, and whether
// its client is still there to be answered.

const { ChoripanError } = require('../errors');

/**
 * The request's deadline, in ms: X-Request-Timeout-Ms may ask for less time than the server allows,
 * never more.
 * @param {import('express').Request} req
 * @param {number} timeoutMs the server's
 */
function requestDeadline(req, timeoutMs) {
  const asked = req.get('x-request-timeout-ms');
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

module.exports = { requestDeadline, clientGone };
