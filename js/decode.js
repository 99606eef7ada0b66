'use strict';
// Encoded bytes → RGB(A) pixels with sharp, under the decode policy the artifact records
// (export/imaging.py DecodePolicy): EXIF orientation applied, ICC profile ignored (pixel values as
// stored, as PIL reads them), first frame only, CMYK refused. The result is bit-identical to PIL's.

const sharp = require('sharp');
const { ChoripanError } = require('./errors');

const FORMATS = new Map([['jpeg', 'JPEG'], ['png', 'PNG'], ['webp', 'WEBP']]);
const MAX_PIXELS = 100_000_000; // 10 MB of JPEG can hold far more; 100 MP of RGBA is 400 MB decoded

/**
 * @param {Uint8Array} bytes
 * @returns {Promise<{ pixels: Buffer, width: number, height: number, channels: number }>}
 */
async function decode(bytes) {
  let metadata;
  try {
    metadata = await sharp(bytes).metadata();
  } catch (error) {
    throw new ChoripanError('E_DECODE', `The bytes are not a decodable image (${error.message})`, { cause: error });
  }
  if (!FORMATS.has(metadata.format)) {
    throw new ChoripanError('E_UNSUPPORTED_FORMAT',
      `${String(metadata.format).toUpperCase()} images are not supported; send JPEG, PNG or WebP`);
  }
  if (metadata.space === 'cmyk') {
    throw new ChoripanError('E_UNSUPPORTED_FORMAT', 'CMYK images are not supported; convert the image to RGB');
  }
  if (metadata.width * metadata.height > MAX_PIXELS) {
    throw new ChoripanError('E_TOO_LARGE',
      `The image is ${metadata.width}x${metadata.height}; at most ${MAX_PIXELS / 1e6} megapixels are decoded`);
  }
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

module.exports = { decode, FORMATS, MAX_PIXELS };
