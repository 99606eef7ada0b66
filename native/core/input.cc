#include "input.h"

#include <c10/util/StringUtil.h>

#include <string>

#include "errors.h"

namespace choripan {

void CheckInput(const Input& input, int64_t crop) {
  if (const auto* tensor = std::get_if<at::Tensor>(&input)) {
    if (!tensor->is_cpu() || tensor->scalar_type() != at::kFloat || tensor->dim() != 3 || tensor->size(0) != 3 ||
        tensor->size(1) != crop || tensor->size(2) != crop) {
      throw Error(ErrorCode::kInvalidArgument, "expected a preprocessed float32 CPU tensor of shape [3, " +
                                                   std::to_string(crop) + ", " + std::to_string(crop) +
                                                   "], got " + c10::str(tensor->sizes()));
    }
  }
  if (const auto* jpeg = std::get_if<JpegView>(&input)) CheckJpegView(*jpeg);
}

int64_t InputBytes(const Input& input) {
  if (const auto* image = std::get_if<ImageView>(&input)) return image->height * image->width * image->channels;
  if (const auto* jpeg = std::get_if<JpegView>(&input)) return jpeg->height * jpeg->width * 3;
  return static_cast<int64_t>(std::get<at::Tensor>(input).nbytes());
}

int64_t InputPixels(const Input& input) {
  if (const auto* image = std::get_if<ImageView>(&input)) return image->height * image->width;
  if (const auto* jpeg = std::get_if<JpegView>(&input)) return jpeg->height * jpeg->width;
  return 0;
}

std::optional<Decoding> PrepareInto(const Input& input, const Preprocessing& spec, at::Tensor row) {
  if (const auto* tensor = std::get_if<at::Tensor>(&input)) {
    row.copy_(*tensor);
  } else if (const auto* jpeg = std::get_if<JpegView>(&input)) {
    const auto started = Clock::now();
    const auto decoded = DecodeJpeg(*jpeg);
    const Decoding decoding{started, Milliseconds(Clock::now() - started)};
    PreprocessInto(decoded.image, spec, row);
    return decoding;
  } else {
    PreprocessInto(std::get<ImageView>(input), spec, row);
  }
  return std::nullopt;
}

}  // namespace choripan
