'use strict';
// Node answers like the Python reference predictor (`python -m export predict`): the golden file that
// the export wrote holds its top-5 for a fixed set of real photos.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const choripan = require('choripan');
const { photo, golden, defaultModelPath } = require('./helpers');

describe('parity with Python on the golden photos', () => {
  const expected = golden();
  let model;
  before(async () => {
    model = await choripan.load(defaultModelPath, { maxBatch: 1 });
  });
  after(() => model.dispose());

  test('the golden file belongs to this artifact', () => {
    assert.equal(expected.artifact_checksum, model.metadata.checksum.value);
    assert.ok(expected.photos.length >= 8);
  });

  for (const entry of golden().photos) {
    test(`${entry.file}: same top-5 labels, probabilities within 1e-5`, async () => {
      const result = await model.predict(photo(entry.file), { topk: 5 });
      assert.deepEqual(result.top.map((t) => t.label), entry.top.map((t) => t.label));
      for (const [i, t] of result.top.entries()) {
        assert.ok(Math.abs(t.probability - entry.top[i].probability) < 1e-5,
          `${t.label}: node ${t.probability} vs python ${entry.top[i].probability}`);
      }
    });
  }
});
