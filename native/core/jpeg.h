// JPEG bytes → pixels with libjpeg-turbo, on the thread that preprocesses them: for the common photo
// (baseline or progressive, grey or colour, upright) this skips a trip through sharp, which costs
// more than the decoding itself. js/decode.js chooses which JPEGs come here; sharp takes the rest.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "preprocess.h"

namespace choripan {

// What the caller's header check said about the JPEG: its first frame's size.
struct JpegView {
  std::span<const uint8_t> bytes;  // only read, never kept: the caller keeps them alive until answered
  int64_t height = 0;
  int64_t width = 0;
};

struct DecodedJpeg {
  std::vector<uint8_t> pixels;  // height × width × channels
  ImageView image;              // over `pixels`
};

// Throws Error(kInvalidArgument) unless there are bytes and a frame of at least 1x1, Error(kTooLarge)
// for a frame over kMaxPixels.
void CheckJpegView(const JpegView& jpeg);

// Decodes as PIL decodes (libjpeg's defaults: integer IDCT, fancy upsampling): 1 channel for grey, 3 for
// colour. Throws Error(kDecode) when the data ends before the image does or libjpeg gives up on it,
// Error(kInvalidArgument) for a frame other than `jpeg`'s size or for CMYK (js/ decodes those with sharp).
DecodedJpeg DecodeJpeg(const JpegView& jpeg);

}  // namespace choripan
