// The error vocabulary shared by every layer: each failure carries a stable code that the bindings
// expose unchanged (JS `error.code`, Python `choripan_core.Error.code`).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "vocabulary.h"

namespace choripan {

// The codes vocabulary.json lists for the core: kInvalidArgument, kDecode, …
enum class ErrorCode {
#define CHORIPAN_ERROR_ENUM(name, code) k##name,
  CHORIPAN_ERROR_CODES(CHORIPAN_ERROR_ENUM)
#undef CHORIPAN_ERROR_ENUM
};

// "E_INVALID_ARGUMENT", "E_QUEUE_FULL", …
std::string_view CodeName(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// "cannot load model PATH: REASON": every load failure says which file and why, in this one shape.
Error ModelLoadError(const std::string& path, const std::string& reason);

// The first line of a libtorch message: the rest is a C++ backtrace that means nothing to a user.
std::string FirstLine(std::string_view message);

// What went wrong, in one line, for any exception libtorch throws.
std::string Describe(const std::exception& error);

}  // namespace choripan
