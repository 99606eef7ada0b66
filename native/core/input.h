// What a request is, and what it becomes on the way to a forward pass: decoded pixels, a JPEG to decode
// (see jpeg.h) or an already preprocessed float [3, crop, crop] tensor, each made into one row of a
// batch by PrepareInto.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <optional>
#include <variant>

#include "jpeg.h"
#include "preprocess.h"
#include "statistics.h"

namespace choripan {

using Input = std::variant<ImageView, JpegView, at::Tensor>;

// About a forward pass's worth of resizing on one core: images larger than this are prepared on the
// model's preprocessing thread before they join the queue, so that a huge image never holds up the
// small ones behind it.
inline constexpr int64_t kOffWorkerPixels = int64_t{1} << 22;

// Throws Error(kInvalidArgument) for an input no row could be made of (a tensor of another shape, a
// JPEG whose declared size is impossible).
void CheckInput(const Input& input, int64_t crop);

// What an input holds in memory once decoded: what js/ reserved for it (decode.js inspect).
int64_t InputBytes(const Input& input);

// Decoded pixels (0 for a tensor): whether it is prepared off the workers (kOffWorkerPixels).
int64_t InputPixels(const Input& input);

// When the core decoded a JPEG, and for how long: the decode step of a request's trace.
struct Decoding {
  Clock::time_point started;
  double ms = 0;
};

// The input as a preprocessed row: a JPEG decoded, pixels composited, resized, cropped and normalised
// into `row` [3, crop, crop]; a tensor copied. Returns the JPEG's decoding, nullopt for the others.
// Throws Error(kDecode | kTooLarge | kInvalidArgument).
std::optional<Decoding> PrepareInto(const Input& input, const Preprocessing& spec, at::Tensor row);

}  // namespace choripan
