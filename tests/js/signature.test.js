'use strict';
// Signed artifacts (docs/security.md): signatures made by OpenSSF model signing's own tools — choripan's
// `python -m choripan sign` and the standard's `model_signing sign key` — checked by load()'s trustedKeys
// with Node's crypto, and by the server's CHORIPAN_TRUSTED_KEYS; every way a signature can be wrong is
// refused with E_MODEL_LOAD before the model is read.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');
const choripan = require('choripan');
const { env, root, defaultModelPath, photo, rejection, CAT_LABELS, listening } = require('./helpers');

function keyPair(dir, name, namedCurve = 'P-256') {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve });
  const files = { private: path.join(dir, `${name}.pem`), public: path.join(dir, `${name}.pub`) };
  fs.writeFileSync(files.private, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  fs.writeFileSync(files.public, publicKey.export({ type: 'spki', format: 'pem' }));
  return files;
}

function run(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 300_000 });
  assert.equal(result.status, 0, `${command} ${args.join(' ')}\n${result.stdout}${result.stderr}`);
  return result;
}

describe('load(path, { trustedKeys })', () => {
  let dir;
  let model;
  let keys;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-signature-'));
    keys = { signer: keyPair(dir, 'signer'), other: keyPair(dir, 'other'), wide: keyPair(dir, 'wide', 'P-384') };
    model = path.join(dir, 'model.pt');
    fs.copyFileSync(defaultModelPath, model);
    run(env.python, ['-m', 'choripan', 'sign', model, '--key', keys.signer.private]);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const trusted = (...names) => names.map((name) => fs.readFileSync(keys[name].public));

  test('a model signed by a trusted key loads and answers; the signature names its digest', async () => {
    const loaded = await choripan.load(model, { trustedKeys: trusted('other', 'signer') });
    assert.ok(CAT_LABELS.includes((await loaded.predict(photo('chelsea.png'))).label));
    await loaded.dispose();
    const statement = JSON.parse(Buffer.from(JSON.parse(fs.readFileSync(`${model}.sig`, 'utf8')).dsseEnvelope.payload, 'base64'));
    assert.equal(statement.predicate.resources[0].digest, crypto.createHash('sha256').update(fs.readFileSync(model)).digest('hex'));
  });

  test("a signature made by the standard's own tool (P-384, model_signing sign key) is accepted", async () => {
    const copy = path.join(dir, 'standard.pt');
    fs.copyFileSync(defaultModelPath, copy);
    run(path.join(path.dirname(env.python), 'model_signing'),
      ['sign', 'key', copy, '--private_key', keys.wide.private, '--signature', path.join(dir, 'standard.sig')]);
    const loaded = await choripan.load(copy, { trustedKeys: [crypto.createPublicKey(fs.readFileSync(keys.wide.public))],
      signature: path.join(dir, 'standard.sig') });
    await loaded.dispose();
  });

  test('another key, a missing signature, a changed model or a changed statement → E_MODEL_LOAD', async () => {
    const expectRefusal = async (file, options, message) => {
      const error = await rejection(choripan.load(file, options));
      assert.equal(error.code, 'E_MODEL_LOAD', error.message);
      assert.match(error.message, message);
    };
    await expectRefusal(model, { trustedKeys: trusted('other') }, /was not made by any of the 1 trusted key/);
    await expectRefusal(defaultModelPath, { trustedKeys: trusted('signer') }, /it has no signature \(.*default\.pt\.sig is missing\)/);

    const changed = path.join(dir, 'changed.pt');
    const bytes = fs.readFileSync(model);
    bytes[bytes.length >> 1] ^= 1; // a weight, well inside the archive
    fs.writeFileSync(changed, bytes);
    fs.copyFileSync(`${model}.sig`, `${changed}.sig`);
    await expectRefusal(changed, { trustedKeys: trusted('signer') }, /its SHA-256 is [0-9a-f]{64}, not the [0-9a-f]{64} it must have/);

    // The statement made to name the changed file, the signature kept: the signature no longer holds.
    const bundle = JSON.parse(fs.readFileSync(`${model}.sig`, 'utf8'));
    const statement = JSON.parse(Buffer.from(bundle.dsseEnvelope.payload, 'base64'));
    statement.predicate.resources[0].digest = crypto.createHash('sha256').update(bytes).digest('hex');
    bundle.dsseEnvelope.payload = Buffer.from(JSON.stringify(statement)).toString('base64');
    fs.writeFileSync(`${changed}.sig`, JSON.stringify(bundle));
    await expectRefusal(changed, { trustedKeys: trusted('signer') }, /or the signed statement was altered/);

    fs.writeFileSync(`${changed}.sig`, '{"mediaType": "something else"}');
    await expectRefusal(changed, { trustedKeys: trusted('signer') }, /is not a key-signed model signing bundle/);
    await expectRefusal(model, { trustedKeys: trusted('signer'), sha256: '0'.repeat(64) }, /not the 0{64} that options.sha256 pins/);
  });

  test('malformed trust options are E_INVALID_ARGUMENT', async () => {
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    for (const [options, message] of [
      [{ trustedKeys: [] }, /Expected a non-empty array of PEM public keys/],
      [{ trustedKeys: 'key.pub' }, /Expected a non-empty array of PEM public keys/],
      [{ trustedKeys: ['not a key'] }, /trustedKeys\[0\] is not a public key/],
      [{ trustedKeys: [rsa] }, /trustedKeys\[0\] is not an elliptic-curve public key/],
      [{ signature: `${model}.sig` }, /give trustedKeys too/],
    ]) {
      const error = await rejection(choripan.load(model, options));
      assert.equal(error.code, 'E_INVALID_ARGUMENT', error.message);
      assert.match(error.message, message);
    }
  });

  describe('the server with CHORIPAN_TRUSTED_KEYS', () => {
    const main = path.join(root, 'js', 'server', 'main.js');
    const start = (environment) => spawn(process.execPath, [main], { env: { ...process.env, PORT: '0', ...environment } });

    test('serves a signed model', { timeout: 120_000 }, async () => {
      const child = start({ CHORIPAN_MODEL: model, CHORIPAN_TRUSTED_KEYS: `${keys.other.public}, ${keys.signer.public}` });
      try {
        const port = await listening(child);
        const response = await fetch(`http://127.0.0.1:${port}/predict`, { method: 'POST', body: photo('chelsea.png'), headers: { 'content-type': 'image/png' } });
        assert.equal(response.status, 200);
      } finally {
        child.kill('SIGTERM');
      }
    });

    test('will not start with an unsigned model, or a key file that is not a key', { timeout: 120_000 }, () => {
      const unsigned = spawnSync(process.execPath, [main], { encoding: 'utf8', timeout: 60_000,
        env: { ...process.env, PORT: '0', CHORIPAN_MODEL: defaultModelPath, CHORIPAN_TRUSTED_KEYS: keys.signer.public } });
      assert.equal(unsigned.status, 1, unsigned.stderr);
      assert.match(unsigned.stdout + unsigned.stderr, /it has no signature/);
      const notAKey = spawnSync(process.execPath, [main], { encoding: 'utf8', timeout: 60_000,
        env: { ...process.env, PORT: '0', CHORIPAN_MODEL: model, CHORIPAN_TRUSTED_KEYS: model } });
      assert.equal(notAKey.status, 2, notAKey.stderr);
      assert.match(notAKey.stderr, /^choripan: CHORIPAN_TRUSTED_KEYS: .*model\.pt is not a public key/);
      assert.equal(notAKey.stderr.trim().split('\n').length, 1);
    });
  });
});
