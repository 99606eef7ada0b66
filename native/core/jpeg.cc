#include "jpeg.h"

// jpeglib.h needs size_t and FILE declared first.
#include <cstddef>
#include <cstdio>
#include <csetjmp>

#include <jpeglib.h>

#include <algorithm>
#include <string>

#include "errors.h"

namespace choripan {

namespace {

// As many as libvips tolerates before it calls a JPEG corrupt; PIL tolerates any number.
constexpr long kMaxWarnings = 100;

// libjpeg reports a fatal error by calling error_exit, which must not return: it jumps back to
// DecodeJpeg. Only libjpeg's C frames lie in between, so no destructor is skipped.
struct Failure {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  bool truncated = false;
  ErrorCode code = ErrorCode::kDecode;
  char message[JMSG_LENGTH_MAX] = {};
};

[[noreturn]] void Fail(j_common_ptr info) {
  auto* failure = reinterpret_cast<Failure*>(info->err);
  (*info->err->format_message)(info, failure->message);
  std::longjmp(failure->jump, 1);
}

// Warnings (corrupt but decodable data) are counted, not printed.
void Warn(j_common_ptr info, int level) {
  if (level < 0 && ++info->err->num_warnings >= kMaxWarnings) Fail(info);
}

// The whole JPEG is in memory from the start: libjpeg asking for more means it ends early. libjpeg's
// own memory source would pad it with an end marker and decode grey; PIL and sharp refuse it.
boolean Exhausted(j_decompress_ptr info) {
  auto* failure = reinterpret_cast<Failure*>(info->err);
  failure->truncated = true;
  std::longjmp(failure->jump, 1);
}

void SkipBytes(j_decompress_ptr info, long count) {
  if (count <= 0) return;
  if (static_cast<size_t>(count) > info->src->bytes_in_buffer) Exhausted(info);
  info->src->next_input_byte += count;
  info->src->bytes_in_buffer -= static_cast<size_t>(count);
}

void Nothing(j_decompress_ptr) {}

// Runs libjpeg from header to last row. Returns false (with `failure` filled) where it fails; no C++
// object lives in this frame, so that the long jump back into it skips nothing.
bool Run(jpeg_decompress_struct& info, jpeg_source_mgr& source, Failure& failure, const JpegView& jpeg,
         DecodedJpeg& out) {
  if (setjmp(failure.jump)) return false;
  jpeg_create_decompress(&info);
  info.src = &source;
  jpeg_read_header(&info, TRUE);
  if (info.image_height != jpeg.height || info.image_width != jpeg.width) {
    failure.code = ErrorCode::kInvalidArgument;
    std::snprintf(failure.message, sizeof failure.message, "its frame is %ux%u, not the %lldx%lld its header check read",
                  info.image_width, info.image_height, static_cast<long long>(jpeg.width),
                  static_cast<long long>(jpeg.height));
    return false;
  }
  if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
    failure.code = ErrorCode::kInvalidArgument;
    std::snprintf(failure.message, sizeof failure.message, "CMYK JPEGs are decoded by sharp, not here");
    return false;
  }
  info.out_color_space = info.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&info);
  const size_t stride = static_cast<size_t>(info.output_width) * info.output_components;
  out.pixels.resize(stride * info.output_height);
  JSAMPROW rows[8];
  while (info.output_scanline < info.output_height) {
    const auto first = info.output_scanline;
    const auto count = std::min<JDIMENSION>(8, info.output_height - first);
    for (JDIMENSION i = 0; i < count; ++i) rows[i] = out.pixels.data() + (first + i) * stride;
    jpeg_read_scanlines(&info, rows, count);
  }
  out.image = ImageView{out.pixels.data(), static_cast<int64_t>(info.output_height),
                        static_cast<int64_t>(info.output_width), info.output_components, false};
  // Not jpeg_finish_decompress: it reads on to the end marker, which the image does not need (a JPEG
  // cut just after its last row decodes in PIL and sharp too).
  return true;
}

}  // namespace

void CheckJpegView(const JpegView& jpeg) {
  if (jpeg.height < 1 || jpeg.width < 1 || jpeg.bytes.empty()) {
    throw Error(ErrorCode::kInvalidArgument, "expected JPEG bytes and the size of its frame, at least 1x1");
  }
  if (jpeg.height * jpeg.width > kMaxPixels) {
    throw Error(ErrorCode::kTooLarge, "The image is " + std::to_string(jpeg.width) + "x" + std::to_string(jpeg.height) +
                                          "; " CHORIPAN_MAX_PIXELS_REFUSAL);
  }
}

DecodedJpeg DecodeJpeg(const JpegView& jpeg) {
  CheckJpegView(jpeg);
  jpeg_decompress_struct info{};
  Failure failure;
  info.err = jpeg_std_error(&failure.manager);
  failure.manager.error_exit = Fail;
  failure.manager.emit_message = Warn;
  jpeg_source_mgr source{};
  source.next_input_byte = jpeg.bytes.data();
  source.bytes_in_buffer = jpeg.bytes.size();
  source.init_source = Nothing;
  source.fill_input_buffer = Exhausted;
  source.skip_input_data = SkipBytes;
  source.resync_to_restart = jpeg_resync_to_restart;
  source.term_source = Nothing;
  DecodedJpeg out;
  const bool decoded = Run(info, source, failure, jpeg, out);
  jpeg_destroy_decompress(&info);
  if (decoded) return out;
  if (failure.truncated) throw Error(ErrorCode::kDecode, "The image does not decode (premature end of JPEG data)");
  if (failure.code != ErrorCode::kDecode) throw Error(failure.code, std::string("The JPEG cannot be decoded here: ") + failure.message);
  throw Error(ErrorCode::kDecode, std::string("The image does not decode (") + failure.message + ")");
}

}  // namespace choripan
