// The artifact's metadata document (export/choripan/artifact.py writes it into the archive as
// extra/choripan.json): the fields the runtime needs, parsed once at load.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace choripan {

inline constexpr const char* kMetadataFile = "choripan.json";
inline constexpr const char* kMetadataRecord = "extra/choripan.json";
// Records the artifact checksum leaves out: the metadata that holds it, and torch's id of the archive,
// which hashes the records, metadata included (export/choripan/artifact.py).
inline const std::vector<std::string> kUncheckedRecords = {kMetadataRecord, ".data/serialization_id"};
inline constexpr int kFormatVersion = 1;

enum class Interpolation { kBilinear, kBicubic };

struct Preprocessing {
  int64_t resize = 256;
  Interpolation interpolation = Interpolation::kBilinear;  // antialiased either way
  int64_t crop = 224;
  std::array<float, 3> mean{};
  std::array<float, 3> std{};
  std::array<int32_t, 3> background{255, 255, 255};
};

struct Metadata {
  std::string document;  // the JSON text as stored, handed to the bindings unchanged
  std::string name;
  std::string format;    // runtime.format: "torchscript" or "aoti"
  std::string checksum;  // checksum.value: SHA-256 of the records it covers, in hex
  std::vector<std::string> labels;
  Preprocessing preprocessing;
  // A compiled package (runtime.format "aoti") takes exactly [N, 3, crop, crop] with N up to
  // max_batch, and reads any other shape wrongly rather than refusing it. 0: any shape (TorchScript).
  int64_t max_batch = 0;

  // Throws Error(kModelLoad) naming what is missing or malformed.
  static Metadata Parse(const std::string& document);

 private:
  static Metadata ParseDocument(const std::string& document);
};

}  // namespace choripan
