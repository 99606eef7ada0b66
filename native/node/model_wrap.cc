#include "model_wrap.h"

#include <cmath>

#include "addon.h"
#include "errors.h"
#include "load_worker.h"

namespace choripan::node {

Napi::Function ModelWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod("predict", &ModelWrap::Predict),
                         InstanceMethod("announce", &ModelWrap::Announce),
                         InstanceMethod("retract", &ModelWrap::Retract),
                         InstanceMethod("cancel", &ModelWrap::Cancel),
                         InstanceMethod("stats", &ModelWrap::Stats),
                         InstanceMethod("dispose", &ModelWrap::Dispose),
                         InstanceMethod("disposeSync", &ModelWrap::DisposeSync),
                         InstanceAccessor("metadata", &ModelWrap::Metadata, nullptr),
                         InstanceAccessor("disposed", &ModelWrap::Disposed, nullptr),
                     });
}

Napi::Object ModelWrap::Create(Napi::Env env, std::shared_ptr<Model> model) {
  auto* addon = env.GetInstanceData<Addon>();
  auto holder = Napi::External<std::shared_ptr<Model>>::New(
      env, new std::shared_ptr<Model>(std::move(model)),
      [](Napi::Env, std::shared_ptr<Model>* holder) { delete holder; });
  return addon->model_constructor.New({holder});
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  auto env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw ToJsError(env, ErrorCode::kInvalidArgument, "NativeModel is created by load(), not with new");
  }
  model_ = *info[0].As<Napi::External<std::shared_ptr<Model>>>().Data();
  completions_ = Completions::New(env, "choripan:completions", 0, 1, this);
  completions_.Unref(env);  // an idle model does not keep the process alive
  napi_add_env_cleanup_hook(env, &ModelWrap::OnEnvironmentTeardown, this);
  cleanup_hook_ = true;
}

ModelWrap::~ModelWrap() {
  if (cleanup_hook_) napi_remove_env_cleanup_hook(Env(), &ModelWrap::OnEnvironmentTeardown, this);
  // Collected without dispose(): nothing is pending (pending requests keep the wrapper alive), so
  // the workers are idle and stop at once.
  model_->Dispose();
  model_->Join();
  if (!released_) completions_.Release();
}

// The environment (the process, or a worker_thread) is going away: stop the workers before their
// completions could reach a dead environment.
void ModelWrap::OnEnvironmentTeardown(void* data) {
  auto* self = static_cast<ModelWrap*>(data);
  self->cleanup_hook_ = false;
  self->model_->Dispose();
  self->model_->Join();
  if (!self->released_) {
    self->released_ = true;
    self->completions_.Abort();
  }
}

// predict(pixels: Uint8Array, width, height, channels, timeoutMs, announced): { id, promise }.
// js/ has validated the arguments; the bounds check below is what keeps memory safe regardless.
Napi::Value ModelWrap::Predict(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto deferred = Napi::Promise::Deferred::New(env);
  auto result = Napi::Object::New(env);
  result.Set("promise", deferred.Promise());

  if (info.Length() < 6 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsNumber() || !info[4].IsNumber() || !info[5].IsBoolean()) {
    throw ToJsError(env, ErrorCode::kInvalidArgument,
                    "predict(pixels, width, height, channels, timeoutMs, announced) received malformed arguments");
  }
  const bool announced = info[5].As<Napi::Boolean>().Value();
  auto pixels = info[0].As<Napi::Uint8Array>();
  ImageView image{pixels.Data(), info[2].As<Napi::Number>().Int64Value(), info[1].As<Napi::Number>().Int64Value(),
                  info[3].As<Napi::Number>().Int64Value()};
  if (image.width < 1 || image.height < 1 || image.channels < 1 || image.channels > 4 ||
      static_cast<size_t>(image.width) * image.height * image.channels > pixels.ByteLength()) {
    if (announced) model_->Retract();
    throw ToJsError(env, ErrorCode::kInvalidArgument, "pixels hold fewer bytes than width × height × channels");
  }
  const double timeout_ms = info[4].As<Napi::Number>().DoubleValue();
  std::optional<Clock::time_point> deadline;
  if (std::isfinite(timeout_ms) && timeout_ms > 0) {
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double, std::milli>(timeout_ms));
  }

  auto* job = new Job{deferred, Napi::Persistent(info[0])};
  Completions completions = completions_;
  try {
    auto id = model_->Submit(
        image,
        [completions, job](Outcome outcome) {
          auto* delivery = new Delivery{job, std::move(outcome)};
          if (completions.NonBlockingCall(delivery) != napi_ok) delete delivery;  // environment gone
        },
        deadline, announced);
    result.Set("id", Napi::Number::New(env, static_cast<double>(id)));
  } catch (const Error& error) {
    delete job;
    deferred.Reject(ToJsError(env, error).Value());
    result.Set("id", env.Null());
    return result;
  }
  if (pending_++ == 0) {
    completions_.Ref(env);
    Ref();  // a model with pending requests is never collected
  }
  return result;
}

// announce(): one more call is decoding and will reach predict(…, announced = true) or retract().
Napi::Value ModelWrap::Announce(const Napi::CallbackInfo& info) {
  model_->Announce();
  return info.Env().Undefined();
}

Napi::Value ModelWrap::Retract(const Napi::CallbackInfo& info) {
  model_->Retract();
  return info.Env().Undefined();
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
      owned->deferred.Resolve(probabilities);
    }
  } catch (const Napi::Error&) {
    // A worker_thread being terminated can still drain its completions while it can no longer run
    // JavaScript: nobody is left to see this promise, and the exception has nowhere to go.
  }
  owned.reset();
  if (--pending_ == 0) {
    try {
      completions_.Unref(env);
      Unref();
    } catch (const Napi::Error&) {
      // Likewise: the environment is going away, and its handles with it.
    }
    ReleaseIfDone();
  }
}

void ModelWrap::ReleaseIfDone() {
  if (disposed_ && pending_ == 0 && !released_) {
    released_ = true;
    completions_.Release();
  }
}

Napi::Value ModelWrap::Cancel(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) return Napi::Boolean::New(info.Env(), false);
  auto id = static_cast<RequestId>(info[0].As<Napi::Number>().Int64Value());
  return Napi::Boolean::New(info.Env(), model_->Cancel(id));
}

Napi::Value ModelWrap::Stats(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto stats = model_->GetStats();
  auto object = Napi::Object::New(env);
  auto set = [&](const char* key, double value) { object.Set(key, Napi::Number::New(env, value)); };
  set("requests", static_cast<double>(stats.requests));
  set("completed", static_cast<double>(stats.completed));
  set("failed", static_cast<double>(stats.failed));
  set("rejected", static_cast<double>(stats.rejected));
  set("batches", static_cast<double>(stats.batches));
  set("queued", static_cast<double>(stats.queued));
  set("inflight", static_cast<double>(stats.inflight));
  set("meanBatchSize", stats.mean_batch_size);
  set("meanForwardMs", stats.mean_forward_ms);
  set("latencyP50Ms", stats.latency_p50_ms);
  set("latencyP99Ms", stats.latency_p99_ms);
  set("latencyMaxMs", stats.latency_max_ms);
  set("workers", static_cast<double>(stats.workers));
  set("intraOpThreads", static_cast<double>(stats.intra_op_threads));
  return object;
}

// dispose(): Promise<void>, settled once every worker has exited. Queued requests reject with
// E_DISPOSED right away; running batches still answer.
Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  disposed_ = true;
  model_->Dispose();
  ReleaseIfDone();
  auto* worker = new JoinWorker(env, model_);
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

// disposeSync(): dispose() that blocks until a running batch ends. For process exit only, where C's
// exit() would otherwise tear libtorch down under a worker that is still inside a forward pass.
Napi::Value ModelWrap::DisposeSync(const Napi::CallbackInfo& info) {
  disposed_ = true;
  model_->Dispose();
  model_->Join();
  ReleaseIfDone();
  return info.Env().Undefined();
}

Napi::Value ModelWrap::Metadata(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), model_->metadata().document);
}

Napi::Value ModelWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), model_->disposed());
}

}  // namespace choripan::node
