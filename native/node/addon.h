// Per-environment state (one per main thread or worker_thread): no per-process statics.
#pragma once

#include <napi.h>

namespace choripan::node {

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);

  Napi::FunctionReference model_constructor;

 private:
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value CudaAvailable(const Napi::CallbackInfo& info);
};

}  // namespace choripan::node
