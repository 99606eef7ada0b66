#include "errors.h"

#include "addon.h"

namespace choripan::node {

namespace {

Napi::Error Build(Napi::Env env, ErrorCode code, const std::string& message, Misuse misuse) {
  const auto name = Napi::String::New(env, std::string(CodeName(code)));
  auto* addon = env.GetInstanceData<Addon>();
  if (addon != nullptr && !addon->error_function.IsEmpty()) {
    const auto kind = misuse == Misuse::kType    ? Napi::Value(Napi::String::New(env, "type"))
                      : misuse == Misuse::kRange ? Napi::Value(Napi::String::New(env, "range"))
                                                 : env.Undefined();
    return Napi::Error(env, addon->error_function.Call({name, Napi::String::New(env, message), kind}));
  }
  // Before init(): only js/binding.js calls the addon then, and it calls init() first.
  auto error = Napi::Error::New(env, message);
  error.Set("code", name);
  return error;
}

}  // namespace

Napi::Error ToJsError(Napi::Env env, ErrorCode code, const std::string& message) {
  return Build(env, code, message, Misuse::kNone);
}

Napi::Error ToJsError(Napi::Env env, const Error& error) { return Build(env, error.code(), error.what(), error.misuse()); }

}  // namespace choripan::node
