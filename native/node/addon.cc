// Registers the binding's exports; the work lives in the files beside it.
#include "addon.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include "load_worker.h"
#include "model_wrap.h"

namespace choripan::node {

Addon::Addon(Napi::Env env, Napi::Object exports) {
  model_constructor = Napi::Persistent(ModelWrap::Define(env));
  auto versions = Napi::Object::New(env);
  versions.Set("libtorch", Napi::String::New(env, TORCH_VERSION));
  auto limits = Napi::Object::New(env);
  limits.Set("maxAspectRatio", Napi::Number::New(env, static_cast<double>(kMaxAspectRatio)));
  DefineAddon(exports, {
                           InstanceMethod("load", &Addon::Load),
                           InstanceMethod("cudaAvailable", &Addon::CudaAvailable),
                           InstanceValue("versions", versions),
                           InstanceValue("limits", limits),
                       });
}

// load(path: string, options: NativeOptions): Promise<NativeModel>. js/ has validated both.
Napi::Value Addon::Load(const Napi::CallbackInfo& info) {
  auto* worker = new LoadWorker(info.Env(), info[0].As<Napi::String>(), info[1].As<Napi::Object>());
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Addon::CudaAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), torch::cuda::is_available());
}

}  // namespace choripan::node

using ChoripanAddon = choripan::node::Addon;
NODE_API_NAMED_ADDON(choripan, ChoripanAddon)
