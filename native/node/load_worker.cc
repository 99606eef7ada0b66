#include "load_worker.h"

#include "errors.h"
#include "model_wrap.h"

namespace choripan::node {

namespace {

Options ReadOptions(const Napi::Object& object) {
  auto integer = [&](const char* key) { return object.Get(key).As<Napi::Number>().Int64Value(); };
  Options options;
  options.max_batch = integer("maxBatch");
  options.max_delay_ms = object.Get("maxDelayMs").As<Napi::Number>().DoubleValue();
  options.max_queue = integer("maxQueue");
  options.workers = integer("workers");
  options.intra_op_threads = integer("intraOpThreads");
  options.device = object.Get("device").As<Napi::String>().Utf8Value() == "cuda" ? Device::kCuda : Device::kCpu;
  options.warmup = object.Get("warmup").As<Napi::Boolean>().Value();
  return options;
}

}  // namespace

LoadWorker::LoadWorker(Napi::Env env, const Napi::String& path, const Napi::Object& options)
    : Napi::AsyncWorker(env, "choripan:load"),
      deferred_(Napi::Promise::Deferred::New(env)),
      path_(path.Utf8Value()),
      options_(ReadOptions(options)) {}

void LoadWorker::Execute() {
  try {
    model_ = Model::Load(path_, options_);
  } catch (const Error& error) {
    error_ = error;
  } catch (const std::exception& error) {
    error_ = Error(ErrorCode::kModelLoad, "cannot load model " + path_ + ": " + FirstLine(error.what()));
  }
}

void LoadWorker::OnOK() {
  if (error_) {
    deferred_.Reject(ToJsError(Env(), *error_).Value());
  } else {
    deferred_.Resolve(ModelWrap::Create(Env(), std::move(model_)));
  }
}

JoinWorker::JoinWorker(Napi::Env env, std::shared_ptr<Model> model)
    : Napi::AsyncWorker(env, "choripan:dispose"),
      deferred_(Napi::Promise::Deferred::New(env)),
      model_(std::move(model)) {}

void JoinWorker::Execute() { model_->Join(); }

void JoinWorker::OnOK() {
  model_.reset();
  deferred_.Resolve(Env().Undefined());
}

}  // namespace choripan::node
