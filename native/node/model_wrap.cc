#include "model_wrap.h"

#include <cmath>

#include "addon.h"
#include "errors.h"
#include "load_worker.h"
#include "request_wrap.h"

namespace choripan::node {

Napi::Function ModelWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod("reserve", &ModelWrap::Reserve),
                         InstanceMethod("stats", &ModelWrap::Stats),
                         InstanceMethod("dispose", &ModelWrap::Dispose),
                         InstanceAccessor("metadata", &ModelWrap::Metadata, nullptr),
                         InstanceAccessor("disposed", &ModelWrap::Disposed, nullptr),
                         InstanceAccessor("loneBatch", &ModelWrap::LoneBatch, nullptr),
                     });
}

Napi::Object ModelWrap::Create(Napi::Env env, std::shared_ptr<Model> model) {
  auto* addon = env.GetInstanceData<Addon>();
  auto holder = Napi::External<std::shared_ptr<Model>>::New(
      env, new std::shared_ptr<Model>(std::move(model)),
      [](Napi::Env, std::shared_ptr<Model>* holder) { delete holder; });
  return addon->model_constructor.New({holder});
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<ModelWrap>(info), addon_(info.Env().GetInstanceData<Addon>()) {
  auto env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw ToJsError(env, ErrorCode::kInvalidArgument, "NativeModel is created by load(), not with new");
  }
  model_ = *info[0].As<Napi::External<std::shared_ptr<Model>>>().Data();
  completions_ = Completions::New(env, "choripan:completions", 0, 1, this);
  completions_.Unref(env);  // an idle model does not keep the process alive
  addon_->Register(this);
}

// Collected without dispose(): nothing awaits an answer (that keeps the wrapper alive), so the
// workers are idle and stop at once.
ModelWrap::~ModelWrap() {
  self_.reset();
  Stop(/*join=*/true, /*teardown=*/false);
}

void ModelWrap::Stop(bool join, bool teardown) {
  if (teardown) addon_ = nullptr;
  model_->Dispose();
  if (!join) return;
  model_->Join();
  Release(teardown);
}

void ModelWrap::Release(bool teardown) {
  if (addon_ != nullptr) {
    addon_->Forget(this);
    addon_ = nullptr;
  }
  if (released_) return;
  released_ = true;
  // Calls already queued are still delivered before it goes, unless the environment is going.
  if (teardown) {
    completions_.Abort();
  } else {
    completions_.Release();
  }
}

// reserve({ count, bytes, timeoutMs }): NativeRequest. `count` inputs that js/ is decoding, `bytes` of
// pixels between them, admitted together or refused together (Model::Reserve), each submitted through
// the handle before `timeoutMs` (what is left of the caller's; absent: no deadline) runs out.
Napi::Value ModelWrap::Reserve(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto field = [&](const char* name) {
    return info[0].IsObject() ? info[0].As<Napi::Object>().Get(name) : env.Undefined();
  };
  const auto count = field("count");
  const auto bytes = field("bytes");
  const auto timeout = field("timeoutMs");
  if (!count.IsNumber() || !bytes.IsNumber() || !(timeout.IsNumber() || timeout.IsUndefined())) {
    throw ToJsError(env, ErrorCode::kInvalidArgument, "reserve({ count, bytes, timeoutMs }) received malformed arguments");
  }
  std::optional<Clock::time_point> deadline;
  if (const double ms = timeout.IsNumber() ? timeout.As<Napi::Number>().DoubleValue() : 0; std::isfinite(ms) && ms > 0) {
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(ms));
  }
  Reservation reservation;
  try {
    reservation = model_->Reserve(bytes.As<Napi::Number>().Int64Value(), count.As<Napi::Number>().Int64Value(), deadline);
  } catch (const Error& error) {
    throw ToJsError(env, error);
  }
  return RequestWrap::Create(env, self_, std::move(reservation));
}

Napi::Value ModelWrap::Submit(Napi::Env env, Reservation& reservation, Input input, const Napi::Value& pinned) {
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* job = new Job{deferred, Napi::Persistent(pinned)};
  Completions completions = completions_;
  try {
    reservation.Submit(std::move(input), [completions, job](Outcome outcome) {
      auto* delivery = new Delivery{job, std::move(outcome)};
      if (completions.NonBlockingCall(delivery) != napi_ok) delete delivery;  // environment gone
    });
  } catch (const Error& error) {
    delete job;
    deferred.Reject(ToJsError(env, error).Value());
    return deferred.Promise();
  }
  // A model with requests awaiting their answer is never collected, and keeps the loop alive.
  if (Ref() == 1) completions_.Ref(env);
  return deferred.Promise();
}

void ModelWrap::Deliver(Napi::Env env, Napi::Function, ModelWrap* self, Delivery* delivery) {
  std::unique_ptr<Delivery> owned(delivery);
  if (env == nullptr) {  // torn down: nothing left to settle
    owned->job->pixels.SuppressDestruct();
    delete owned->job;
    return;
  }
  self->Settle(env, owned->job, std::move(owned->outcome));
}

void ModelWrap::Settle(Napi::Env env, Job* job, Outcome outcome) {
  std::unique_ptr<Job> owned(job);
  try {
    Napi::HandleScope scope(env);
    if (outcome.error) {
      owned->deferred.Reject(ToJsError(env, *outcome.error).Value());
    } else {
      auto probabilities = Napi::Float32Array::New(env, outcome.probabilities.size());
      std::copy(outcome.probabilities.begin(), outcome.probabilities.end(), probabilities.Data());
      auto answer = Napi::Object::New(env);
      answer.Set("probabilities", probabilities);
      answer.Set("queueMs", outcome.queue_ms);
      answer.Set("forwardMs", outcome.forward_ms);
      answer.Set("batchSize", static_cast<double>(outcome.batch_size));
      if (outcome.decode_ms) {
        answer.Set("decodeStartMs", *outcome.decode_start_ms);
        answer.Set("decodeMs", *outcome.decode_ms);
      }
      owned->deferred.Resolve(answer);
    }
  } catch (const Napi::Error&) {
    // A worker_thread being terminated can still drain its completions while it can no longer run
    // JavaScript: nobody is left to see this promise, and the exception has nowhere to go.
  }
  owned.reset();
  try {
    if (Unref() == 0 && !released_) completions_.Unref(env);
  } catch (const Napi::Error&) {
    // Likewise: the environment is going away, and its handles with it.
  }
}

// stats(): the fields vocabulary.json lists, by their JS names.
Napi::Value ModelWrap::Stats(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto stats = model_->GetStats();
  auto object = Napi::Object::New(env);
#define CHORIPAN_STATS_SET(name, js, type) object.Set(js, Napi::Number::New(env, static_cast<double>(stats.name)));
  CHORIPAN_STATS(CHORIPAN_STATS_SET)
#undef CHORIPAN_STATS_SET
  return object;
}

// dispose(): Promise<void>, settled once every worker has exited. Queued requests reject with
// E_DISPOSED right away; running batches still answer. Calling it again returns the same promise.
Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!disposal_.IsEmpty()) return disposal_.Value();
  Stop(/*join=*/false, /*teardown=*/false);
  auto* worker = new JoinWorker(env, model_, info.This().As<Napi::Object>(), [this] { Release(/*teardown=*/false); });
  auto promise = worker->Promise();
  disposal_ = Napi::Persistent(promise);
  worker->Queue();
  return promise;
}

Napi::Value ModelWrap::Metadata(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), model_->metadata().document);
}

Napi::Value ModelWrap::LoneBatch(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto chosen = model_->lone_batch();
  if (!chosen) return env.Null();
  auto result = Napi::Object::New(env);
  result.Set("model", chosen->model);
  result.Set("singleMs", chosen->single_ms);
  result.Set("batchedMs", chosen->batched_ms);
  return result;
}

Napi::Value ModelWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), model_->disposed());
}

}  // namespace choripan::node
