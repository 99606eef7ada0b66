// What runs a preprocessed batch through an artifact: a TorchScript module or an AOTInductor package.
// The file decides which: a `.pt2` archive holds compiled models, anything else is read as TorchScript.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace choripan {

enum class Device { kCpu, kCuda };

class Runner {
 public:
  virtual ~Runner() = default;

  // float [N, 3, H, W] on the CPU → the artifact's output, on the CPU. May be called from up to
  // `concurrency` threads at once (see LoadArtifact). Throws what libtorch throws.
  virtual at::Tensor Run(const at::Tensor& batch) = 0;

  // "torchscript" or "aoti", for stats and messages.
  virtual const char* format() const = 0;
};

struct Artifact {
  std::unique_ptr<Runner> runner;
  std::string metadata;  // extra/choripan.json as stored; empty when the archive has none
};

// Reads the archive at `path` on the calling thread. Throws Error(kModelLoad) naming the path and what
// is wrong with it (not an archive, a training checkpoint rather than an artifact, compiled for another
// CPU or device), or Error(kDevice).
Artifact LoadArtifact(const std::string& path, Device device, int64_t concurrency);

}  // namespace choripan
