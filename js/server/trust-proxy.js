'use strict';
// Who a request's client is (CHORIPAN_TRUST_PROXY, createApp's trustProxy): the socket's peer, or, behind
// proxies the operator names, the address X-Forwarded-For gives for the hop before the nearest proxy it
// does not trust, as Express's `trust proxy` setting (proxy-addr) reads it. The log, the rate limit's
// buckets and the spans all take the client from clientAddress(). Off unless set: a header any client can
// write names no one unless the hop that wrote it is trusted. A gRPC call's client is its connection's
// peer (peerAddress()), whatever its metadata says: the setting names HTTP proxies, which write
// X-Forwarded-For on the requests they pass, and a gRPC client can write any metadata it likes.

const net = require('node:net');
const express = require('express');
const { serverVariables } = require('../vocabulary');

const { min: MIN_HOPS, max: MAX_HOPS } = serverVariables().find((v) => v.setting === 'trustProxy');

/**
 * The setting as Express's `trust proxy` takes it: a count of hops, or addresses and CIDR ranges, among
 * them proxy-addr's names (loopback, linklocal, uniquelocal), comma-separated. `true` is refused: it
 * trusts every hop, and so lets any client write its own address. Throws an Error saying what it expected.
 * @param {string} text
 * @returns {number | string}
 */
function parseTrustProxy(text) {
  const expected = `expected the proxies to trust: addresses or CIDR ranges, comma-separated, loopback, linklocal and uniquelocal among them ` +
    `(10.0.0.0/8,loopback), or a count of hops from ${MIN_HOPS} to ${MAX_HOPS}, got '${text}'`;
  const value = String(text).trim();
  if (/^\d+$/.test(value)) {
    const hops = Number(value);
    if (hops < MIN_HOPS || hops > MAX_HOPS) throw new Error(expected);
    return hops;
  }
  if (/^true$/i.test(value)) throw new Error(`${expected}: trusting every hop lets any client name itself in X-Forwarded-For`);
  try {
    express().set('trust proxy', value); // compiled by proxy-addr, which refuses what it cannot read
  } catch (error) {
    throw new Error(`${expected} (${error.message})`);
  }
  return value;
}

/**
 * The address in an X-Forwarded-For entry, with the port some proxies append taken off (Azure's
 * Application Gateway writes `203.0.113.1:4711`; an IPv6 address then comes bracketed,
 * `[2001:db8::1]:4711`: unbracketed, `::1:4711` is an address of its own); '' where there is none.
 * @param {string | undefined} entry
 * @returns {string}
 */
function forwardedAddress(entry) {
  if (!entry) return '';
  if (net.isIP(entry)) return entry;
  const [, address, port] = /^(\d+\.\d+\.\d+\.\d+|\[[^\]]+\]):(\d{1,5})$/.exec(entry) ?? [];
  if (!address || Number(port) > 65535) return '';
  const bare = address.replace(/^\[(.*)\]$/, '$1');
  return net.isIP(bare) === (address.startsWith('[') ? 6 : 4) ? bare : '';
}

/**
 * The request's client: Express's req.ip, through the trusted proxies, less any port. Where a trusted
 * proxy passed on something that is no address, the request is counted as that proxy's, so that no
 * header can make up a client of its own.
 * @param {import('express').Request} req
 * @returns {string}
 */
function clientAddress(req) {
  // A request that never reached Express (js/server/predict.js's lane, which no app that trusts a proxy
  // has) has no req.ip: its client is its peer, as Express's would be.
  if (!('ips' in req)) return req.socket.remoteAddress ?? '';
  return forwardedAddress(req.ip) || (req.ips[1] ?? req.socket.remoteAddress ?? '');
}

/**
 * A gRPC call's client: the address in its peer (call.getPeer()), which @grpc/grpc-js writes `ADDRESS:PORT`
 * (an IPv6 address unbracketed: `::1:50051`) and gRPC's other implementations `ipv4:ADDRESS:PORT` or
 * `ipv6:[ADDRESS]:PORT`. Anything else (`unknown`, `unix:PATH`) is '': such calls count as one client,
 * never as a string of their own.
 * @param {string} peer
 * @returns {string}
 */
function peerAddress(peer) {
  const bare = String(peer).replace(/^ipv[46]:/, '');
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(bare);
  if (bracketed) return net.isIP(bracketed[1]) ? bracketed[1] : '';
  // The port is what follows the last colon, when what precedes it is an address: `::1:50051` is ::1
  // on port 50051, though it reads as an IPv6 address of its own.
  const port = /^(.+):\d+$/.exec(bare);
  if (port && net.isIP(port[1])) return port[1];
  return net.isIP(bare) ? bare : '';
}

module.exports = { parseTrustProxy, clientAddress, peerAddress };
