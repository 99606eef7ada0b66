// The JS face of choripan::Model. Completions come back from worker threads through one
// thread-safe function per model; the wrapper stays alive while any request is pending.
#pragma once

#include <napi.h>

#include <memory>

#include "../core/model.h"

namespace choripan::node {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Create(Napi::Env env, std::shared_ptr<Model> model);

  explicit ModelWrap(const Napi::CallbackInfo& info);
  ~ModelWrap() override;

 private:
  // One predict call: the promise to settle and the pixel buffer pinned until a worker has read it.
  struct Job {
    Napi::Promise::Deferred deferred;
    Napi::Reference<Napi::Value> pixels;
  };
  struct Delivery {
    Job* job;
    Outcome outcome;
  };
  static void Deliver(Napi::Env env, Napi::Function unused, ModelWrap* self, Delivery* delivery);
  using Completions = Napi::TypedThreadSafeFunction<ModelWrap, Delivery, &ModelWrap::Deliver>;

  Napi::Value Predict(const Napi::CallbackInfo& info);
  Napi::Value Announce(const Napi::CallbackInfo& info);
  Napi::Value Retract(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value DisposeSync(const Napi::CallbackInfo& info);
  Napi::Value Metadata(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  void Settle(Napi::Env env, Job* job, Outcome outcome);
  void ReleaseIfDone();
  static void OnEnvironmentTeardown(void* self);

  std::shared_ptr<Model> model_;
  Completions completions_;
  int64_t pending_ = 0;  // touched on the JS thread only
  bool disposed_ = false;
  bool released_ = false;
  bool cleanup_hook_ = false;
};

}  // namespace choripan::node
