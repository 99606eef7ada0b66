// Loads a model on the libuv pool: reading the archive and warming up never block the event loop.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <optional>

#include "../core/model.h"

namespace choripan::node {

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, const Napi::String& path, const Options& options);
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override;
  void OnOK() override;

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  Options options_;
  std::optional<Error> error_;  // set by Execute
  std::shared_ptr<Model> model_;
};

// Joins a disposed model's workers on the libuv pool, then runs `joined` on the JS thread and
// resolves. Holds `wrapper` until then.
class JoinWorker : public Napi::AsyncWorker {
 public:
  JoinWorker(Napi::Env env, std::shared_ptr<Model> model, Napi::Object wrapper, std::function<void()> joined);
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override;
  void OnOK() override;

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Model> model_;
  Napi::ObjectReference wrapper_;
  std::function<void()> joined_;
};

}  // namespace choripan::node
