// choripan::Error → js/errors.js codedError(): a ChoripanError carrying the same stable `code`, or for a
// bad call the TypeError or RangeError the core's Misuse names; built here once.
#pragma once

#include <napi.h>

#include "../core/errors.h"

namespace choripan::node {

Napi::Error ToJsError(Napi::Env env, const Error& error);
Napi::Error ToJsError(Napi::Env env, ErrorCode code, const std::string& message);

}  // namespace choripan::node
