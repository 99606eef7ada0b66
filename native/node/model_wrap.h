// The JS face of choripan::Model. Completions come back from worker threads through one
// thread-safe function per model; the wrapper stays alive while any request awaits its answer.
#pragma once

#include <napi.h>

#include <memory>

#include "../core/model.h"

namespace choripan::node {

class Addon;

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Create(Napi::Env env, std::shared_ptr<Model> model);

  explicit ModelWrap(const Napi::CallbackInfo& info);
  ~ModelWrap() override;

  // The one way a model stops, whoever asks: dispose(), disposeAll() at process exit, the
  // environment's teardown (its registry is then gone), garbage collection. Queued requests are
  // answered with E_DISPOSED; with `join`, waits for a running batch.
  void Stop(bool join, bool teardown);

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
  Napi::Value PredictJpeg(const Napi::CallbackInfo& info);
  Napi::Value PredictTensor(const Napi::CallbackInfo& info);
  // Queues `input` (whose memory `pinned` keeps alive) and returns { id, promise }.
  Napi::Object Submit(Napi::Env env, Input input, const Napi::Value& pinned, double timeout_ms,
                      std::optional<int64_t> announced);
  Napi::Value Announce(const Napi::CallbackInfo& info);
  Napi::Value Retract(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Metadata(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  void Settle(Napi::Env env, Job* job, Outcome outcome);
  // No completion can come any more (the workers have exited): let the thread-safe function go.
  void Release(bool teardown);

  std::shared_ptr<Model> model_;
  Completions completions_;
  Addon* addon_;  // the registry this model is in; null once the environment tears it down
  bool released_ = false;
  Napi::Reference<Napi::Promise> disposal_;  // what dispose() returned first, returned again after
};

}  // namespace choripan::node
