// Pixels → model input, mirroring export/choripan/imaging.py:preprocess operation for operation so that Python
// and every binding of this core give the same tensor to the bit.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

#include "metadata.h"
#include "vocabulary.h"

namespace choripan {

// vocabulary.json's limits, where each is described.
inline constexpr int64_t kMaxAspectRatio = CHORIPAN_MAX_ASPECT_RATIO;
inline constexpr int64_t kMaxPixels = CHORIPAN_MAX_PIXELS;

// Decoded pixels, row-major height × width × channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA, or 4
// CMYK with `cmyk`). Only read, never kept: the caller keeps the memory alive until Preprocess returns.
struct ImageView {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  bool cmyk = false;  // CMYK samples as a JPEG stores them, converted to RGB as PIL converts them
};

// float32 [3, crop, crop]. Throws Error(kInvalidArgument) for an empty or out-of-proportion image.
at::Tensor Preprocess(const ImageView& image, const Preprocessing& spec);

// The same, written into `out` (a contiguous float32 [3, crop, crop], typically one row of a batch).
void PreprocessInto(const ImageView& image, const Preprocessing& spec, at::Tensor out);

}  // namespace choripan
