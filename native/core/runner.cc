#include "runner.h"

#include <nlohmann/json.hpp>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <string_view>
#include <vector>

#include "archive.h"
#include "errors.h"

namespace choripan {

namespace {

class TorchScriptRunner final : public Runner {
 public:
  TorchScriptRunner(torch::jit::Module module, Device device) : module_(std::move(module)), device_(device) {
    module_.eval();
  }

  at::Tensor Run(const at::Tensor& batch) override {
    // On the CPU, oneDNN's convolutions run a channels-last batch markedly faster than NCHW (results
    // within 1e-6 of it).
    auto input = device_ == Device::kCuda ? batch.to(at::kCUDA) : batch.contiguous(at::MemoryFormat::ChannelsLast);
    return module_.forward({input}).toTensor().to(at::kCPU);
  }

 private:
  torch::jit::Module module_;
  const Device device_;
};

// Names of the models that export/choripan/aoti.py compiles into a package, and where their files are.
constexpr const char* kBatchedModel = CHORIPAN_ARTIFACT_BATCHED_MODEL;  // any batch size
constexpr const char* kSingleModel = CHORIPAN_ARTIFACT_SINGLE_MODEL;    // batch 1, its weights packed for that shape
constexpr const char* kPairModel = CHORIPAN_ARTIFACT_PAIR_MODEL;        // batch 2, likewise; not in older packages
// The same two with their weights packed for oneDNN's AVX2 kernels, in a package for the x86-64-v3
// baseline compiled where oneDNN picks AVX-512 kernels; loaded instead of those where it may not.
constexpr const char* kAvx2SingleModel = CHORIPAN_ARTIFACT_AVX2_SINGLE_MODEL;
constexpr const char* kAvx2PairModel = CHORIPAN_ARTIFACT_AVX2_PAIR_MODEL;
constexpr int64_t kSingleModelBatch = CHORIPAN_ARTIFACT_SINGLE_MODEL_BATCH;
constexpr int64_t kPairModelBatch = CHORIPAN_ARTIFACT_PAIR_MODEL_BATCH;
constexpr std::string_view kCompiledFolder = CHORIPAN_ARTIFACT_COMPILED_FOLDER;

using Loader = torch::inductor::AOTIModelPackageLoader;

class AotiRunner final : public Runner {
 public:
  AotiRunner(std::unique_ptr<Loader> batched, const char* single_name, std::unique_ptr<Loader> single,
             std::unique_ptr<Loader> pair, std::unique_ptr<Extraction> files, Device device)
      : batched_(std::move(batched)),
        single_name_(single_name),
        single_(std::move(single)),
        pair_(std::move(pair)),
        files_(std::move(files)),
        device_(device) {
    use_packed_ = single_ != nullptr;
  }

  at::Tensor Run(const at::Tensor& batch) override {
    // Compiled for exactly these strides: another layout would be read wrongly, not refused.
    auto input = batch.contiguous();
    auto* model = batched_.get();
    // The batch-2 model's weights are packed as the batch-1 model's are: where those lost, so do these.
    if (use_packed_) {
      if (input.size(0) == kSingleModelBatch) model = single_.get();
      if (input.size(0) == kPairModelBatch && pair_) model = pair_.get();
    }
    return Output(model->run({input}));
  }

  std::vector<int64_t> PackedBatchSizes() const override {
    std::vector<int64_t> sizes;
    if (single_) sizes.push_back(kSingleModelBatch);
    if (pair_) sizes.push_back(kPairModelBatch);
    return sizes;
  }

  bool ChoosesLoneModel() const override { return single_ && device_ == Device::kCpu; }

  void ChooseLoneModel(const at::Tensor& example) override {
    if (!ChoosesLoneModel()) return;
    const auto input = example.contiguous();
    auto single_ms = std::numeric_limits<double>::infinity();
    auto batched_ms = single_ms;
    // Alternately, so that a busy moment of the machine slows both; the best of each, so that it does
    // not decide. The first pass of the any-batch model at this shape is among them.
    for (int round = 0; round < kChoiceRounds; ++round) {
      single_ms = std::min(single_ms, Milliseconds(*single_, input));
      batched_ms = std::min(batched_ms, Milliseconds(*batched_, input));
    }
    use_packed_ = single_ms <= kSlowerBy * batched_ms;
    std::lock_guard lock(mutex_);
    lone_batch_ = LoneBatch{use_packed_ ? single_name_ : kBatchedModel, single_ms, batched_ms};
  }

  std::optional<LoneBatch> lone_batch() const override {
    std::lock_guard lock(mutex_);
    return lone_batch_;
  }

 private:
  static constexpr int kChoiceRounds = CHORIPAN_ARTIFACT_LONE_BATCH_CHOICE_ROUNDS;
  // Repacking made the batch-1 model 3-4x slower than the any-batch one; packed for the CPU, a fifth faster.
  static constexpr double kSlowerBy = CHORIPAN_ARTIFACT_LONE_BATCH_SLOWER_BY;

  static at::Tensor Output(std::vector<at::Tensor> outputs) {
    if (outputs.size() != 1) throw std::runtime_error("the package returned " + std::to_string(outputs.size()) + " outputs");
    return outputs[0];
  }

  static double Milliseconds(Loader& model, const at::Tensor& input) {
    const auto started = std::chrono::steady_clock::now();
    Output(model.run({input}));
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  }

  std::unique_ptr<Loader> batched_;
  const char* single_name_;  // the batch-1 model's name in the package
  std::unique_ptr<Loader> single_;
  std::unique_ptr<Loader> pair_;
  std::unique_ptr<Extraction> files_;  // kept only where the runner reads from it later (CUDA kernels)
  const Device device_;
  std::atomic<bool> use_packed_;  // whether a batch of one runs single_, and one of two pair_ (where there is one)
  mutable std::mutex mutex_;
  std::optional<LoneBatch> lone_batch_;
};

// The vector instructions the compiled code uses (AOTI_CPU_ISA: "AVX2", "AVX512 AVX512_VNNI", …),
// checked before its library is loaded: running it on a CPU without them would crash the process.
void RequireCpuIsa(const std::string& path, const std::string& isa) {
  std::string missing;
  if (!CpuSupports(isa, &missing)) {
    throw ModelLoadError(path, "it was compiled for a CPU with " + isa + ", and this CPU lacks " + missing +
                                   "; export it again on this machine (python -m choripan … --out NAME.pt2), or "
                                   "for an older x86-64 level (--target-cpu x86-64-v3)");
  }
}

// What AOTInductor recorded about a compiled model (AOTI_DEVICE_KEY, AOTI_CPU_ISA, …), read from the
// checked archive rather than from files a loader extracted.
std::map<std::string, std::string> CompiledMetadata(const Archive& archive, const std::string& model) {
  const auto folder = std::string(kCompiledFolder) + model + "/";
  std::string found;
  for (const auto& name : archive.Names()) {
    if (name.starts_with(folder) && name.ends_with("_metadata.json") && (found.empty() || name.ends_with("wrapper_metadata.json"))) {
      found = name;
    }
  }
  if (found.empty()) throw ModelLoadError(archive.path(), "its compiled model '" + model + "' has no metadata");
  try {
    return nlohmann::json::parse(archive.Read(found)).get<std::map<std::string, std::string>>();
  } catch (const nlohmann::json::exception&) {
    throw ModelLoadError(archive.path(), "its compiled model '" + model + "' has malformed metadata");
  }
}

std::unique_ptr<Runner> LoadPackage(const Archive& archive, Device device, int64_t concurrency, int64_t max_batch) {
  auto compiled = CompiledMetadata(archive, kBatchedModel);
  const auto wanted = device == Device::kCuda ? "cuda" : "cpu";
  if (compiled["AOTI_DEVICE_KEY"] != wanted) {
    throw Error(ErrorCode::kDevice, "cannot load model " + archive.path() + " on device '" + wanted +
                                        "': it was compiled for '" + compiled["AOTI_DEVICE_KEY"] + "'");
  }
  if (device == Device::kCpu) RequireCpuIsa(archive.path(), compiled["AOTI_CPU_ISA"]);
  const auto has = [&archive](const char* model) {
    const auto folder = std::string(kCompiledFolder) + model + "/";
    return std::ranges::any_of(archive.Names(), [&](const auto& name) { return name.starts_with(folder); });
  };
  // One packing is loaded, not both: a compiled model's library stays mapped once loaded (its unique
  // symbols make glibc keep it), and the other's 42 MB would stay with it.
  const bool avx2 = device == Device::kCpu && has(kAvx2SingleModel) && !OneDnnPicksAvx512();
  const auto* single_name = avx2 ? kAvx2SingleModel : kSingleModel;
  // A batch-2 model is used only beside a batch-1 model that decides for both, and only where batches of
  // two form: with max_batch 1 its 21 MB of packed weights would be read and never run.
  const auto* pair_name = has(single_name) && max_batch >= kPairModelBatch ? (avx2 ? kAvx2PairModel : kPairModel) : nullptr;
  std::vector<std::string> folders;
  for (const auto* model : {kBatchedModel, single_name, pair_name}) {
    if (model != nullptr && has(model)) folders.push_back(std::string(kCompiledFolder) + model + "/");
  }
  // The loaders read the checked records from a private folder, never the file itself (which they
  // would extract, unchecked, into a folder of their own); only the models to load are written there.
  auto files = archive.Extract(folders);
  const auto runners = static_cast<size_t>(std::max<int64_t>(1, concurrency));
  const auto load = [&](const char* model) {
    return model != nullptr && has(model) ? std::make_unique<Loader>(files->path(), model, false, runners) : nullptr;
  };
  auto batched = std::make_unique<Loader>(files->path(), kBatchedModel, false, runners);
  auto single = load(single_name);
  auto pair = load(pair_name);
  // On the CPU the libraries are mapped and their weights read by now: the folder can go.
  if (device == Device::kCpu) files.reset();
  return std::make_unique<AotiRunner>(std::move(batched), single_name, std::move(single), std::move(pair),
                                      std::move(files), device);
}

std::unique_ptr<Runner> LoadTorchScript(const Archive& archive, Device device) {
  auto module = torch::jit::load(archive.Adapter(), device == Device::kCuda ? at::kCUDA : at::kCPU);
  return std::make_unique<TorchScriptRunner>(std::move(module), device);
}

}  // namespace

bool CpuSupports(const std::string& isa, std::string* missing) {
  std::istringstream words(isa);
  std::string word;
  while (words >> word) {
    // A word this table does not know is refused: a crash is worse than a load that says why.
    bool supported = false;
    if (word == "AVX2") {
      supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    } else if (word == "AVX512") {
      supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    } else if (word == "AVX512_VNNI") {
      supported = __builtin_cpu_supports("avx512vnni");
    } else if (word == "AMX_TILE") {
      supported = __builtin_cpu_supports("amx-tile");
    }
    if (!supported) {
      if (missing) *missing = word;
      return false;
    }
  }
  return true;
}

namespace {

// ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA) in capitals, "ALL" where neither is set.
std::string OneDnnCap() {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (cap == nullptr) cap = std::getenv("DNNL_MAX_CPU_ISA");
  std::string allowed = cap == nullptr ? "ALL" : cap;
  std::ranges::transform(allowed, allowed.begin(), [](unsigned char c) { return std::toupper(c); });
  return allowed;
}

}  // namespace

bool OneDnnPicksAvx512() {
  const auto allowed = OneDnnCap();
#define CHORIPAN_ITEM(prefix) allowed.starts_with(prefix) ||
  return CpuSupports("AVX512") && (CHORIPAN_ARTIFACT_ONE_DNN_AVX512_CAPS(CHORIPAN_ITEM) false);
#undef CHORIPAN_ITEM
}

bool OneDnnMultipliesWithVnni() {
  const auto allowed = OneDnnCap();
  const auto allows = [&allowed](std::initializer_list<std::string_view> caps) {
    return std::ranges::find(caps, allowed) != caps.end();
  };
#define CHORIPAN_ITEM(name) name,
  return (__builtin_cpu_supports("avx512vnni") && allows({CHORIPAN_ARTIFACT_ONE_DNN_AVX512_VNNI_CAPS(CHORIPAN_ITEM)})) ||
         (__builtin_cpu_supports("avxvnni") && allows({CHORIPAN_ARTIFACT_ONE_DNN_AVX_VNNI_CAPS(CHORIPAN_ITEM)}));
#undef CHORIPAN_ITEM
}

Artifact LoadArtifact(const std::string& path, Device device, int64_t concurrency, int64_t max_batch,
                      const std::string& sha256) {
  const auto archive = Archive::Open(path, sha256);
  if (!archive.Has(kMetadataRecord)) {
    // torch.save() writes the same kind of archive without code: say what the file is.
    if (!archive.Has("constants.pkl") && archive.Has("data.pkl")) {
      throw ModelLoadError(path,
                           "it is a checkpoint saved with torch.save (weights or a pickled model), not a choripan "
                           "artifact; export it first, e.g. `python -m choripan torchvision --arch ARCH --weights " +
                               path + " --labels … --out model.pt`");
    }
    throw ModelLoadError(path, std::string("it has no choripan metadata (") + kMetadataRecord +
                                   "); export it with `python -m choripan`");
  }
  Artifact artifact;
  try {
    artifact.metadata = Metadata::Parse(archive.Read(kMetadataRecord));
  } catch (const Error& error) {
    throw ModelLoadError(path, error.what());
  }
  const bool package = archive.Has("archive_format") && archive.Read("archive_format") == "pt2";
  if (package != (artifact.metadata.format == "aoti")) {
    throw ModelLoadError(path, "its metadata says runtime format '" + artifact.metadata.format + "' but it holds " +
                                   (package ? "an AOTInductor package" : "TorchScript"));
  }
  // The checksum says whether the records are the ones exported; only a signature says who exported
  // them (anyone can compute a checksum).
  if (archive.RecordsChecksum(kUncheckedRecords) != artifact.metadata.checksum) {
    throw ModelLoadError(path, "its records do not match the checksum recorded at export: it was changed after "
                               "export, or damaged");
  }
  if (artifact.metadata.activation_bits == 8 && device == Device::kCpu && !OneDnnMultipliesWithVnni()) {
    throw ModelLoadError(path, CHORIPAN_ARTIFACT_EIGHT_BIT_ACTIVATIONS_REFUSAL);
  }
  try {
    artifact.runner = package ? LoadPackage(archive, device, concurrency, max_batch) : LoadTorchScript(archive, device);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw ModelLoadError(path, Describe(error));
  }
  return artifact;
}

}  // namespace choripan
