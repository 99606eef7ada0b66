// Loads a model on the libuv pool: reading the archive and warming up never block the event loop.
#pragma once

#include <napi.h>

#include <memory>
#include <optional>

#include "../core/model.h"

namespace choripan::node {

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, const Napi::String& path, const Napi::Object& options);
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override;
  void OnOK() override;

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  Options options_;
  std::shared_ptr<Model> model_;
  std::optional<Error> error_;
};

// Joins a disposed model's workers on the libuv pool, then resolves.
class JoinWorker : public Napi::AsyncWorker {
 public:
  JoinWorker(Napi::Env env, std::shared_ptr<Model> model);
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override;
  void OnOK() override;

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Model> model_;
};

}  // namespace choripan::node
