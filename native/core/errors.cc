#include "errors.h"

namespace choripan {

std::string_view CodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "E_INVALID_ARGUMENT";
    case ErrorCode::kDecode: return "E_DECODE";
    case ErrorCode::kUnsupportedFormat: return "E_UNSUPPORTED_FORMAT";
    case ErrorCode::kTooLarge: return "E_TOO_LARGE";
    case ErrorCode::kQueueFull: return "E_QUEUE_FULL";
    case ErrorCode::kTimeout: return "E_TIMEOUT";
    case ErrorCode::kAborted: return "E_ABORTED";
    case ErrorCode::kDisposed: return "E_DISPOSED";
    case ErrorCode::kModelLoad: return "E_MODEL_LOAD";
    case ErrorCode::kDevice: return "E_DEVICE";
    case ErrorCode::kInternal: return "E_INTERNAL";
  }
  return "E_INTERNAL";
}

std::string FirstLine(std::string_view message) {
  auto end = message.find('\n');
  return std::string(message.substr(0, end));
}

}  // namespace choripan
