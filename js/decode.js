'use strict';
// Encoded bytes → pixels with sharp, under the decode policy the artifact records
// (export/choripan/imaging.py DecodePolicy), so that Node decodes what PIL decodes for the Python reference:
// JPEG, PNG, WebP, GIF (first frame), TIFF (first page) and AVIF where the policy lists them; EXIF
// orientation applied; ICC profiles ignored (pixel values as stored, as PIL reads them); CMYK JPEGs
// handed over as their CMYK samples, which the native core converts as PIL does.
//
// Every limit that the header allows is checked here, synchronously, before any decoding: format, size,
// proportions. JPEG, PNG, WebP and GIF headers are read by hand (they also say whether there is alpha or
// CMYK, or where a GIF's first frame lies, which no size library reports); the others' sizes come from
// image-size. No decoder reports
// these without a trip through the thread pool first (sharp's metadata() is one), and the point is to
// refuse before that trip. Then sharp decodes in one pipeline, except for the common JPEG (upright,
// grey or colour, Huffman-coded): the native core decodes that one itself with libjpeg-turbo, as sharp
// and PIL do, without sharp's trip through the thread pool (native/core/jpeg.h).

const sharp = require('sharp');
const { imageSize } = require('image-size');
const { ChoripanError } = require('./errors');

// 10 MB of JPEG can hold far more than 100 MP; 100 MP of RGBA is 400 MB decoded.
const vocabulary = require('../native/core/vocabulary.json');

const LIMITS = Object.fromEntries(vocabulary.limits.map((l) => [l.name, l]));
const MAX_PIXELS = LIMITS.maxPixels.value;

// Recognised only to say why they are refused: libvips would otherwise parse them.
const REFUSED = [
  ['BMP', (b) => ascii(b, 0, 2) === 'BM'],
  ['PDF', (b) => ascii(b, 0, 5) === '%PDF-'],
  ['SVG', (b) => /^\s*(<\?xml|<svg|<!DOCTYPE svg)/i.test(ascii(b, 0, 256))],
];

function ascii(bytes, start, end) {
  return String.fromCharCode(...bytes.subarray(start, end));
}

function truncated(format) {
  return new ChoripanError('E_DECODE', `The ${format} header is truncated or malformed`);
}

// The EXIF orientation (tag 0x0112 of the first IFD) of an APP1 segment's payload [start, end): 1 when
// the segment is not EXIF or names none, 0 when it cannot be read (then sharp, which reads EXIF, decodes).
function exifOrientation(b, view, start, end) {
  if (ascii(b, start, Math.min(start + 6, end)) !== 'Exif\0\0') return 1;
  const tiff = start + 6;
  if (tiff + 8 > end) return 0;
  const little = ascii(b, tiff, tiff + 2) === 'II';
  if (!little && ascii(b, tiff, tiff + 2) !== 'MM') return 0;
  const ifd = tiff + view.getUint32(tiff + 4, little);
  if (ifd + 2 > end) return 0;
  const count = view.getUint16(ifd, little);
  for (let i = 0, at = ifd + 2; i < count; i++, at += 12) {
    if (at + 12 > end) return 0;
    if (view.getUint16(at, little) === 0x0112) return view.getUint16(at + 8, little);
  }
  return 1;
}

// Frames the core's libjpeg-turbo decodes as sharp's does: baseline, extended and progressive Huffman.
const CORE_FRAMES = [0xc0, 0xc1, 0xc2];

// JPEG: the first start-of-frame segment holds the size and the number of components; EXIF segments
// before the scan, the orientation.
function jpegHeader(b) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let at = 2;
  let frame = null;
  let orientation = 1;
  while (at + 4 <= b.length) {
    if (b[at] !== 0xff) break;
    const marker = b[at + 1];
    if (marker === 0xff) { // fill byte
      at++;
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { // no length
      at += 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // scan data or the end
    const length = view.getUint16(at + 2);
    const isFrame = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isFrame && !frame) {
      if (at + 10 > b.length) break;
      frame = { marker, height: view.getUint16(at + 5), width: view.getUint16(at + 7), components: b[at + 9] };
    }
    if (marker === 0xe1 && orientation === 1) orientation = exifOrientation(b, view, at + 4, Math.min(at + 2 + length, b.length));
    at += 2 + length;
  }
  if (!frame) throw truncated('JPEG');
  const { marker, height, width, components } = frame;
  const inCore = CORE_FRAMES.includes(marker) && (components === 1 || components === 3) && orientation === 1;
  return { format: 'JPEG', height, width, components, inCore };
}

// PNG: IHDR is the first chunk. Colour types 4 and 6 carry alpha; a palette (3) may, through tRNS, and so
// may grey (0) and RGB (2): there tRNS holds a colour key, which libpng turns into alpha.
function pngHeader(b) {
  if (b.length < 26 || ascii(b, 12, 16) !== 'IHDR') throw truncated('PNG');
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const [bitDepth, colourType] = [b[24], b[25]];
  let components = { 0: 1, 2: 3, 3: 4, 4: 2, 6: 4 }[colourType];
  if (!components) throw truncated('PNG');
  // tRNS comes before the first IDAT; chunks are walked by their lengths, so this reads a few headers.
  for (let at = 8; at + 8 <= b.length && !['IDAT', 'IEND'].includes(ascii(b, at + 4, at + 8)); at += 12 + view.getUint32(at)) {
    if (ascii(b, at + 4, at + 8) !== 'tRNS' || colourType === 3) continue;
    if (colourType === 2 && bitDepth === 16) {
      throw new ChoripanError('E_UNSUPPORTED_FORMAT', '16-bit RGB PNG images with a colour key (tRNS) are not taken: '
        + 'the Python reference (PIL) reads them at 8 bits, where the key cannot be matched; convert the image to RGBA');
    }
    components = 4; // sharp hands grey over as RGB: with alpha, four bytes a pixel
  }
  return { format: 'PNG', width: view.getUint32(16), height: view.getUint32(20), components };
}

// WebP: the first chunk is VP8 (lossy), VP8L (lossless) or VP8X (extended, with the canvas size).
function webpHeader(b) {
  if (b.length < 30) throw truncated('WebP');
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const chunk = ascii(b, 12, 16);
  if (chunk === 'VP8 ') {
    return { format: 'WebP', width: view.getUint16(26, true) & 0x3fff, height: view.getUint16(28, true) & 0x3fff, components: 3 };
  }
  if (chunk === 'VP8L') {
    const bits = view.getUint32(21, true);
    return { format: 'WebP', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, components: bits >>> 28 & 1 ? 4 : 3 };
  }
  if (chunk === 'VP8X') {
    const size = (offset) => (b[offset] | (b[offset + 1] << 8) | (b[offset + 2] << 16)) + 1;
    return { format: 'WebP', width: size(24), height: size(27), components: b[20] & 0x10 ? 4 : 3 };
  }
  throw truncated('WebP');
}

// GIF: the logical screen, then the first image descriptor, past the global colour table and any extension
// blocks (a byte that starts no block is skipped, as PIL skips it). A first frame that reaches past the
// screen enlarges it, as PIL, libvips and browsers do: that larger screen is what both sides decode, so it is
// what the limits and the reservation count (image-size reports the screen alone). `frame` says where
// the first frame lies on it: the rest of the screen is transparent (decode()).
function gifHeader(b) {
  if (b.length < 13) throw truncated('GIF');
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let at = 13 + (b[10] & 0x80 ? 3 << ((b[10] & 7) + 1) : 0);
  while (at < b.length && b[at] !== 0x2c && b[at] !== 0x3b) {
    if (b[at] === 0x21) { // an extension: its label, then sub-blocks until an empty one
      for (at += 2; at < b.length && b[at] !== 0; at += b[at] + 1);
    }
    at++;
  }
  if (b[at] !== 0x2c || at + 10 > b.length) throw truncated('GIF');
  const [left, top, width, height] = [1, 3, 5, 7].map((offset) => view.getUint16(at + offset, true));
  if (!(width > 0 && height > 0)) throw new ChoripanError('E_DECODE', 'The GIF\'s first frame is empty');
  return {
    format: 'GIF',
    width: Math.max(view.getUint16(6, true), left + width),
    height: Math.max(view.getUint16(8, true), top + height),
    components: 4,
    frame: { left, top, width, height },
  };
}

// TIFF and AVIF: their size through image-size; four bytes a pixel at most once decoded.
function sizedBy(format) {
  return (b) => {
    let size;
    try {
      size = imageSize(b);
    } catch (error) {
      throw new ChoripanError('E_DECODE', `The ${format} header is truncated or malformed (${error.message})`);
    }
    return { format, width: size.width, height: size.height, components: 4 };
  };
}

// TIFF: the first page's PhotometricInterpretation (tag 262); 5 is CMYK ("separated"), which PIL keeps as
// CMYK and libvips converts through an ICC profile: refused, as the Python reference refuses it. Samples
// other than unsigned integers of 16 bits at most (SampleFormat, tag 339; BitsPerSample, tag 258) are
// refused too: libvips reads float RGB as linear scRGB and converts it, PIL cannot open it, and the two
// read float grey, signed and 32-bit samples differently. libtiff takes the first value for every sample.
function tiffHeader(b) {
  const header = sizedBy('TIFF')(b);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const little = b[0] === 0x49;
  const first = b.length >= 8 ? view.getUint32(4, little) : 0;
  const count = first + 2 <= b.length ? view.getUint16(first, little) : 0;
  // An entry's first value: BYTE (type 1), SHORT (3) or LONG (4), inline when the values fit in four bytes.
  const value = (at) => {
    const [type, n] = [view.getUint16(at + 2, little), view.getUint32(at + 4, little)];
    const size = { 1: 1, 3: 2, 4: 4 }[type];
    const where = n * size <= 4 ? at + 8 : view.getUint32(at + 8, little);
    if (!size || where + size > b.length) return undefined;
    return { 1: () => b[where], 2: () => view.getUint16(where, little), 4: () => view.getUint32(where, little) }[size]();
  };
  for (let i = 0, at = first + 2; i < count && at + 12 <= b.length; i++, at += 12) {
    const tag = view.getUint16(at, little);
    if (tag === 262 && value(at) === 5) {
      throw new ChoripanError('E_UNSUPPORTED_FORMAT', 'CMYK TIFF images are not taken; convert the image to RGB');
    }
    if ((tag === 339 && value(at) !== 1) || (tag === 258 && value(at) > 16)) {
      throw new ChoripanError('E_UNSUPPORTED_FORMAT',
        'TIFF images of float, signed or 32-bit samples are not taken; convert the image to 8 or 16 bits');
    }
  }
  return header;
}

// The brands an ISO media file (HEIF, AVIF) declares in its ftyp box.
function brands(b) {
  const length = b.length >= 8 ? new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0) : 0;
  const found = [];
  for (let at = 8; at + 4 <= Math.min(length, b.length); at += 4) if (at !== 12) found.push(ascii(b, at, at + 4));
  return found;
}

// HEIF holding HEVC (iPhone photos): sharp's libvips has no HEVC decoder, so it is refused for what it is.
function heifHeader(b) {
  const declared = brands(b);
  if (declared.some((brand) => brand === 'avif' || brand === 'avis')) return sizedBy('AVIF')(b);
  throw new ChoripanError('E_UNSUPPORTED_FORMAT',
    `HEIC images (HEIF with HEVC) cannot be decoded here: there is no HEVC decoder; send ${listed(Object.values(POLICY_NAMES))}`);
}

const ACCEPTED = [
  [(b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff, jpegHeader],
  [(b) => ascii(b, 0, 8) === '\x89PNG\r\n\x1a\n', pngHeader],
  [(b) => ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP', webpHeader],
  [(b) => ascii(b, 0, 4) === 'GIF8', gifHeader],
  [(b) => ['II*\0', 'MM\0*'].includes(ascii(b, 0, 4)), tiffHeader],
  [(b) => ascii(b, 4, 8) === 'ftyp', heifHeader],
];

// Each format by its usual name → the name the artifact's decode policy gives it (PIL's).
const POLICY_NAMES = Object.fromEntries(vocabulary.formats.map((f) => [f.name, f.policy]));
// Artifacts exported before the policy named more formats or converted CMYK.
const OLD_POLICY = vocabulary.artifact.decodeBeforePolicy;

/** "JPEG, PNG or WebP": a policy's formats by their usual names, for messages. */
function listed(formats) {
  const names = formats.map((f) => Object.keys(POLICY_NAMES).find((k) => POLICY_NAMES[k] === f) ?? f);
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} or ${names.at(-1)}` : names.join('');
}

/**
 * Format, size and proportions from the header alone, synchronously, before anything is decoded.
 * @param {Uint8Array} bytes
 * @param {{ formats?: string[], cmyk?: string }} [policy] the artifact's decode policy
 * @returns {{ format: string, width: number, height: number, bytes: number, cmyk: boolean, inCore: boolean,
 *   frame?: { left: number, top: number, width: number, height: number } }}
 *   `bytes`: decoded size, at most; `inCore`: a JPEG that the native core decodes itself (upright, grey or
 *   colour, Huffman-coded), skipping decode(); `frame`: where a GIF's first frame lies on its screen
 */
function inspect(bytes, policy = OLD_POLICY) {
  const formats = policy.formats ?? OLD_POLICY.formats;
  const header = ACCEPTED.find(([test]) => test(bytes))?.[1];
  if (!header) {
    const refused = REFUSED.find(([, test]) => test(bytes))?.[0];
    if (refused) throw new ChoripanError('E_UNSUPPORTED_FORMAT', `${refused} images are not supported; send ${listed(formats)}`);
    throw new ChoripanError('E_DECODE', `The bytes are not an image of a known format (${listed(formats)})`);
  }
  const { format, width, height, components, inCore = false, frame } = header(bytes);
  if (!formats.includes(POLICY_NAMES[format])) {
    throw new ChoripanError('E_UNSUPPORTED_FORMAT', `${format} images are not taken by this model's decode policy; send ${listed(formats)}`);
  }
  if (!(width > 0 && height > 0)) throw new ChoripanError('E_DECODE', `The ${format} header declares an empty image`);
  const cmyk = format === 'JPEG' && components === 4;
  if (cmyk && (policy.cmyk ?? OLD_POLICY.cmyk) !== 'convert') {
    throw new ChoripanError('E_UNSUPPORTED_FORMAT', 'CMYK images are not taken by this model\'s decode policy; convert the image to RGB');
  }
  if (width * height > MAX_PIXELS) {
    throw new ChoripanError('E_TOO_LARGE', `The image is ${width}x${height}; ${LIMITS.maxPixels.refusal}`);
  }
  if (Math.max(width, height) > LIMITS.maxAspectRatio.value * Math.min(width, height)) {
    throw new ChoripanError('E_INVALID_ARGUMENT',
      `The image is ${width}x${height}: ${LIMITS.maxAspectRatio.refusal}`);
  }
  // sharp hands grey over as RGB, and grey with alpha as RGBA.
  const perPixel = components === 2 ? 4 : Math.max(3, components);
  return { format, width, height, bytes: width * height * perPixel, cmyk, inCore, frame };
}

const TRANSPARENT = { r: 0, g: 0, b: 0, alpha: 0 };

/**
 * @param {Uint8Array} bytes checked by inspect()
 * @param {{ cmyk: boolean, width: number, height: number, frame?: object }} header what inspect() said
 * @returns {Promise<{ pixels: Buffer, width: number, height: number, channels: number, cmyk: boolean }>}
 */
async function decode(bytes, { cmyk, width, height, frame }) {
  try {
    // The first frame or page only; for CMYK, the samples as stored (the core converts them as PIL does).
    let pipeline = sharp(bytes, { limitInputPixels: MAX_PIXELS, pages: 1 }).rotate();
    // Where a GIF's first frame leaves its screen uncovered, the screen is transparent, whatever colour
    // the GIF names for its background (browsers ignore it too); libvips paints it black unless the GIF
    // has transparency somewhere.
    if (frame && (frame.width < width || frame.height < height)) {
      pipeline = pipeline.extract(frame).extend({ left: frame.left, top: frame.top, right: width - frame.left - frame.width,
        bottom: height - frame.top - frame.height, background: TRANSPARENT });
    }
    pipeline = cmyk ? pipeline.pipelineColourspace('cmyk').toColourspace('cmyk') : pipeline.keepIccProfile();
    const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
    return { pixels: data, width: info.width, height: info.height, channels: info.channels, cmyk };
  } catch (error) {
    // An image larger than its header said, should libvips read a size that inspect() did not.
    if (/exceeds pixel limit/.test(error.message)) {
      throw new ChoripanError('E_TOO_LARGE', `The image is larger than its header said; ${LIMITS.maxPixels.refusal}`, { cause: error });
    }
    throw new ChoripanError('E_DECODE', `The image does not decode (${error.message})`, { cause: error });
  }
}

module.exports = { inspect, decode, MAX_PIXELS };
