#include "runner.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <sstream>
#include <string_view>

#include "errors.h"
#include "metadata.h"

namespace choripan {

namespace {

Error LoadError(const std::string& path, const std::string& reason) {
  return Error(ErrorCode::kModelLoad, "cannot load model " + path + ": " + reason);
}

std::string ReadRecord(caffe2::serialize::PyTorchStreamReader& reader, const std::string& name) {
  auto [data, size] = reader.getRecord(name);
  return std::string(static_cast<const char*>(data.get()), size);
}

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

  const char* format() const override { return "torchscript"; }

 private:
  torch::jit::Module module_;
  const Device device_;
};

// Names of the two models that export/aoti.py compiles into a package.
constexpr const char* kBatchedModel = "model";  // any batch size
constexpr const char* kSingleModel = "batch1";  // batch 1, its weights packed for that shape

class AotiRunner final : public Runner {
 public:
  AotiRunner(std::unique_ptr<torch::inductor::AOTIModelPackageLoader> batched,
             std::unique_ptr<torch::inductor::AOTIModelPackageLoader> single)
      : batched_(std::move(batched)), single_(std::move(single)) {}

  at::Tensor Run(const at::Tensor& batch) override {
    // Compiled for exactly these strides: another layout would be read wrongly, not refused.
    auto input = batch.contiguous();
    auto& model = input.size(0) == 1 && single_ ? *single_ : *batched_;
    auto outputs = model.run({input});
    if (outputs.size() != 1) throw std::runtime_error("the package returned " + std::to_string(outputs.size()) + " outputs");
    return outputs[0];
  }

  const char* format() const override { return "aoti"; }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> batched_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> single_;
};

// The vector instructions the compiled code uses (AOTI_CPU_ISA: "AVX2", "AVX512 AVX512_VNNI", …),
// checked before its library is loaded: running it on a CPU without them would crash the process.
void RequireCpuIsa(const std::string& path, const std::string& isa) {
  std::istringstream words(isa);
  std::string word;
  while (words >> word) {
    bool supported = true;
    if (word == "AVX2") {
      supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    } else if (word == "AVX512") {
      supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    } else if (word == "AVX512_VNNI") {
      supported = __builtin_cpu_supports("avx512vnni");
    }
    if (!supported) {
      throw LoadError(path, "it was compiled for a CPU with " + isa + ", and this CPU lacks " + word +
                                "; export it again on this machine (python -m export … --out NAME.pt2)");
    }
  }
}

Artifact LoadPackage(const std::string& path, caffe2::serialize::PyTorchStreamReader& reader, Device device,
                     int64_t concurrency) {
  bool has_single = false;
  for (const auto& record : reader.getAllRecords()) {
    if (record.starts_with(std::string("data/aotinductor/") + kSingleModel + "/")) has_single = true;
  }
  Artifact artifact;
  if (reader.hasRecord(std::string("extra/") + kMetadataFile)) {
    artifact.metadata = ReadRecord(reader, std::string("extra/") + kMetadataFile);
  }
  auto compiled = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, kBatchedModel);
  const auto device_key = compiled["AOTI_DEVICE_KEY"];
  if (device_key != (device == Device::kCuda ? "cuda" : "cpu")) {
    throw Error(ErrorCode::kDevice, "cannot load model " + path + " on device '" +
                                        (device == Device::kCuda ? "cuda" : "cpu") + "': it was compiled for '" +
                                        device_key + "'");
  }
  if (device == Device::kCpu) RequireCpuIsa(path, compiled["AOTI_CPU_ISA"]);
  const auto runners = static_cast<size_t>(std::max<int64_t>(1, concurrency));
  auto batched = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, kBatchedModel, false, runners);
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> single;
  if (has_single) single = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, kSingleModel, false, runners);
  artifact.runner = std::make_unique<AotiRunner>(std::move(batched), std::move(single));
  return artifact;
}

Artifact LoadTorchScript(const std::string& path, caffe2::serialize::PyTorchStreamReader& reader, Device device) {
  // torch.save() writes the same kind of archive without code: say what the file is, not that
  // "constants.pkl" is missing.
  if (!reader.hasRecord("constants.pkl") && reader.hasRecord("data.pkl")) {
    throw LoadError(path,
                    "it is a checkpoint saved with torch.save (weights or a pickled model), not a choripan "
                    "artifact; export it first, e.g. `python -m export torchvision --arch ARCH --weights " +
                        path + " --labels … --out model.pt`");
  }
  torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}};
  auto module = torch::jit::load(path, device == Device::kCuda ? at::kCUDA : at::kCPU, extra);
  return Artifact{std::make_unique<TorchScriptRunner>(std::move(module), device), extra[kMetadataFile]};
}

}  // namespace

Artifact LoadArtifact(const std::string& path, Device device, int64_t concurrency) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const std::exception& error) {
    // miniz's reason, without the paragraph of speculation that libtorch appends to it.
    auto reason = Describe(error);
    reason = reason.substr(0, reason.find(". "));
    throw LoadError(path, "it is not a TorchScript or .pt2 archive (" + reason + ")");
  }
  try {
    if (reader->hasRecord("archive_format") && ReadRecord(*reader, "archive_format") == "pt2") {
      return LoadPackage(path, *reader, device, concurrency);
    }
    return LoadTorchScript(path, *reader, device);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw LoadError(path, Describe(error));
  }
}

}  // namespace choripan
