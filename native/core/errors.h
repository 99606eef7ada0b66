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

// Which bad call a kInvalidArgument of an option's value is, for the bindings, whose languages tell the
// two apart (JS throws a TypeError or a RangeError, as Node's own APIs do; Python raises a TypeError or a
// ValueError): a value of another kind (type, name, form) or one of the right type out of its range.
// kNone: not a caller's misuse, or not told.
enum class Misuse { kNone, kType, kRange };

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  // A bad call: kInvalidArgument, told which kind.
  Error(Misuse misuse, const std::string& message)
      : std::runtime_error(message), code_(ErrorCode::kInvalidArgument), misuse_(misuse) {}
  ErrorCode code() const { return code_; }
  Misuse misuse() const { return misuse_; }

 private:
  ErrorCode code_;
  Misuse misuse_ = Misuse::kNone;
};

// "cannot load model PATH: REASON": every load failure says which file and why, in this one shape.
Error ModelLoadError(const std::string& path, const std::string& reason);

// The first line of a libtorch message: the rest is a C++ backtrace that means nothing to a user.
std::string FirstLine(std::string_view message);

// What went wrong, in one line, for any exception libtorch throws.
std::string Describe(const std::exception& error);

}  // namespace choripan
