#include "options.h"

#include <c10/util/StringUtil.h>
#include <dlfcn.h>
#include <sched.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
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

// The one shape of every message about a bad option.
Error Expected(Misuse misuse, const std::string& what, const std::string& option, const std::string& received) {
  return Error(misuse, "Expected " + what + " for " + option + " but received " + received);
}

template <typename T>
std::string Range(T min, T max) {
  return std::string(std::is_integral_v<T> ? "an integer" : "a number") + " between " + c10::str(min) + " and " +
         c10::str(max);
}

template <typename T>
bool InRange(double value, T min, T max) {
  if (!std::isfinite(value) || (std::is_integral_v<T> && std::trunc(value) != value)) return false;
  return value >= static_cast<double>(min) && value <= static_cast<double>(max);
}

// "'cpu' or 'cuda'"
std::string Devices() {
  std::vector<std::string> names;
#define CHORIPAN_DEVICE_NAME(name, text) names.push_back("'" text "'");
  CHORIPAN_DEVICES(CHORIPAN_DEVICE_NAME)
#undef CHORIPAN_DEVICE_NAME
  std::string list;
  for (size_t i = 0; i < names.size(); ++i) list += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return list;
}

bool IsHexDigest(const std::string& text) {
  return text.size() == 64 && std::ranges::all_of(text, [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// Edits from one to the other, case aside: how close a misspelled name is to a known one.
size_t Distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) == std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (same ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

int64_t AvailableCores() {
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = std::min<int64_t>(cores, CPU_COUNT(&set));
  if (const auto quota = CgroupCores()) cores = std::min(cores, *quota);
  return std::max<int64_t>(1, cores);
}

std::string_view OptionName(std::string_view name, Spelling spelling) {
#define CHORIPAN_OPTION_NAME(snake, camel, core) \
  if (name == #snake) return spelling == Spelling::kCamel ? camel : #snake;
  CHORIPAN_OPTIONS(CHORIPAN_OPTION_NAME)
#undef CHORIPAN_OPTION_NAME
  // A name that vocabulary.json does not list is a bug here, not the caller's: loud, never shown as is.
  throw std::logic_error("no load option is named " + std::string(name));
}

Options ReadOptions(const OptionSource& source) {
  const auto spelling = source.spelling();
  const bool js = spelling == Spelling::kCamel;
  std::vector<std::string> known;
#define CHORIPAN_KNOWN_OPTION(name, js_name, core) \
  if ((core) || js) known.emplace_back(OptionName(#name, spelling));
  CHORIPAN_OPTIONS(CHORIPAN_KNOWN_OPTION)
#undef CHORIPAN_KNOWN_OPTION
  for (const auto& name : source.Names()) {
    if (std::ranges::find(known, name) != known.end()) continue;
    const auto closest = std::ranges::min(known, {}, [&](const std::string& k) { return Distance(name, k); });
    std::string message = "Unknown option '" + name + "' for " + std::string(source.call()) + ".";
    if (Distance(name, closest) <= 3) message += " Did you mean '" + closest + "'?";
    message += " Known options:";
    for (size_t i = 0; i < known.size(); ++i) message += (i == 0 ? " " : ", ") + known[i];
    throw Error(Misuse::kType, message);
  }

  Options options;
  options.spelling = spelling;
  const auto refuse = [&](const std::string& name, const std::string& what, Misuse misuse = Misuse::kType) {
    return Expected(misuse, what, source.Label(name), source.Received(name));
  };
#define CHORIPAN_READ_OPTION(name, js_name, type, fallback, min, max)                    \
  {                                                                                      \
    const std::string key(OptionName(#name, spelling));                                  \
    if (const auto value = source.Get(key)) {                                            \
      const auto* number = std::get_if<double>(&*value);                                 \
      if (number == nullptr) throw refuse(key, Range<type>(min, max));                   \
      if (!InRange<type>(*number, min, max)) {                                           \
        throw refuse(key, Range<type>(min, max), Misuse::kRange);                        \
      }                                                                                  \
      options.name = static_cast<type>(*number);                                         \
    }                                                                                    \
  }
  CHORIPAN_NUMERIC_OPTIONS(CHORIPAN_READ_OPTION)
#undef CHORIPAN_READ_OPTION
  if (const auto value = source.Get("device")) {
    const auto* text = std::get_if<std::string>(&*value);
    bool known_device = false;
#define CHORIPAN_READ_DEVICE(name, device_text)      \
  if (text != nullptr && *text == device_text) {     \
    options.device = Device::k##name;                \
    known_device = true;                             \
  }
    CHORIPAN_DEVICES(CHORIPAN_READ_DEVICE)
#undef CHORIPAN_READ_DEVICE
    if (!known_device) throw refuse("device", Devices());
  }
  if (const auto value = source.Get("warmup")) {
    const auto* flag = std::get_if<bool>(&*value);
    if (flag == nullptr) throw refuse("warmup", "a boolean");
    options.warmup = *flag;
  }
  if (const auto value = source.Get("sha256")) {
    const auto* digest = std::get_if<std::string>(&*value);
    if (digest == nullptr || !IsHexDigest(*digest)) throw refuse("sha256", "64 hexadecimal digits");
    options.sha256 = *digest;
  }
  return options;
}

void Validate(const Options& options) {
#define CHORIPAN_CHECK_OPTION(name, js, type, fallback, min, max)                                          \
  if (!InRange<type>(static_cast<double>(options.name), min, max)) {                                      \
    throw Expected(Misuse::kRange, Range<type>(min, max), std::string(OptionName(#name, options.spelling)), \
                   c10::str(options.name));                                                               \
  }
  CHORIPAN_NUMERIC_OPTIONS(CHORIPAN_CHECK_OPTION)
#undef CHORIPAN_CHECK_OPTION
  if (!options.sha256.empty() && !IsHexDigest(options.sha256)) {
    throw Expected(Misuse::kType, "64 hexadecimal digits", "sha256", "'" + options.sha256.substr(0, 80) + "'");
  }
}

// Options with the automatic values (0) replaced by what they mean on this machine.
Options Resolve(Options options, std::string_view format) {
  std::ranges::transform(options.sha256, options.sha256.begin(), [](unsigned char c) { return std::tolower(c); });
  if (options.device == Device::kCuda) RequireCuda();
  const int64_t cores = AvailableCores();
  if (options.workers == 0) options.workers = options.device == Device::kCuda || format == "torchscript" ? 1 : cores;
  if (options.intra_op_threads == 0) options.intra_op_threads = std::max<int64_t>(1, cores / options.workers);
  return options;
}

}  // namespace choripan
