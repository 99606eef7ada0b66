'use strict';
// Node answers like the Python reference predictor (`python -m choripan predict`): the golden file that
// the export wrote holds its top-5 for a fixed set of real photos.

const assert = require('node:assert/strict');
const { test, describe, before, after } = require('node:test');
const choripan = require('choripan');
const path = require('node:path');
const { photo, golden, defaultModelPath, defaultPackagePath } = require('./helpers');

for (const artifact of [defaultModelPath, defaultPackagePath]) {
  describe(`parity with Python on the golden photos: ${path.basename(artifact)}`, () => {
    const expected = golden(artifact);
    let model;
    before(async () => {
      model = await choripan.load(artifact, { maxBatch: 1 });
    });
    after(() => model.dispose());

    test('the golden file belongs to this artifact', () => {
      assert.equal(expected.artifact_checksum, model.metadata.checksum.value);
      assert.ok(expected.photos.length >= 8);
    });

    for (const entry of expected.photos) {
      test(`${entry.file}: same top-5 labels, probabilities within 1e-5`, async () => {
        const result = await model.predict(photo(entry.file), { topK: 5 });
        assert.deepEqual(result.top.map((t) => t.label), entry.top.map((t) => t.label));
        for (const [i, t] of result.top.entries()) {
          assert.ok(Math.abs(t.probability - entry.top[i].probability) < 1e-5,
            `${t.label}: node ${t.probability} vs python ${entry.top[i].probability}`);
        }
      });
    }
  });
}

describe('parity on an exported torchvision model with other preprocessing', () => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const { spawnSync } = require('node:child_process');
  const { env, root } = require('./helpers');
  let model;
  let expected;
  let dir;

  before(async () => {
    // squeezenet1_1 with three classes, bicubic 320 → 300, ImageNet statistics: every knob off the default.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-parity-'));
    const weights = path.join(dir, 'squeezenet.pth');
    const artifact = path.join(dir, 'squeezenet.pt');
    const python = (args) => {
      const run = spawnSync(env.python, args, { cwd: root, encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
    };
    python(['-c', `import torch, torchvision; torch.manual_seed(1); torch.save(torchvision.models.squeezenet1_1(num_classes=3).state_dict(), ${JSON.stringify(weights)})`]);
    python(['-m', 'choripan', 'torchvision', '--arch', 'squeezenet1_1', '--weights', weights, '--labels', 'a,b,c',
      '--out', artifact, '--resize', '320', '--crop', '300', '--interpolation', 'bicubic']);
    expected = golden(artifact);
    model = await choripan.load(artifact);
  });
  after(async () => {
    await model?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('every golden photo: same ranking, probabilities within 1e-5', async () => {
    assert.equal(model.metadata.preprocessing.interpolation, 'bicubic');
    for (const entry of expected.photos) {
      const result = await model.predict(photo(entry.file), { topK: 3 });
      assert.deepEqual(result.top.map((t) => t.label), entry.top.map((t) => t.label), entry.file);
      for (const [i, t] of result.top.entries()) assert.ok(Math.abs(t.probability - entry.top[i].probability) < 1e-5);
    }
  });
});
