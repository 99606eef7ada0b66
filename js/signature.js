'use strict';
// Signed artifacts: an OpenSSF model signing signature (the `model-signing` package's format, which
// `python -m choripan sign` writes) checked with Node's own crypto. The signature is a Sigstore bundle
// holding a DSSE envelope; its payload, an in-toto statement, names the artifact file's SHA-256; a
// trusted elliptic-curve key must have signed it. The digest found is handed to the native core, which
// loads the file only if its bytes have exactly that digest (the `sha256` load option): nothing of an
// unsigned or altered file is read, and the file cannot change between this check and the load.

const crypto = require('node:crypto');
const fs = require('node:fs');
const { ChoripanError } = require('./errors');

const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
const PREDICATE_TYPE = 'https://model_signing/signature/v1.0';
// ECDSA signs a digest as wide as its curve: model-signing's keys are P-256, P-384 and P-521.
const CURVE_HASH = { prime256v1: 'sha256', secp384r1: 'sha384', secp521r1: 'sha512' };
const MAX_SIGNATURE_BYTES = 1 << 20; // a key-signed bundle is about 1.3 KB

/** The path of an artifact's signature: `<artifact>.sig` beside it. */
const signaturePath = (artifact) => `${artifact}.sig`;

/** Public keys from PEM text, Buffers or KeyObjects; E_INVALID_ARGUMENT naming the one that is not one. */
function publicKeys(keys, name = 'trustedKeys') {
  return keys.map((key, index) => {
    let object;
    try {
      object = key instanceof crypto.KeyObject ? key : crypto.createPublicKey(key);
    } catch (error) {
      throw new ChoripanError('E_INVALID_ARGUMENT', `${name}[${index}] is not a public key (${error.message})`);
    }
    if (object.type !== 'public' || !CURVE_HASH[object.asymmetricKeyDetails?.namedCurve]) {
      throw new ChoripanError('E_INVALID_ARGUMENT',
        `${name}[${index}] is not an elliptic-curve public key on P-256, P-384 or P-521, which model signing uses`);
    }
    return object;
  });
}

// DSSE's pre-authentication encoding: what the signature is over.
function pae(type, payload) {
  const typeBytes = Buffer.from(type);
  return Buffer.concat([Buffer.from(`DSSEv1 ${typeBytes.length} `), typeBytes, Buffer.from(` ${payload.length} `), payload]);
}

// model-signing names a key by the SHA-256 of its PEM text; a bundle that names one was signed by it.
const hint = (key) => crypto.createHash('sha256').update(key.export({ type: 'spki', format: 'pem' })).digest('hex');

function readSignature(file, refuse) {
  let text;
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) throw refuse(`its signature ${file} is not a regular file`);
    if (stat.size > MAX_SIGNATURE_BYTES) throw refuse(`its signature ${file} is ${stat.size} bytes, not a signature`);
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof ChoripanError) throw error;
    throw refuse(error.code === 'ENOENT' ? `it has no signature (${file} is missing); sign it with \`python -m choripan sign\``
      : `its signature ${file} cannot be read (${error.code ?? error.message})`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw refuse(`its signature ${file} is not a model signing bundle (not JSON)`);
  }
}

/**
 * The artifact's SHA-256 as one of `trustedKeys` signed it, from its signature file.
 * @param {string} artifact the model file's path
 * @param {Array<string | Buffer | crypto.KeyObject>} trustedKeys PEM public keys
 * @param {string} [signature] the signature file (`<artifact>.sig`)
 * @returns {string} the digest, 64 hex digits
 */
function signedDigest(artifact, trustedKeys, signature = signaturePath(artifact)) {
  const keys = publicKeys(trustedKeys);
  const refuse = (reason) => new ChoripanError('E_MODEL_LOAD', `cannot load model ${artifact}: ${reason}`);
  const bundle = readSignature(signature, refuse);
  const envelope = bundle?.dsseEnvelope;
  if (bundle?.mediaType !== BUNDLE_MEDIA_TYPE || envelope?.payloadType !== PAYLOAD_TYPE ||
      typeof envelope.payload !== 'string' || !Array.isArray(envelope.signatures) || envelope.signatures.length !== 1 ||
      typeof envelope.signatures[0]?.sig !== 'string') {
    throw refuse(`its signature ${signature} is not a key-signed model signing bundle (${BUNDLE_MEDIA_TYPE} with one DSSE signature)`);
  }
  const payload = Buffer.from(envelope.payload, 'base64');
  const signed = pae(envelope.payloadType, payload);
  const bytes = Buffer.from(envelope.signatures[0].sig, 'base64');
  const named = bundle.verificationMaterial?.publicKey?.hint;
  const signer = keys.find((key) => (named === undefined || named === hint(key)) &&
    crypto.verify(CURVE_HASH[key.asymmetricKeyDetails.namedCurve], signed, { key, dsaEncoding: 'der' }, bytes));
  if (!signer) {
    throw refuse(`its signature ${signature} was not made by any of the ${keys.length} trusted key(s), or the signed statement was altered`);
  }
  // Signed: the statement is the signer's. It must name exactly this one file by its SHA-256.
  let statement;
  try {
    statement = JSON.parse(payload.toString('utf8'));
  } catch {
    throw refuse(`its signature ${signature} signs something that is not an in-toto statement`);
  }
  const resources = statement?.predicate?.resources;
  const serialization = statement?.predicate?.serialization;
  const resource = Array.isArray(resources) && resources.length === 1 ? resources[0] : null;
  if (statement?._type !== STATEMENT_TYPE || statement.predicateType !== PREDICATE_TYPE ||
      serialization?.method !== 'files' || serialization.hash_type !== 'sha256' ||
      resource?.name !== '.' || resource.algorithm !== 'sha256' || !/^[0-9a-f]{64}$/.test(resource.digest ?? '')) {
    throw refuse(`its signature ${signature} does not sign a single file by its SHA-256 (sign the artifact file itself)`);
  }
  // The subject's digest hashes the resources' digests: a statement that disagrees with itself is refused.
  const subject = crypto.createHash('sha256').update(Buffer.from(resource.digest, 'hex')).digest('hex');
  if (!Array.isArray(statement.subject) || statement.subject.length !== 1 || statement.subject[0]?.digest?.sha256 !== subject) {
    throw refuse(`its signature ${signature} holds a statement whose subject does not match its file`);
  }
  return resource.digest;
}

module.exports = { signedDigest, signaturePath, publicKeys };
