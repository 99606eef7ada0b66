// What runs a preprocessed batch through an artifact: a TorchScript module or an AOTInductor package.
// The file decides which: a `.pt2` archive holds compiled models, anything else is read as TorchScript.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metadata.h"

namespace choripan {

enum class Device { kCpu, kCuda };

// Which compiled model of an AOTInductor package runs a batch of one on the CPU, and the times that
// decided it (Runner::ChooseLoneModel): the best of the timed passes of each, in milliseconds.
struct LoneBatch {
  std::string model;  // the vocabulary's singleModel ("batch1"), avx2SingleModel or batchedModel ("model")
  double single_ms = 0;
  double batched_ms = 0;
};

class Runner {
 public:
  virtual ~Runner() = default;

  // float [N, 3, H, W] on the CPU → the artifact's output, on the CPU. May be called from up to
  // `concurrency` threads at once (see LoadArtifact). Throws what libtorch throws.
  virtual at::Tensor Run(const at::Tensor& batch) = 0;

  // A package's batch-1 model has its weights packed at export for the kernels oneDNN picked on the
  // exporting CPU. Where this process's oneDNN picks others (a package compiled on a CPU with AVX-512,
  // served on one with AVX2 only, or another ONEDNN_MAX_CPU_ISA), it repacks them on every call: 3 to 4
  // times slower than the any-batch model at batch 1, where it is otherwise a fifth faster. (A package for
  // the x86-64-v3 baseline compiled with AVX-512 also holds the two packed for AVX2 kernels, which are
  // the ones loaded where oneDNN may not pick AVX-512 ones: OneDnnPicksAvx512.) Nothing in
  // the package says which kernels it was packed for, so this times both on `example` (one input, on the
  // calling thread and its OpenMP team) and leaves batches of one to the any-batch model only where the
  // batch-1 model is clearly slower (a busy moment must not trade away the fifth). The batch-2 model's
  // weights are packed the same way, so batches of two follow the same choice. Nothing to choose
  // (ChoosesLoneModel false) for TorchScript, for a package without a batch-1 model, or on a GPU.
  virtual bool ChoosesLoneModel() const { return false; }
  virtual void ChooseLoneModel(const at::Tensor& example) {}
  // The batch sizes with a model of their own in the package (1, and 2 since packages have one), which
  // warm-up runs too.
  virtual std::vector<int64_t> PackedBatchSizes() const { return {}; }
  virtual std::optional<LoneBatch> lone_batch() const { return std::nullopt; }
};

struct Artifact {
  std::unique_ptr<Runner> runner;
  Metadata metadata;
};

// Whether this CPU has the vector instructions that AOTInductor names in AOTI_CPU_ISA ("AVX2",
// "AVX512 AVX512_VNNI", …); the first one it lacks goes to `missing`.
bool CpuSupports(const std::string& isa, std::string* missing = nullptr);

// Whether oneDNN may pick its AVX-512 kernels here: this CPU has AVX-512 (AVX512F, BW, DQ, VL), and
// ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA), when set, allows them.
bool OneDnnPicksAvx512();

// Whether oneDNN's int8 kernels may multiply with VNNI here: this CPU has AVX-512's or AVX's, and
// ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA), when set, allows it.
bool OneDnnMultipliesWithVnni();

// Reads the file at `path` on the calling thread and checks it (archive.h; its SHA-256 too, when
// `sha256` is not empty), then its metadata and the checksum the metadata records, and only then hands
// the checked records to libtorch. Throws Error(kModelLoad) naming the path and what is wrong with it
// (not a regular file, not an archive, an unsafe or modified one, a training checkpoint rather than an
// artifact, compiled for another CPU, int8 with 8-bit activations where oneDNN has no VNNI), or
// Error(kDevice). A package's models for batches larger than `max_batch` are not loaded.
Artifact LoadArtifact(const std::string& path, Device device, int64_t concurrency, int64_t max_batch,
                      const std::string& sha256);

}  // namespace choripan
