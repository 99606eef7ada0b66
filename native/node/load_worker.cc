#include "load_worker.h"

#include <algorithm>

#include "errors.h"
#include "model_wrap.h"

namespace choripan::node {

namespace {

// The options js/ passes, by their JS names (vocabulary.json); absent ones keep the core's defaults.
// js/ has checked their types, the core checks their values.
Options ReadOptions(const Napi::Object& object) {
  Options options;
#define CHORIPAN_READ_OPTION(name, js, type, fallback, min, max)        \
  if (object.Has(js) && object.Get(js).IsNumber()) {                    \
    /* Clamped into the type's range so that the core can refuse it. */ \
    const double value = std::clamp(object.Get(js).As<Napi::Number>().DoubleValue(), -9e18, 9e18); \
    options.name = static_cast<type>(value);                            \
  }
  CHORIPAN_NUMERIC_OPTIONS(CHORIPAN_READ_OPTION)
#undef CHORIPAN_READ_OPTION
  if (object.Has("device") && object.Get("device").IsString()) {
    const auto device = object.Get("device").As<Napi::String>().Utf8Value();
    if (device != "cpu" && device != "cuda") {
      throw Error(ErrorCode::kInvalidArgument, "Expected 'cpu' or 'cuda' for device but received '" + device + "'");
    }
    options.device = device == "cuda" ? Device::kCuda : Device::kCpu;
  }
  if (object.Has("warmup") && object.Get("warmup").IsBoolean()) options.warmup = object.Get("warmup").As<Napi::Boolean>();
  if (object.Has("sha256") && object.Get("sha256").IsString()) options.sha256 = object.Get("sha256").As<Napi::String>();
  return options;
}

}  // namespace

LoadWorker::LoadWorker(Napi::Env env, const Napi::String& path, const Napi::Object& options)
    : Napi::AsyncWorker(env, "choripan:load"), deferred_(Napi::Promise::Deferred::New(env)), path_(path.Utf8Value()) {
  try {
    options_ = ReadOptions(options);
  } catch (const Error& error) {
    error_ = error;
  }
}

void LoadWorker::Execute() {
  if (error_) return;
  try {
    model_ = Model::Load(path_, options_);
  } catch (const Error& error) {
    error_ = error;
  } catch (const std::exception& error) {
    error_ = Error(ErrorCode::kModelLoad, "cannot load model " + path_ + ": " + Describe(error));
  }
}

void LoadWorker::OnOK() {
  if (error_) {
    deferred_.Reject(ToJsError(Env(), *error_).Value());
  } else {
    deferred_.Resolve(ModelWrap::Create(Env(), std::move(model_)));
  }
}

JoinWorker::JoinWorker(Napi::Env env, std::shared_ptr<Model> model, Napi::Object wrapper, std::function<void()> joined)
    : Napi::AsyncWorker(env, "choripan:dispose"),
      deferred_(Napi::Promise::Deferred::New(env)),
      model_(std::move(model)),
      wrapper_(Napi::Persistent(wrapper)),
      joined_(std::move(joined)) {}

void JoinWorker::Execute() { model_->Join(); }

void JoinWorker::OnOK() {
  joined_();
  model_.reset();
  deferred_.Resolve(Env().Undefined());
}

}  // namespace choripan::node
