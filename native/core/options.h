// Load options, and the machine they are resolved on: the cores this process may use (affinity, cgroup
// quota) and whether CUDA is there. Names, defaults and ranges come from vocabulary.json (see
// vocabulary.h), where each is described.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runner.h"
#include "vocabulary.h"

namespace choripan {

// In short: workers 0 picks the CPU cores this process may use (cgroup quota and affinity included), or
// 1 on a GPU; intra_op_threads 0 picks cores / workers. With one thread per worker, a batch that runs
// alone (no other worker busy, nothing else queued or reserved) gets all `workers` threads: a lone
// request is answered as fast as the cores allow, concurrent ones each take a core.
struct Options {
#define CHORIPAN_OPTION_FIELD(name, js, type, fallback, min, max) type name = fallback;
  CHORIPAN_NUMERIC_OPTIONS(CHORIPAN_OPTION_FIELD)
#undef CHORIPAN_OPTION_FIELD
  Device device = std::string_view(CHORIPAN_DEFAULT_DEVICE) == "cuda" ? Device::kCuda : Device::kCpu;
  bool warmup = CHORIPAN_DEFAULT_WARMUP;
  std::string sha256;  // the file's digest in hex; when set, any other file is refused before it is read
};

// The cores this process may run on: affinity mask and cgroup (v1 or v2) CPU quota, at least 1.
int64_t AvailableCores();

// Throws Error(kInvalidArgument) naming the option (by its JS and Python names) and its range.
void Validate(const Options& options);

// `options` with the automatic values (0) replaced by what they mean on this machine, and the digest in
// lower case. Throws Error(kDevice) for 'cuda' where CUDA is not available.
Options Resolve(Options options);

}  // namespace choripan
