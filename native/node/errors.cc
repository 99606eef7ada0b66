#include "errors.h"

namespace choripan::node {

Napi::Error ToJsError(Napi::Env env, ErrorCode code, const std::string& message) {
  auto error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, std::string(CodeName(code))));
  return error;
}

Napi::Error ToJsError(Napi::Env env, const Error& error) {
  return ToJsError(env, error.code(), error.what());
}

}  // namespace choripan::node
