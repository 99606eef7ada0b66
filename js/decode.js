'use strict';
// Encoded bytes → RGB(A) pixels with sharp, under the decode policy the artifact records
// (export/imaging.py DecodePolicy): EXIF orientation applied, ICC profile ignored (pixel values as
// stored, as PIL reads them), first frame only, CMYK refused. The result is bit-identical to PIL's.

const sharp = require('sharp');
const { ChoripanError } = require('./errors');

const MAX_PIXELS = 100_000_000; // 10 MB of JPEG can hold far more; 100 MP of RGBA is 400 MB decoded

// Only the accepted formats reach sharp: libvips would otherwise parse SVG, TIFF, HEIF, PDF… first.
const ACCEPTED = [
  ['JPEG', (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff],
  ['PNG', (b) => ascii(b, 0, 8) === '\x89PNG\r\n\x1a\n'],
  ['WebP', (b) => ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP'],
];
// Recognised only to say why they are refused.
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

/**
 * Checks the format and size from the header alone, before anything is decoded.
 * @param {Uint8Array} bytes
 * @returns {Promise<{ width: number, height: number, channels: number }>}
 */
async function inspect(bytes) {
  const format = ACCEPTED.find(([, test]) => test(bytes))?.[0];
  if (!format) {
    const refused = REFUSED.find(([, test]) => test(bytes))?.[0];
    if (refused) throw new ChoripanError('E_UNSUPPORTED_FORMAT', `${refused} images are not supported; send JPEG, PNG or WebP`);
    throw new ChoripanError('E_DECODE', 'The bytes are not a JPEG, PNG or WebP image');
  }
  let metadata;
  try {
    metadata = await sharp(bytes).metadata();
  } catch (error) {
    throw new ChoripanError('E_DECODE', `The ${format} image does not decode (${error.message})`, { cause: error });
  }
  if (metadata.space === 'cmyk') {
    throw new ChoripanError('E_UNSUPPORTED_FORMAT', 'CMYK images are not supported; convert the image to RGB');
  }
  if (metadata.width * metadata.height > MAX_PIXELS) {
    throw new ChoripanError('E_TOO_LARGE',
      `The image is ${metadata.width}x${metadata.height}; at most ${MAX_PIXELS / 1e6} megapixels are decoded`);
  }
  return { width: metadata.width, height: metadata.height, channels: metadata.hasAlpha ? 4 : 3 };
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

module.exports = { inspect, decode };
