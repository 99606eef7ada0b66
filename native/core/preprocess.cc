#include "preprocess.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "errors.h"

namespace choripan {

namespace {
constexpr int64_t kCompositeBandPixels = 1 << 18;
}  // namespace

at::Tensor Preprocess(const ImageView& image, const Preprocessing& spec) {
  auto out = at::empty({3, spec.crop, spec.crop}, at::kFloat);
  PreprocessInto(image, spec, out);
  return out;
}

void PreprocessInto(const ImageView& image, const Preprocessing& spec, at::Tensor out) {
  const auto [height, width, channels] = std::tuple(image.height, image.width, image.channels);
  if (image.data == nullptr || height < 1 || width < 1 || channels < 1 || channels > 4) {
    throw Error(ErrorCode::kInvalidArgument, "expected pixels of shape (height, width, 1-4), got (" +
                                                 std::to_string(height) + ", " + std::to_string(width) +
                                                 ", " + std::to_string(channels) + ")");
  }
  const int64_t shorter = std::min(height, width);
  const int64_t longer = std::max(height, width);
  if (longer > kMaxAspectRatio * shorter) {
    throw Error(ErrorCode::kInvalidArgument,
                "the image is " + std::to_string(width) + "x" + std::to_string(height) +
                    ": aspect ratios beyond " + std::to_string(kMaxAspectRatio) + ":1 are refused");
  }

  // A view of the caller's memory: every step below writes a new tensor, so nothing outlives it.
  const auto pixels = at::from_blob(const_cast<uint8_t*>(image.data), {height, width, channels}, at::kByte);
  const int64_t colours = channels <= 2 ? 1 : 3;
  at::Tensor x;
  if (channels == 1 || channels == 3) {
    x = pixels.expand({height, width, 3});
  } else {
    // Over the background, a band of rows at a time: the int32 arithmetic on a whole photo would take
    // some 40 bytes per pixel at once.
    x = at::empty({height, width, 3}, at::kByte);
    const auto background = at::tensor(std::vector<int32_t>(spec.background.begin(), spec.background.end()),
                                       at::kInt);
    const int64_t band = std::max<int64_t>(1, kCompositeBandPixels / width);
    for (int64_t row = 0; row < height; row += band) {
      const int64_t rows = std::min(band, height - row);
      const auto chunk = pixels.narrow(0, row, rows);
      const auto colour = chunk.narrow(2, 0, colours).expand({rows, width, 3}).to(at::kInt);
      const auto alpha = chunk.narrow(2, colours, 1).to(at::kInt);
      x.narrow(0, row, rows).copy_((colour * alpha + background * (255 - alpha) + 127).div(255, "floor"));
    }
  }
  x = x.contiguous().permute({2, 0, 1}).unsqueeze(0);

  // torchvision's rule for the longer side: floor(resize * long / short), computed in double.
  const auto new_longer =
      static_cast<int64_t>(static_cast<double>(spec.resize) * static_cast<double>(longer) /
                           static_cast<double>(shorter));
  const int64_t new_height = height <= width ? spec.resize : new_longer;
  const int64_t new_width = height <= width ? new_longer : spec.resize;
  x = spec.interpolation == Interpolation::kBicubic
          ? at::_upsample_bicubic2d_aa(x, {new_height, new_width}, /*align_corners=*/false)
          : at::_upsample_bilinear2d_aa(x, {new_height, new_width}, /*align_corners=*/false);
  // Python's round() (halves to even, as torchvision's CenterCrop): nearbyint in the default mode.
  const auto top = static_cast<int64_t>(std::nearbyint(static_cast<double>(new_height - spec.crop) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint(static_cast<double>(new_width - spec.crop) / 2.0));
  x = x[0].narrow(1, top, spec.crop).narrow(2, left, spec.crop);

  auto mean = at::tensor(std::vector<float>(spec.mean.begin(), spec.mean.end())).view({3, 1, 1});
  auto std = at::tensor(std::vector<float>(spec.std.begin(), spec.std.end())).view({3, 1, 1});
  at::div_out(out, x.to(at::kFloat).div(255).sub(mean), std);
}

}  // namespace choripan
