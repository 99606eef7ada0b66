// The artifact's metadata document (export/choripan/artifact.py writes it into the archive as
// extra/choripan.json): the fields the runtime needs, parsed once at load.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "vocabulary.h"

namespace choripan {

// The artifact's constants are the vocabulary's (its "artifact" section says what each is).
inline constexpr const char* kMetadataFile = CHORIPAN_ARTIFACT_METADATA_FILE;
inline constexpr const char* kMetadataRecord = CHORIPAN_ARTIFACT_METADATA_RECORD;
#define CHORIPAN_ITEM(name) name,
inline const std::vector<std::string> kUncheckedRecords = {CHORIPAN_ARTIFACT_UNCHECKED_RECORDS(CHORIPAN_ITEM)};
// In the vocabulary's order, the first the default: Interpolation's values index it.
inline constexpr std::array kInterpolationNames = {CHORIPAN_ARTIFACT_INTERPOLATIONS(CHORIPAN_ITEM)};
#undef CHORIPAN_ITEM
inline constexpr int kFormatVersion = CHORIPAN_ARTIFACT_FORMAT_VERSION;

enum class Interpolation { kBilinear, kBicubic };
static_assert(kInterpolationNames.size() == 2, "Interpolation has a value for each of the vocabulary's interpolations");

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
  // An int8 package's activation width (quantization.activation_bits; 8 in those exported before the
  // field): 8 needs oneDNN to multiply with VNNI (OneDnnMultipliesWithVnni). 0: not int8.
  int64_t activation_bits = 0;

  // Throws Error(kModelLoad) naming what is missing or malformed.
  static Metadata Parse(const std::string& document);

 private:
  static Metadata ParseDocument(const std::string& document);
};

}  // namespace choripan
