#include "errors.h"

#include "addon.h"

namespace choripan::node {

Napi::Error ToJsError(Napi::Env env, ErrorCode code, const std::string& message) {
  const auto name = Napi::String::New(env, std::string(CodeName(code)));
  auto* addon = env.GetInstanceData<Addon>();
  if (addon != nullptr && !addon->error_constructor.IsEmpty()) {
    return Napi::Error(env, addon->error_constructor.New({name, Napi::String::New(env, message)}));
  }
  // Before init(): only js/binding.js calls the addon then, and it calls init() first.
  auto error = Napi::Error::New(env, message);
  error.Set("code", name);
  return error;
}

Napi::Error ToJsError(Napi::Env env, const Error& error) { return ToJsError(env, error.code(), error.what()); }

}  // namespace choripan::node
