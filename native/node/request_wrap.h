// The JS face of a choripan::Reservation (NativeRequest in js/binding.d.ts): the places one call of
// js/model.js reserved in a model's queue, through which it submits each input (a JPEG for the core to
// decode, decoded pixels or a preprocessed tensor), then releases or cancels them. Collected without
// either, it gives its places back itself.
#pragma once

#include <napi.h>

#include <memory>

#include "../core/reservation.h"

namespace choripan::node {

class ModelWrap;

class RequestWrap : public Napi::ObjectWrap<RequestWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // A handle on `reservation`, which `model` made.
  static Napi::Object Create(Napi::Env env, std::weak_ptr<ModelWrap> model, Reservation reservation);

  explicit RequestWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);

  Reservation reservation_;
  // Expired once the model's wrapper is collected (a reference to it would cost more than the rest of
  // reserve()); the core's model lives on in the reservation.
  std::weak_ptr<ModelWrap> model_;
};

}  // namespace choripan::node
