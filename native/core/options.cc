#include "options.h"

#include <c10/util/StringUtil.h>
#include <dlfcn.h>
#include <sched.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>

#include "errors.h"

namespace choripan {

namespace {

// The CPU quota of this process's cgroup, in cores (rounded down), or nullopt where there is none. cgroup
// v2: "<quota> <period>" or "max <period>" in cpu.max; v1: cpu.cfs_quota_us (-1: none) over
// cpu.cfs_period_us. /proc/self/cgroup says where this process's cgroup is in each hierarchy.
std::optional<int64_t> CgroupCores() {
  std::ifstream membership("/proc/self/cgroup");
  std::string line;
  while (std::getline(membership, line)) {
    // "<id>:<controllers>:<path>"; controllers are empty for v2, a list holding "cpu" for v1's.
    const auto first = line.find(':');
    const auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const auto controllers = line.substr(first + 1, second - first - 1);
    const auto where = line.substr(second + 1);
    bool cpu = false;
    std::istringstream names(controllers);
    for (std::string name; std::getline(names, name, ',');) cpu = cpu || name == "cpu";
    std::string quota;
    int64_t period = 0;
    if (controllers.empty()) {
      std::ifstream limit("/sys/fs/cgroup" + where + "/cpu.max");
      if (!(limit >> quota >> period) || quota == "max") continue;
    } else if (cpu) {
      for (const auto* mount : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
        std::ifstream quota_file(mount + where + "/cpu.cfs_quota_us");
        std::ifstream period_file(mount + where + "/cpu.cfs_period_us");
        if (quota_file >> quota && period_file >> period) break;
      }
      if (quota.empty() || quota == "-1") continue;
    } else {
      continue;
    }
    try {
      if (period > 0 && std::stoll(quota) > 0) return std::max<int64_t>(1, std::stoll(quota) / period);
    } catch (const std::exception&) {
      // Not a number: no limit that can be read.
    }
  }
  return std::nullopt;
}

void RequireCuda() {
  if (torch::cuda::is_available()) return;
  // This library links only libtorch's CPU half; the CUDA half registers itself when loaded.
  std::string reason = "no CUDA device is visible";
  if (dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    const char* why = dlerror();
    reason = std::string("libtorch_cuda.so does not load (") + (why ? why : "unknown reason") + ")";
  } else if (torch::cuda::is_available()) {
    return;
  }
  throw Error(ErrorCode::kDevice, "device 'cuda' was requested but CUDA is not available: " + reason);
}

}  // namespace

int64_t AvailableCores() {
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = std::min<int64_t>(cores, CPU_COUNT(&set));
  if (const auto quota = CgroupCores()) cores = std::min(cores, *quota);
  return std::max<int64_t>(1, cores);
}

void Validate(const Options& options) {
  // Both names: the message reaches JavaScript and Python alike.
#define CHORIPAN_CHECK_OPTION(name, js, type, fallback, min, max)                                                \
  if (!(options.name >= (min) && options.name <= (max))) {                                                       \
    throw Error(ErrorCode::kInvalidArgument, std::string("Expected ") +                                          \
                                                 (std::is_integral_v<type> ? "an integer" : "a number") +        \
                                                 " between " + c10::str(min) + " and " + c10::str(max) +         \
                                                 " for " js " (" #name ") but received " + c10::str(options.name)); \
  }
  CHORIPAN_NUMERIC_OPTIONS(CHORIPAN_CHECK_OPTION)
#undef CHORIPAN_CHECK_OPTION
  if (!options.sha256.empty() && (options.sha256.size() != 64 || !std::ranges::all_of(options.sha256, [](char c) {
                                    return std::isxdigit(static_cast<unsigned char>(c));
                                  }))) {
    throw Error(ErrorCode::kInvalidArgument, "Expected 64 hexadecimal digits for sha256 but received '" +
                                                 options.sha256.substr(0, 80) + "'");
  }
}

// Options with the automatic values (0) replaced by what they mean on this machine.
Options Resolve(Options options) {
  std::ranges::transform(options.sha256, options.sha256.begin(), [](unsigned char c) { return std::tolower(c); });
  if (options.device == Device::kCuda) RequireCuda();
  const int64_t cores = AvailableCores();
  if (options.workers == 0) options.workers = options.device == Device::kCuda ? 1 : cores;
  if (options.intra_op_threads == 0) options.intra_op_threads = std::max<int64_t>(1, cores / options.workers);
  return options;
}

}  // namespace choripan
