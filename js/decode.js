'use strict';
// Encoded bytes → RGB(A) pixels with sharp, under the decode policy the artifact records
// (export/imaging.py DecodePolicy): EXIF orientation applied, ICC profile ignored (pixel values as
// stored, as PIL reads them), first frame only, CMYK refused. The result is bit-identical to PIL's.
//
// Every limit that the header allows is checked here, synchronously, before any decoding: format, size,
// proportions. The few bytes that say so are read by hand because no decoder reports them without
// first taking a trip through the thread pool (sharp's metadata() is one), and the point is to refuse
// before that trip. Then sharp decodes in one pipeline.

const sharp = require('sharp');
const { ChoripanError } = require('./errors');

const MAX_PIXELS = 100_000_000; // 10 MB of JPEG can hold far more; 100 MP of RGBA is 400 MB decoded

// Recognised only to say why they are refused: libvips would otherwise parse them.
const REFUSED = [
  ['GIF', (b) => ascii(b, 0, 4) === 'GIF8'],
  ['TIFF', (b) => ['II*\0', 'MM\0*'].includes(ascii(b, 0, 4))],
  ['BMP', (b) => ascii(b, 0, 2) === 'BM'],
  ['HEIF/AVIF', (b) => ascii(b, 4, 8) === 'ftyp'],
  ['PDF', (b) => ascii(b, 0, 5) === '%PDF-'],
  ['SVG', (b) => /^\s*(<\?xml|<svg|<!DOCTYPE svg)/i.test(ascii(b, 0, 256))],
];

function ascii(bytes, start, end) {
  return String.fromCharCode(...bytes.subarray(start, end));
}

function truncated(format) {
  return new ChoripanError('E_DECODE', `The ${format} header is truncated or malformed`);
}

// JPEG: the first start-of-frame segment holds the size and the number of components.
function jpegHeader(b) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let at = 2;
  while (at + 4 <= b.length) {
    if (b[at] !== 0xff) throw truncated('JPEG');
    const marker = b[at + 1];
    if (marker === 0xff) { // fill byte
      at++;
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { // no length
      at += 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // scan data or the end, and no frame header before it
    const length = view.getUint16(at + 2);
    const isFrame = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isFrame) {
      if (at + 10 > b.length) break;
      return { format: 'JPEG', height: view.getUint16(at + 5), width: view.getUint16(at + 7), components: b[at + 9] };
    }
    at += 2 + length;
  }
  throw truncated('JPEG');
}

// PNG: IHDR is the first chunk. Colour types 4 and 6 carry alpha; a palette (3) may, through tRNS.
function pngHeader(b) {
  if (b.length < 26 || ascii(b, 12, 16) !== 'IHDR') throw truncated('PNG');
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const colourType = b[25];
  const components = { 0: 1, 2: 3, 3: 4, 4: 2, 6: 4 }[colourType];
  if (!components) throw truncated('PNG');
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

const ACCEPTED = [
  [(b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff, jpegHeader],
  [(b) => ascii(b, 0, 8) === '\x89PNG\r\n\x1a\n', pngHeader],
  [(b) => ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP', webpHeader],
];

/**
 * Format, size and proportions from the header alone, synchronously, before anything is decoded.
 * @param {Uint8Array} bytes
 * @param {number} maxAspectRatio longer side over shorter side (the native core's limit)
 * @returns {{ format: string, width: number, height: number, bytes: number }} `bytes`: decoded size, at most
 */
function inspect(bytes, maxAspectRatio) {
  const header = ACCEPTED.find(([test]) => test(bytes))?.[1];
  if (!header) {
    const refused = REFUSED.find(([, test]) => test(bytes))?.[0];
    if (refused) throw new ChoripanError('E_UNSUPPORTED_FORMAT', `${refused} images are not supported; send JPEG, PNG or WebP`);
    throw new ChoripanError('E_DECODE', 'The bytes are not a JPEG, PNG or WebP image');
  }
  const { format, width, height, components } = header(bytes);
  if (!(width > 0 && height > 0)) throw new ChoripanError('E_DECODE', `The ${format} header declares an empty image`);
  if (format === 'JPEG' && components === 4) {
    throw new ChoripanError('E_UNSUPPORTED_FORMAT', 'CMYK images are not supported; convert the image to RGB');
  }
  if (width * height > MAX_PIXELS) {
    throw new ChoripanError('E_TOO_LARGE', `The image is ${width}x${height}; at most ${MAX_PIXELS / 1e6} megapixels are decoded`);
  }
  if (Math.max(width, height) > maxAspectRatio * Math.min(width, height)) {
    throw new ChoripanError('E_INVALID_ARGUMENT',
      `The image is ${width}x${height}: aspect ratios beyond ${maxAspectRatio}:1 are refused`);
  }
  return { format, width, height, bytes: width * height * Math.max(3, components) };
}

/**
 * @param {Uint8Array} bytes checked by inspect()
 * @returns {Promise<{ pixels: Buffer, width: number, height: number, channels: number }>}
 */
async function decode(bytes) {
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: MAX_PIXELS })
      .rotate()
      .keepIccProfile()
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { pixels: data, width: info.width, height: info.height, channels: info.channels };
  } catch (error) {
    throw new ChoripanError('E_DECODE', `The image does not decode (${error.message})`, { cause: error });
  }
}

module.exports = { inspect, decode, MAX_PIXELS };
