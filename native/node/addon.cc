// Registers the binding's exports and keeps the environment's registry of live models; the work lives
// in the files beside it.
#include "addon.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <vector>

#include "errors.h"
#include "load_worker.h"
#include "../core/runner.h"
#include "model_wrap.h"
#include "options.h"
#include "request_wrap.h"

namespace choripan::node {

Addon::Addon(Napi::Env env, Napi::Object exports) {
  model_constructor = Napi::Persistent(ModelWrap::Define(env));
  request_constructor = Napi::Persistent(RequestWrap::Define(env));
  auto versions = Napi::Object::New(env);
  versions.Set("libtorch", Napi::String::New(env, TORCH_VERSION));
  DefineAddon(exports, {
                           InstanceMethod("init", &Addon::Configure),
                           InstanceMethod("load", &Addon::Load),
                           InstanceMethod("checkOptions", &Addon::CheckOptions),
                           InstanceMethod("cudaAvailable", &Addon::CudaAvailable),
                           InstanceMethod("availableCores", &Addon::Cores),
                           InstanceMethod("cpuSupports", &Addon::CpuSupportsIsa),
                           InstanceMethod("disposeAll", &Addon::DisposeAll),
                           InstanceValue("versions", versions),
                       });
  // The environment (the process, or a worker_thread) is going away: stop every worker before its
  // completions could reach a dead environment. Whichever of this hook and the instance data's
  // finalizer runs first does it.
  napi_add_env_cleanup_hook(env, &Addon::Teardown, this);
  env_ = env;
}

Addon::~Addon() {
  napi_remove_env_cleanup_hook(env_, &Addon::Teardown, this);
  StopAll(/*teardown=*/true);
}

void Addon::Teardown(void* self) { static_cast<Addon*>(self)->StopAll(/*teardown=*/true); }

// init({ codedError, received }): what builds every error this binding raises (a ChoripanError, or a
// bad call's TypeError or RangeError), and how a message shows a JS value that was refused.
Napi::Value Addon::Configure(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto given = info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(env);
  if (!given.Get("codedError").IsFunction() || !given.Get("received").IsFunction()) {
    throw Napi::TypeError::New(env, "init({ codedError, received }) received malformed arguments");
  }
  error_function = Napi::Persistent(given.Get("codedError").As<Napi::Function>());
  received_function = Napi::Persistent(given.Get("received").As<Napi::Function>());
  return env.Undefined();
}

// load(path: string, options: object): Promise<NativeModel>. The options are read and checked here, by
// the core (a bad one throws); the artifact is read on the libuv pool.
Napi::Value Addon::Load(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) {
    throw ToJsError(info.Env(), ErrorCode::kInvalidArgument, "load(path, options) received malformed arguments");
  }
  const auto options = ReadOptions(info.Env(), info[1]);
  auto* worker = new LoadWorker(info.Env(), info[0].As<Napi::String>(), options);
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

// checkOptions(options: object): void. What load() would refuse in them, refused the same way, before
// anything else is done for the call (js/model.js: a signature is checked first).
Napi::Value Addon::CheckOptions(const Napi::CallbackInfo& info) {
  ReadOptions(info.Env(), info[0]);
  return info.Env().Undefined();
}

Napi::Value Addon::CudaAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), torch::cuda::is_available());
}

// availableCores(): what workers 0 means, the cores this process may use (affinity and cgroup quota).
Napi::Value Addon::Cores(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(AvailableCores()));
}

// cpuSupports(isa: string): whether a package compiled for `isa` (AOTI_CPU_ISA's words) runs here.
Napi::Value Addon::CpuSupportsIsa(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) {
    throw ToJsError(info.Env(), ErrorCode::kInvalidArgument, "cpuSupports(isa) received malformed arguments");
  }
  return Napi::Boolean::New(info.Env(), CpuSupports(info[0].As<Napi::String>().Utf8Value()));
}

// disposeAll(): stops every live model, waiting for running batches. For process exit (js/binding.js),
// where C's exit() would otherwise tear libtorch down under a worker still inside a forward pass.
Napi::Value Addon::DisposeAll(const Napi::CallbackInfo& info) {
  StopAll(/*teardown=*/false);
  return info.Env().Undefined();
}

void Addon::StopAll(bool teardown) {
  const std::vector<ModelWrap*> models(live_.begin(), live_.end());
  if (teardown) live_.clear();  // and the models no longer report to this registry
  for (auto* model : models) model->Stop(/*block=*/true, teardown ? nullptr : this);
}

}  // namespace choripan::node

using ChoripanAddon = choripan::node::Addon;
NODE_API_NAMED_ADDON(choripan, ChoripanAddon)
