#include "errors.h"

#include <c10/util/Exception.h>

namespace choripan {

std::string_view CodeName(ErrorCode code) {
  switch (code) {
#define CHORIPAN_ERROR_NAME(name, text) \
  case ErrorCode::k##name:              \
    return text;
    CHORIPAN_ERROR_CODES(CHORIPAN_ERROR_NAME)
#undef CHORIPAN_ERROR_NAME
  }
  return "E_INTERNAL";
}

Error ModelLoadError(const std::string& path, const std::string& reason) {
  return Error(ErrorCode::kModelLoad, "cannot load model " + path + ": " + reason);
}

std::string FirstLine(std::string_view message) {
  auto end = message.find('\n');
  return std::string(message.substr(0, end));
}

namespace {

std::string DescribeAsIs(const std::exception& error) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&error)) {
    return FirstLine(c10->what_without_backtrace());
  }
  // The TorchScript interpreter puts a TorchScript traceback first and the reason last.
  const std::string_view message = error.what();
  if (message.starts_with("The following operation failed in the TorchScript interpreter")) {
    auto end = message.find_last_not_of("\n ");
    auto start = message.rfind('\n', end);
    return std::string(message.substr(start == std::string_view::npos ? 0 : start + 1, end - start));
  }
  return FirstLine(message);
}

}  // namespace

std::string Describe(const std::exception& error) {
  const auto described = DescribeAsIs(error);
  // Some of libtorch's checks throw with an empty message: say so rather than nothing.
  if (described.find_first_not_of(" \t") == std::string::npos) return "libtorch refused it without giving a reason";
  return described;
}

}  // namespace choripan
