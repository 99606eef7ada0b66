#include "model_wrap.h"

#include <ATen/ATen.h>

#include <cmath>

#include "addon.h"
#include "errors.h"
#include "load_worker.h"

namespace choripan::node {

Napi::Function ModelWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod("predict", &ModelWrap::Predict),
                         InstanceMethod("predictJpeg", &ModelWrap::PredictJpeg),
                         InstanceMethod("predictTensor", &ModelWrap::PredictTensor),
                         InstanceMethod("announce", &ModelWrap::Announce),
                         InstanceMethod("retract", &ModelWrap::Retract),
                         InstanceMethod("cancel", &ModelWrap::Cancel),
                         InstanceMethod("stats", &ModelWrap::Stats),
                         InstanceMethod("dispose", &ModelWrap::Dispose),
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
ModelWrap::~ModelWrap() { Stop(/*join=*/true, /*teardown=*/false); }

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

// predict(pixels: Uint8Array, width, height, channels, timeoutMs, announcedBytes: number | null, cmyk?):
// { id, promise }. The bounds check is what keeps memory safe whatever js/ passes.
Napi::Value ModelWrap::Predict(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (info.Length() < 6 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsNumber() || !info[4].IsNumber() || !(info[5].IsNumber() || info[5].IsNull())) {
    throw ToJsError(env, ErrorCode::kInvalidArgument,
                    "predict(pixels, width, height, channels, timeoutMs, announcedBytes) received malformed arguments");
  }
  std::optional<int64_t> announced;
  if (info[5].IsNumber()) announced = info[5].As<Napi::Number>().Int64Value();
  auto pixels = info[0].As<Napi::Uint8Array>();
  ImageView image{pixels.Data(), info[2].As<Napi::Number>().Int64Value(), info[1].As<Napi::Number>().Int64Value(),
                  info[3].As<Napi::Number>().Int64Value(), info.Length() > 6 && info[6].ToBoolean().Value()};
  if (image.width < 1 || image.height < 1 || image.channels < 1 || image.channels > 4 ||
      static_cast<size_t>(image.width) * image.height * image.channels > pixels.ByteLength()) {
    if (announced) model_->Retract(*announced);
    throw ToJsError(env, ErrorCode::kInvalidArgument, "pixels hold fewer bytes than width × height × channels");
  }
  return Submit(env, image, info[0], info[4].As<Napi::Number>().DoubleValue(), announced);
}

// predictJpeg(bytes: Uint8Array, width, height, timeoutMs, announcedBytes: number | null): { id, promise }:
// a JPEG that js/decode.js leaves to the core, with its frame's size as the header says.
Napi::Value ModelWrap::PredictJpeg(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (info.Length() < 5 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsNumber() || !(info[4].IsNumber() || info[4].IsNull())) {
    throw ToJsError(env, ErrorCode::kInvalidArgument,
                    "predictJpeg(bytes, width, height, timeoutMs, announcedBytes) received malformed arguments");
  }
  std::optional<int64_t> announced;
  if (info[4].IsNumber()) announced = info[4].As<Napi::Number>().Int64Value();
  auto bytes = info[0].As<Napi::Uint8Array>();
  JpegView jpeg{{bytes.Data(), bytes.ByteLength()}, info[2].As<Napi::Number>().Int64Value(),
                info[1].As<Napi::Number>().Int64Value()};
  return Submit(env, jpeg, info[0], info[3].As<Napi::Number>().DoubleValue(), announced);
}

// predictTensor(input: Float32Array, timeoutMs, announcedBytes?: number | null): { id, promise }: one
// preprocessed image, float32 [3, crop, crop] as the artifact's metadata says.
Napi::Value ModelWrap::PredictTensor(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto crop = model_->metadata().preprocessing.crop;
  if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
      !info[1].IsNumber() || !(info[2].IsNumber() || info[2].IsNull() || info[2].IsUndefined())) {
    throw ToJsError(env, ErrorCode::kInvalidArgument,
                    "predictTensor(input: Float32Array, timeoutMs, announcedBytes) received malformed arguments");
  }
  std::optional<int64_t> announced;
  if (info[2].IsNumber()) announced = info[2].As<Napi::Number>().Int64Value();
  auto floats = info[0].As<Napi::Float32Array>();
  if (static_cast<int64_t>(floats.ElementLength()) != 3 * crop * crop) {
    if (announced) model_->Retract(*announced);
    throw ToJsError(env, ErrorCode::kInvalidArgument,
                    "expected " + std::to_string(3 * crop * crop) + " floats (3 × " + std::to_string(crop) + " × " +
                        std::to_string(crop) + "), got " + std::to_string(floats.ElementLength()));
  }
  // A view of the caller's memory, pinned by the job until a worker has copied it into its batch.
  auto tensor = at::from_blob(floats.Data(), {3, crop, crop}, at::TensorOptions().dtype(at::kFloat));
  return Submit(env, tensor, info[0], info[1].As<Napi::Number>().DoubleValue(), announced);
}

Napi::Object ModelWrap::Submit(Napi::Env env, Input input, const Napi::Value& pinned, double timeout_ms,
                               std::optional<int64_t> announced) {
  auto deferred = Napi::Promise::Deferred::New(env);
  auto result = Napi::Object::New(env);
  result.Set("promise", deferred.Promise());
  std::optional<Clock::time_point> deadline;
  if (std::isfinite(timeout_ms) && timeout_ms > 0) {
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double, std::milli>(timeout_ms));
  }
  auto* job = new Job{deferred, Napi::Persistent(pinned)};
  Completions completions = completions_;
  try {
    auto id = model_->Submit(
        std::move(input),
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
  // A model with requests awaiting their answer is never collected, and keeps the loop alive.
  if (Ref() == 1) completions_.Ref(env);
  return result;
}

// announce(bytes, count = 1): `count` calls are decoding that many bytes of pixels between them, admitted
// together or refused together (Model::Announce). Each ends with predict…(…, its bytes) or retract(its bytes).
Napi::Value ModelWrap::Announce(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber() || !(info[1].IsNumber() || info[1].IsUndefined())) {
    throw ToJsError(info.Env(), ErrorCode::kInvalidArgument, "announce(bytes, count) needs numbers");
  }
  try {
    model_->Announce(info[0].As<Napi::Number>().Int64Value(), info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : 1);
  } catch (const Error& error) {
    throw ToJsError(info.Env(), error);
  }
  return info.Env().Undefined();
}

Napi::Value ModelWrap::Retract(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw ToJsError(info.Env(), ErrorCode::kInvalidArgument, "retract(bytes) needs a number");
  model_->Retract(info[0].As<Napi::Number>().Int64Value());
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
      auto answer = Napi::Object::New(env);
      answer.Set("probabilities", probabilities);
      answer.Set("queueMs", outcome.queue_ms);
      answer.Set("forwardMs", outcome.forward_ms);
      answer.Set("batchSize", static_cast<double>(outcome.batch_size));
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

Napi::Value ModelWrap::Cancel(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) return Napi::Boolean::New(info.Env(), false);
  auto id = static_cast<RequestId>(info[0].As<Napi::Number>().Int64Value());
  return Napi::Boolean::New(info.Env(), model_->Cancel(id));
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

Napi::Value ModelWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), model_->disposed());
}

}  // namespace choripan::node
