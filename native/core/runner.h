// What runs a preprocessed batch through an artifact: a TorchScript module or an AOTInductor package.
// The file decides which: a `.pt2` archive holds compiled models, anything else is read as TorchScript.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "metadata.h"

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
  Metadata metadata;
};

// Whether this CPU has the vector instructions that AOTInductor names in AOTI_CPU_ISA ("AVX2",
// "AVX512 AVX512_VNNI", …); the first one it lacks goes to `missing`.
bool CpuSupports(const std::string& isa, std::string* missing = nullptr);

// Reads the file at `path` on the calling thread and checks it (archive.h; its SHA-256 too, when
// `sha256` is not empty), then its metadata and the checksum the metadata records, and only then hands
// the checked records to libtorch. Throws Error(kModelLoad) naming the path and what is wrong with it
// (not a regular file, not an archive, an unsafe or modified one, a training checkpoint rather than an
// artifact, compiled for another CPU), or Error(kDevice).
Artifact LoadArtifact(const std::string& path, Device device, int64_t concurrency, const std::string& sha256);

}  // namespace choripan
