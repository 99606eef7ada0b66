// Per-environment state (one per main thread or worker_thread): no per-process statics. The one
// registry of this environment's live models, and the one path that stops them all.
#pragma once

#include <napi.h>

#include <unordered_set>

namespace choripan::node {

class ModelWrap;

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);
  ~Addon();

  Napi::FunctionReference model_constructor;
  Napi::FunctionReference request_constructor;
  Napi::FunctionReference error_function;     // js/errors.js codedError(), given by init()
  Napi::FunctionReference received_function;  // js/validate.js received(), given by init()

  void Register(ModelWrap* model) { live_.insert(model); }
  void Forget(ModelWrap* model) { live_.erase(model); }

 private:
  Napi::Value Configure(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value CheckOptions(const Napi::CallbackInfo& info);
  Napi::Value CudaAvailable(const Napi::CallbackInfo& info);
  Napi::Value Cores(const Napi::CallbackInfo& info);
  Napi::Value CpuSupportsIsa(const Napi::CallbackInfo& info);
  Napi::Value DisposeAll(const Napi::CallbackInfo& info);
  void StopAll(bool teardown);
  static void Teardown(void* self);

  napi_env env_;
  std::unordered_set<ModelWrap*> live_;
};

}  // namespace choripan::node
