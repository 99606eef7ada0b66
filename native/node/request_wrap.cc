#include "request_wrap.h"

#include <ATen/ATen.h>

#include "addon.h"
#include "errors.h"
#include "model_wrap.h"

namespace choripan::node {

namespace {

Napi::Error Malformed(Napi::Env env) {
  return ToJsError(env, ErrorCode::kInvalidArgument,
                   "submit() takes { jpeg, width, height }, { pixels, width, height, channels, cmyk } or { tensor }");
}

bool IsUint8Array(const Napi::Value& value) {
  return value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
}

int64_t Integer(Napi::Env env, const Napi::Object& input, const char* name) {
  const auto value = input.Get(name);
  if (!value.IsNumber()) throw Malformed(env);
  return value.As<Napi::Number>().Int64Value();
}

}  // namespace

Napi::Function RequestWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeRequest",
                     {
                         InstanceMethod("submit", &RequestWrap::Submit),
                         InstanceMethod("release", &RequestWrap::Release),
                         InstanceMethod("cancel", &RequestWrap::Cancel),
                     });
}

Napi::Object RequestWrap::Create(Napi::Env env, std::weak_ptr<ModelWrap> model, Reservation reservation) {
  auto object = env.GetInstanceData<Addon>()->request_constructor.New({});
  auto* request = Unwrap(object);
  request->reservation_ = std::move(reservation);
  request->model_ = std::move(model);
  return object;
}

// Made by NativeModel.reserve() only; one made with `new` holds no place.
RequestWrap::RequestWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RequestWrap>(info) {}

// submit(input: NativeInput): Promise<NativeAnswer>, rejected at once when the core refuses it. The bounds
// check is what keeps memory safe whatever js/ passes.
Napi::Value RequestWrap::Submit(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto model = model_.lock();
  if (!model) throw ToJsError(env, ErrorCode::kDisposed, "the model was disposed");
  if (!info[0].IsObject()) throw Malformed(env);
  const auto input = info[0].As<Napi::Object>();
  if (auto bytes = input.Get("jpeg"); IsUint8Array(bytes)) {
    // A JPEG that js/decode.js leaves to the core, with its frame's size as the header says.
    const auto data = bytes.As<Napi::Uint8Array>();
    JpegView jpeg{{data.Data(), data.ByteLength()}, Integer(env, input, "height"), Integer(env, input, "width")};
    return model->Submit(env, reservation_, jpeg, bytes);
  }
  if (auto pixels = input.Get("pixels"); IsUint8Array(pixels)) {
    // Decoded pixels, height × width × channels bytes, row-major; `cmyk`: a JPEG's CMYK samples.
    const auto data = pixels.As<Napi::Uint8Array>();
    ImageView image{data.Data(), Integer(env, input, "height"), Integer(env, input, "width"),
                    Integer(env, input, "channels"), input.Get("cmyk").ToBoolean().Value()};
    if (image.width < 1 || image.height < 1 || image.channels < 1 || image.channels > 4 ||
        static_cast<size_t>(image.width) * image.height * image.channels > data.ByteLength()) {
      throw ToJsError(env, ErrorCode::kInvalidArgument, "pixels hold fewer bytes than width × height × channels");
    }
    return model->Submit(env, reservation_, image, pixels);
  }
  if (auto tensor = input.Get("tensor"); tensor.IsTypedArray() &&
                                         tensor.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    // One preprocessed image, float32 [3, crop, crop] as the artifact's metadata says: a view of the
    // caller's memory, pinned until a worker has copied it into its batch.
    auto floats = tensor.As<Napi::Float32Array>();
    const auto crop = model->crop();
    if (static_cast<int64_t>(floats.ElementLength()) != 3 * crop * crop) {
      throw ToJsError(env, ErrorCode::kInvalidArgument,
                      "expected " + std::to_string(3 * crop * crop) + " floats (3 × " + std::to_string(crop) + " × " +
                          std::to_string(crop) + "), got " + std::to_string(floats.ElementLength()));
    }
    auto view = at::from_blob(floats.Data(), {3, crop, crop}, at::TensorOptions().dtype(at::kFloat));
    return model->Submit(env, reservation_, view, tensor);
  }
  throw Malformed(env);
}

// release(): the places not used go back; what was submitted still runs.
Napi::Value RequestWrap::Release(const Napi::CallbackInfo& info) {
  reservation_.Release();
  return info.Env().Undefined();
}

// cancel(): release(), and what was submitted and no worker has taken rejects with E_ABORTED.
Napi::Value RequestWrap::Cancel(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), reservation_.Cancel());
}

}  // namespace choripan::node
