#include "options.h"

#include "addon.h"
#include "errors.h"

namespace choripan::node {

namespace {

class JsOptions : public OptionSource {
 public:
  JsOptions(Napi::Env env, Napi::Object object) : env_(env), object_(object) {}

  Spelling spelling() const override { return Spelling::kCamel; }
  std::string_view call() const override { return "load()"; }

  std::vector<std::string> Names() const override {
    napi_value keys;
    // Object.keys(): own, enumerable, string-keyed.
    NAPI_THROW_IF_FAILED(env_,
                         napi_get_all_property_names(env_, object_, napi_key_own_only,
                                                     static_cast<napi_key_filter>(napi_key_enumerable | napi_key_skip_symbols),
                                                     napi_key_numbers_to_strings, &keys),
                         {});
    const auto array = Napi::Array(env_, keys);
    std::vector<std::string> names;
    for (uint32_t i = 0; i < array.Length(); ++i) names.push_back(array.Get(i).As<Napi::String>().Utf8Value());
    return names;
  }

  std::optional<OptionValue> Get(const std::string& name) const override {
    const auto value = object_.Get(name);
    if (value.IsUndefined()) return std::nullopt;  // as if not given, as JS's own APIs take it
    if (value.IsNumber()) return value.As<Napi::Number>().DoubleValue();
    if (value.IsBoolean()) return value.As<Napi::Boolean>().Value();
    if (value.IsString()) return value.As<Napi::String>().Utf8Value();
    return OptionValue{};
  }

  std::string Label(const std::string& name) const override { return "options." + name; }

  // js/validate.js received(), handed over by init(): a JS value is shown the same way, whoever refuses it.
  std::string Received(const std::string& name) const override {
    const auto value = object_.Get(name);
    auto* addon = env_.GetInstanceData<Addon>();
    if (addon != nullptr && !addon->received_function.IsEmpty()) {
      return addon->received_function.Call({value}).As<Napi::String>().Utf8Value();
    }
    return std::string("a value of type ") + (value.IsNull() ? "null" : TypeOf(value));  // before init()
  }

 private:
  static std::string TypeOf(const Napi::Value& value) {
    switch (value.Type()) {
      case napi_number: return "number";
      case napi_string: return "string";
      case napi_boolean: return "boolean";
      case napi_bigint: return "bigint";
      case napi_function: return "function";
      case napi_symbol: return "symbol";
      case napi_undefined: return "undefined";
      default: return "object";
    }
  }

  Napi::Env env_;
  Napi::Object object_;
};

}  // namespace

Options ReadOptions(Napi::Env env, const Napi::Value& given) {
  if (!given.IsObject()) throw ToJsError(env, ErrorCode::kInvalidArgument, "load(path, options) received malformed arguments");
  try {
    return choripan::ReadOptions(JsOptions(env, given.As<Napi::Object>()));
  } catch (const Error& error) {
    throw ToJsError(env, error);
  }
}

}  // namespace choripan::node
