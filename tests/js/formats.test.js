'use strict';
// Every format users upload, under one decode policy on both sides: Node (sharp) answers like the Python
// reference (`python -m choripan predict --json`, PIL) on files made from real photos. Where both decode
// to the same pixels the probabilities agree within 1e-5: GIF, its first frame smaller or larger than its
// screen; TIFF of 1, 8 and 16 bits, grey, palette, alpha, several pages; PNG, WebP and JPEG turned by EXIF;
// PNG colour keys; CMYK and YCCK JPEG; and the JPEGs that the native core decodes itself (baseline,
// progressive, grey, 4:4:4). AVIF's YUV conversion differs between libvips and libavif, and its measured
// bound is asserted instead. What one side refuses, the other refuses with the same code.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');
const choripan = require('choripan');
const { env, root, defaultModelPath, photoPath, rejection, CAT_LABELS } = require('./helpers');

// Made by PIL from scikit-image's photos: name → how.
const MAKE = `
import sys
import imagecodecs
import numpy as np
import tifffile
from PIL import Image
out, chelsea, coffee, astronaut = sys.argv[1:5]
cat = Image.open(chelsea).convert("RGB")
cup = Image.open(coffee).convert("RGB")
cat.convert("P", palette=Image.ADAPTIVE).save(f"{out}/palette.gif")
transparent = cat.convert("RGBA")
alpha = np.asarray(transparent).copy(); alpha[:, :150, 3] = 0
Image.fromarray(alpha).convert("P", palette=Image.ADAPTIVE).save(f"{out}/transparent.gif", transparency=0)
cup.convert("P", palette=Image.ADAPTIVE).save(f"{out}/animated.gif", save_all=True,
    append_images=[cat.convert("P", palette=Image.ADAPTIVE)], duration=100)
cat.save(f"{out}/rgb.tiff")
cat.convert("L").save(f"{out}/grey.tiff")
cat.convert("RGBA").save(f"{out}/rgba.tiff", compression="tiff_lzw")
Image.fromarray((np.asarray(cat.convert("L")).astype(np.uint16) * 257)).save(f"{out}/grey16.tiff")
cup.save(f"{out}/pages.tiff", save_all=True, append_images=[cat])
cat.convert("CMYK").save(f"{out}/cmyk.jpg", quality=95)
Image.open(astronaut).convert("RGB").convert("CMYK").save(f"{out}/cmyk-astronaut.jpg", quality=90)
la = cat.convert("LA"); la.putalpha(Image.linear_gradient("L").resize(cat.size)); la.save(f"{out}/grey-alpha.tiff")
cat.convert("P", palette=Image.ADAPTIVE).save(f"{out}/palette.tiff")
cat.convert("1").save(f"{out}/bilevel.tiff")
sixteen = np.asarray(cat.convert("RGBA")).astype(np.uint16) * 257
tifffile.imwrite(f"{out}/rgb16.tiff", sixteen[..., :3], photometric="rgb")
tifffile.imwrite(f"{out}/rgba16.tiff", sixteen, photometric="rgb", extrasamples=["unassalpha"])
turned = Image.Exif(); turned[0x0112] = 6  # EXIF orientation: rotate 90° to display
for name in ("turned.tiff", "turned.webp", "turned.png", "turned.jpg"):
    cat.save(f"{out}/{name}", exif=turned)
cat.save(f"{out}/cat.jpg", quality=90)
cat.save(f"{out}/progressive.jpg", quality=90, progressive=True)
cat.convert("L").save(f"{out}/grey.jpg", quality=90)
cat.save(f"{out}/cat444.jpg", quality=95, subsampling=0)
# YCCK, as Photoshop writes CMYK: Adobe's inverted samples, in YCCK (PIL cannot write it).
inverted = 255 - np.asarray(cat.convert("CMYK"))
open(f"{out}/ycck.jpg", "wb").write(imagecodecs.jpeg8_encode(inverted, 95, colorspace="CMYK", outcolorspace="YCCK"))
cat.save(f"{out}/cat.avif", quality=90)
cup.save(f"{out}/coffee.avif", quality=80)
`;

// Decoded by the native core (libjpeg-turbo) rather than sharp: js/decode.js inspect() says `inCore`.
const CORE_JPEGS = ['cat.jpg', 'progressive.jpg', 'grey.jpg', 'cat444.jpg'];
const EXACT = ['palette.gif', 'transparent.gif', 'animated.gif', 'rgb.tiff', 'grey.tiff', 'rgba.tiff', 'grey16.tiff',
  'pages.tiff', 'grey-alpha.tiff', 'palette.tiff', 'bilevel.tiff', 'rgb16.tiff', 'rgba16.tiff', 'turned.tiff', 'turned.webp',
  'turned.png', 'turned.jpg', 'cmyk.jpg', 'cmyk-astronaut.jpg', 'ycck.jpg', ...CORE_JPEGS,
  // Made by tests/python/policy_images.py: colour keys, GIF frames that do not match their screen.
  'key-rgb.png', 'key-grey.png', 'key-grey16.png', 'key-grey4.png', 'small-frame.gif', 'large-frame.gif'];
// Made there too, and refused by both sides.
const REFUSED_BOTH = { 'float.tiff': 'E_UNSUPPORTED_FORMAT', 'half-float.tiff': 'E_UNSUPPORTED_FORMAT',
  'key-rgb16.png': 'E_UNSUPPORTED_FORMAT', 'empty.png': 'E_INVALID_ARGUMENT' };
const AVIF = ['cat.avif', 'coffee.avif'];
const AVIF_BOUND = 0.03; // measured: 0.012 on the cat (libvips' and libavif's YUV → RGB differ by a level or two)

describe('formats: Node equals the Python reference', () => {
  let dir;
  let model;
  let reference;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-formats-'));
    const made = spawnSync(env.python, ['-c', MAKE, dir, photoPath('chelsea.png'), photoPath('coffee.png'), photoPath('astronaut.png')],
      { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const policy = spawnSync(env.python, ['-m', 'tests.python.policy_images', dir], { cwd: root, encoding: 'utf8' });
    assert.equal(policy.status, 0, policy.stderr);
    const files = [...EXACT, ...AVIF].map((name) => path.join(dir, name));
    const run = spawnSync(env.python, ['-m', 'choripan', 'predict', '--model', defaultModelPath, '--json', ...files],
      { cwd: root, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    reference = Object.fromEntries(run.stdout.trim().split('\n').map((line) => JSON.parse(line)).map((r) => [path.basename(r.file), r]));
    model = await choripan.load(defaultModelPath, { workers: 1 });
  });
  after(async () => {
    await model?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const name of [...EXACT, ...AVIF]) {
    test(`${name}: the same top-5, probabilities within ${AVIF.includes(name) ? AVIF_BOUND : 1e-5}`, async () => {
      const node = await model.predict(fs.readFileSync(path.join(dir, name)));
      const python = reference[name];
      assert.deepEqual(node.top.map((t) => t.label), python.top.map((t) => t.label));
      for (const [i, t] of node.top.entries()) {
        assert.ok(Math.abs(t.probability - python.top[i].probability) <= (AVIF.includes(name) ? AVIF_BOUND : 1e-5),
          `${t.label}: node ${t.probability}, python ${python.top[i].probability}`);
      }
    });
  }

  test('what one side refuses, the other refuses with the same code', async () => {
    // The reference predictor itself, on each file (the command line stops at the first refusal).
    const refuse = `
import json, sys
from choripan.errors import ExportError
from choripan.predictor import Predictor
predictor = Predictor(sys.argv[1])
for path in sys.argv[2:]:
    try:
        predictor.predict(path)
        print(json.dumps({"code": None}))
    except ExportError as error:
        print(json.dumps({"code": error.code, "message": str(error)}))
`;
    const names = Object.keys(REFUSED_BOTH);
    const run = spawnSync(env.python, ['-c', refuse, defaultModelPath, ...names.map((name) => path.join(dir, name))],
      { cwd: root, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const python = run.stdout.trim().split('\n').map((line) => JSON.parse(line));
    for (const [i, name] of names.entries()) {
      const node = await rejection(model.predict(fs.readFileSync(path.join(dir, name))));
      assert.equal(node.code, REFUSED_BOTH[name], `${name} in Node: ${node.message}`);
      assert.equal(python[i].code, REFUSED_BOTH[name], `${name} in Python: ${python[i].message}`);
    }
  });

  test('inspect() announces at least the bytes that sharp hands over: grey with a colour key is RGBA', async () => {
    const { inspect, decode } = require('../../js/decode');
    const policy = model.metadata.preprocessing.decode;
    for (const name of EXACT.filter((n) => !CORE_JPEGS.includes(n))) {
      const bytes = fs.readFileSync(path.join(dir, name));
      const header = inspect(bytes, policy);
      const { pixels } = await decode(bytes, header);
      assert.ok(pixels.length <= header.bytes, `${name}: ${pixels.length} bytes decoded, ${header.bytes} announced`);
    }
  });

  test('the core decodes the upright grey and colour Huffman JPEGs; sharp the turned, CMYK and YCCK ones', () => {
    const { inspect } = require('../../js/decode');
    const policy = model.metadata.preprocessing.decode;
    for (const name of CORE_JPEGS) assert.equal(inspect(fs.readFileSync(path.join(dir, name)), policy).inCore, true, name);
    for (const name of ['turned.jpg', 'cmyk.jpg', 'ycck.jpg']) {
      assert.equal(inspect(fs.readFileSync(path.join(dir, name)), policy).inCore, false, name);
    }
  });

  test('a JPEG the core decodes answers exactly as its pixels decoded by sharp do', async () => {
    const sharp = require('sharp');
    for (const name of CORE_JPEGS) {
      const jpeg = fs.readFileSync(path.join(dir, name));
      const png = await sharp(jpeg).keepIccProfile().png().toBuffer(); // lossless: sharp's pixels, as PNG
      assert.deepEqual(await model.probabilities(jpeg), await model.probabilities(png), name);
    }
  });

  test('the first frame of a GIF and the first page of a TIFF, on both sides', () => {
    assert.equal(reference['animated.gif'].label, 'espresso');
    assert.equal(reference['pages.tiff'].label, 'espresso');
  });

  test('EXIF orientation is applied in every format, and CMYK and YCCK read as the cat they are', () => {
    // Turned on its side, the cat reads differently from the upright one; all three alike.
    const upright = reference['rgb.tiff'].top.map((t) => t.label);
    for (const name of ['turned.tiff', 'turned.webp', 'turned.png', 'turned.jpg']) assert.notDeepEqual(reference[name].top.map((t) => t.label), upright, name);
    assert.deepEqual(reference['turned.png'].top, reference['turned.tiff'].top); // both lossless: the same pixels
    for (const name of ['cmyk.jpg', 'ycck.jpg', 'rgb16.tiff']) assert.ok(CAT_LABELS.includes(reference[name].label), `${name}: ${reference[name].label}`);
  });
});

describe('bombs', () => {
  test('a header declaring too many pixels, in every format, is E_TOO_LARGE; a frame larger than its GIF screen too', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-bombs-'));
    try {
      const made = spawnSync(env.python, ['-m', 'tests.python.bombs', dir], { cwd: root, encoding: 'utf8' });
      assert.equal(made.status, 0, made.stderr);
      const names = fs.readdirSync(dir).sort();
      assert.deepEqual(names, ['big-frame.gif', 'huge-frame.gif', 'huge-screen.gif', 'huge.jpg', 'huge.png', 'huge.tiff', 'huge.webp']);
      const { inspect } = require('../../js/decode');
      const policy = (await choripan.getDefaultModel()).metadata.preprocessing.decode;
      for (const name of names) {
        const bytes = fs.readFileSync(path.join(dir, name));
        const error = await rejection(choripan.predict(bytes));
        assert.equal(error.code, 'E_TOO_LARGE', `${name}: ${error.message}`);
        assert.match(error.message, /100 megapixels/);
        // From the header, before any decoding: a GIF's first frame counts where it reaches past the screen.
        assert.throws(() => inspect(bytes, policy), { code: 'E_TOO_LARGE' }, name);
      }
      assert.ok(CAT_LABELS.includes((await choripan.predict(fs.readFileSync(photoPath('chelsea.png')))).label));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a GIF frame larger than its screen', () => {
  // 8 at once, each a 3000x3000 frame whose header says the screen is 100x100, against 8 whose header says
  // 3000x3000, under a pending budget that holds one: the liars must be counted at their real size too.
  const child = `
const fs = require('node:fs');
const choripan = require(process.argv[1]);
(async () => {
  const model = await choripan.load(process.argv[2], { workers: 1, maxPendingBytes: 64 * 2 ** 20 });
  const bytes = fs.readFileSync(process.argv[3]);
  const settled = await Promise.allSettled(Array.from({ length: 8 }, () => model.predict(bytes)));
  const outcomes = settled.map((s) => (s.status === 'fulfilled' ? s.value.label : s.reason.code));
  await model.dispose();
  console.log(JSON.stringify({ outcomes, maxRssMb: process.resourceUsage().maxRSS / 1024 }));
})();
`;
  const make = `
import sys
from tests.python.policy_images import gif_frame_beyond_screen
open(sys.argv[1], "wb").write(gif_frame_beyond_screen(3000, 3000))
open(sys.argv[2], "wb").write(gif_frame_beyond_screen(3000, 100))
`;

  test('is counted at its real size: 8 at once answer and peak as 8 honest ones do', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-frame-'));
    try {
      const [honest, liar] = [path.join(dir, 'honest.gif'), path.join(dir, 'liar.gif')];
      const made = spawnSync(env.python, ['-c', make, honest, liar], { cwd: root, encoding: 'utf8' });
      assert.equal(made.status, 0, made.stderr);
      const run = (file) => {
        const ran = spawnSync(process.execPath, ['-e', child, root, defaultModelPath, file], { cwd: root, encoding: 'utf8' });
        assert.equal(ran.status, 0, ran.stderr);
        return JSON.parse(ran.stdout);
      };
      const [truth, lie] = [run(honest), run(liar)];
      assert.equal(truth.outcomes.filter((o) => o === 'E_QUEUE_FULL').length, 7, JSON.stringify(truth));
      assert.deepEqual(lie.outcomes, truth.outcomes);
      assert.ok(lie.maxRssMb < truth.maxRssMb + 64, `liars peaked at ${lie.maxRssMb} MB, honest ones at ${truth.maxRssMb} MB`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('formats that are refused, and why', () => {
  test('HEIC (HEVC) says that there is no HEVC decoder; CMYK TIFF is refused; SVG, PDF and BMP are never rendered', async () => {
    const model = await choripan.load(defaultModelPath, { workers: 1 });
    try {
      const box = (type, body) => Buffer.concat([Buffer.from([0, 0, 0, 8 + body.length]), Buffer.from(type), body]);
      const heic = Buffer.concat([box('ftyp', Buffer.from('heic\0\0\0\0mif1heic')), box('meta', Buffer.alloc(8))]);
      const error = await rejection(model.predict(heic));
      assert.equal(error.code, 'E_UNSUPPORTED_FORMAT');
      assert.match(error.message, /HEIC .*no HEVC decoder/);
      const sharp = require('sharp');
      const cmykTiff = await sharp(photoPath('chelsea.png')).toColourspace('cmyk').tiff().toBuffer();
      const tiff = await rejection(model.predict(cmykTiff)); // PIL keeps CMYK, libvips converts it: refused on both sides
      assert.equal(tiff.code, 'E_UNSUPPORTED_FORMAT');
      assert.match(tiff.message, /CMYK TIFF/);
      for (const [bytes, name] of [[Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'), 'SVG'],
        [Buffer.from('%PDF-1.7\n'), 'PDF'], [Buffer.concat([Buffer.from('BM'), Buffer.alloc(60)]), 'BMP']]) {
        const refused = await rejection(model.predict(bytes));
        assert.equal(refused.code, 'E_UNSUPPORTED_FORMAT');
        assert.match(refused.message, new RegExp(`^${name} images are not supported`));
      }
    } finally {
      await model.dispose();
    }
  });
});
