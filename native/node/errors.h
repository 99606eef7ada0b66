// choripan::Error → a ChoripanError (js/errors.js) carrying the same stable `code`, built here once.
#pragma once

#include <napi.h>

#include "../core/errors.h"

namespace choripan::node {

Napi::Error ToJsError(Napi::Env env, const Error& error);
Napi::Error ToJsError(Napi::Env env, ErrorCode code, const std::string& message);

}  // namespace choripan::node
