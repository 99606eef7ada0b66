#include "load_worker.h"

#include "errors.h"
#include "model_wrap.h"

namespace choripan::node {

LoadWorker::LoadWorker(Napi::Env env, const Napi::String& path, const Options& options)
    : Napi::AsyncWorker(env, "choripan:load"),
      deferred_(Napi::Promise::Deferred::New(env)),
      path_(path.Utf8Value()),
      options_(options) {}

void LoadWorker::Execute() {
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
