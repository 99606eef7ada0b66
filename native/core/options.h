// Load options, and the machine they are resolved on: the cores this process may use (affinity, cgroup
// quota) and whether CUDA is there. Names, defaults and ranges come from vocabulary.json (see
// vocabulary.h), where each is described.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runner.h"
#include "vocabulary.h"

namespace choripan {

// How a binding's language spells option names, which every message that names one follows: the core's
// snake_case ("max_batch": Python's keyword arguments, and C++) or JS's camelCase ("maxBatch").
enum class Spelling { kSnake, kCamel };

// In short: workers 0 picks, for a compiled package, the CPU cores this process may use (cgroup quota and
// affinity included), and for TorchScript or on a GPU, 1; intra_op_threads 0 picks cores / workers. With
// one thread per worker, a batch that runs alone (no other worker busy, nothing else queued or reserved)
// gets all `workers` threads: a lone request is answered as fast as the cores allow, concurrent ones each
// take a core. TorchScript runs one worker on every core because two of its passes side by side are
// slower than one on both cores (docs/runtime.md#threads).
struct Options {
#define CHORIPAN_OPTION_FIELD(name, js, type, fallback, min, max) type name = fallback;
  CHORIPAN_NUMERIC_OPTIONS(CHORIPAN_OPTION_FIELD)
#undef CHORIPAN_OPTION_FIELD
  Device device = std::string_view(CHORIPAN_DEFAULT_DEVICE) == "cuda" ? Device::kCuda : Device::kCpu;
  bool warmup = CHORIPAN_DEFAULT_WARMUP;
  std::string sha256;  // the file's digest in hex; when set, any other file is refused before it is read
  // How the caller names these options (ReadOptions sets it from its source): the messages that name one
  // later, when the model loads or runs, name it as the caller does.
  Spelling spelling = Spelling::kSnake;
};

// The option the core calls `name` ("max_batch", as in vocabulary.h) in `spelling`: "max_batch" or
// "maxBatch". The one translation of option names between the bindings' languages.
std::string_view OptionName(std::string_view name, Spelling spelling);

// The cores this process may run on: affinity mask and cgroup (v1 or v2) CPU quota, at least 1.
int64_t AvailableCores();

// A value as a binding's language gave it: absent (undefined, None) is no value at all; monostate is
// one of a type the core never takes (an object, a list).
using OptionValue = std::variant<std::monostate, double, bool, std::string>;

// Where a binding's options come from (a JS object, Python keyword arguments), and how its language
// names them and shows their values: ReadOptions is the one reader of both bindings, with one message
// shape, "Expected <what> for <option> but received <value> of type <type>".
class OptionSource {
 public:
  virtual ~OptionSource() = default;
  // Whether options go by their JS names ("maxBatch"; js/ reads the JS-only ones itself) or their
  // Python ones ("max_batch").
  virtual Spelling spelling() const = 0;
  // The call they are for, in messages: "load()", "Model()".
  virtual std::string_view call() const = 0;
  // The names given, in their order.
  virtual std::vector<std::string> Names() const = 0;
  // The value given for `name`, if any.
  virtual std::optional<OptionValue> Get(const std::string& name) const = 0;
  // How messages refer to the option and show its value: "options.maxBatch" / "max_batch", and
  // "2.5 of type number" / "2.5 of type float".
  virtual std::string Label(const std::string& name) const = 0;
  virtual std::string Received(const std::string& name) const = 0;
};

// Every option `source` gives, read and checked against vocabulary.json's table: a name it does not know
// (with the closest one suggested), a value of another type or out of its range, throw
// Error(kInvalidArgument); what is not given keeps its default.
Options ReadOptions(const OptionSource& source);

// Throws Error(kInvalidArgument) for a value out of its range, naming the option in options.spelling: for
// Options that no binding read (ReadOptions checks the ranges in the caller's words).
void Validate(const Options& options);

// `options` with the automatic values (0) replaced by what they mean on this machine for an artifact of
// `format` (Metadata::format: "torchscript" or "aoti"), and the digest in lower case. Throws
// Error(kDevice) for 'cuda' where CUDA is not available.
Options Resolve(Options options, std::string_view format);

}  // namespace choripan
