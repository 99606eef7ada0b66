// load()'s options as a JS object: the source the core's one option reader (core/options.h ReadOptions)
// reads, by their JS names, with values shown as js/validate.js shows them.
#pragma once

#include <napi.h>

#include "../core/options.h"

namespace choripan::node {

// The options `given` holds, read and checked by the core. Throws a ChoripanError E_INVALID_ARGUMENT.
Options ReadOptions(Napi::Env env, const Napi::Value& given);

}  // namespace choripan::node
