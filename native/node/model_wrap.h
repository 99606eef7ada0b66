// The JS face of choripan::Model (NativeModel in js/binding.d.ts). Requests come in through the
// reservations it hands out (request_wrap.h); their completions come back from worker threads through
// one thread-safe function per model, and the wrapper stays alive while any request awaits its answer.
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

  // Queues `input` through `reservation`, pinning `pinned` (the memory it refers to) until a worker has
  // read it: the promise of its answer, rejected at once when the core refuses it.
  Napi::Value Submit(Napi::Env env, Reservation& reservation, Input input, const Napi::Value& pinned);
  int64_t crop() const { return model_->metadata().preprocessing.crop; }

 private:
  // One submitted input: the promise to settle and the pixel buffer pinned until a worker has read it.
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

  Napi::Value Reserve(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Metadata(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value LoneBatch(const Napi::CallbackInfo& info);

  void Settle(Napi::Env env, Job* job, Outcome outcome);
  // No completion can come any more (the workers have exited): let the thread-safe function go.
  void Release(bool teardown);

  std::shared_ptr<Model> model_;
  // Not an owner: what the reservations it hands out hold (weakly), expired when this goes.
  std::shared_ptr<ModelWrap> self_{this, [](ModelWrap*) {}};
  Completions completions_;
  Addon* addon_;  // the registry this model is in; null once the environment tears it down
  bool released_ = false;
  Napi::Reference<Napi::Promise> disposal_;  // what dispose() returned first, returned again after
};

}  // namespace choripan::node
