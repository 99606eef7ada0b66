#include "metadata.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "errors.h"

namespace choripan {

namespace {

template <typename T>
T Field(const nlohmann::json& object, const char* key, const char* where) {
  if (!object.contains(key)) {
    throw Error(ErrorCode::kModelLoad, std::string("metadata lacks ") + where + "." + key);
  }
  try {
    return object.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorCode::kModelLoad, std::string("metadata has a malformed ") + where + "." + key);
  }
}

}  // namespace

Metadata Metadata::Parse(const std::string& document) {
  try {
    return ParseDocument(document);
  } catch (const nlohmann::json::exception& error) {
    // A field of the wrong type where a default was allowed.
    throw Error(ErrorCode::kModelLoad, std::string("metadata is malformed: ") + error.what());
  }
}

Metadata Metadata::ParseDocument(const std::string& document) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(document);
  } catch (const nlohmann::json::parse_error& error) {
    throw Error(ErrorCode::kModelLoad, std::string("metadata is not JSON: ") + error.what());
  }
  if (!root.is_object() || root.value("format", "") != CHORIPAN_ARTIFACT_FORMAT) {
    throw Error(ErrorCode::kModelLoad, "metadata is not a choripan artifact document");
  }
  auto version = Field<int>(root, "format_version", "metadata");
  if (version > kFormatVersion) {
    throw Error(ErrorCode::kModelLoad, "artifact format version " + std::to_string(version) +
                                           " is newer than this choripan reads (" +
                                           std::to_string(kFormatVersion) + "): upgrade choripan");
  }

  Metadata metadata;
  metadata.document = document;
  metadata.name = Field<std::string>(root, "name", "metadata");
  metadata.labels = Field<std::vector<std::string>>(root, "labels", "metadata");
  if (metadata.labels.empty()) throw Error(ErrorCode::kModelLoad, "metadata lists no labels");

  const auto& pre = root.contains("preprocessing") ? root["preprocessing"] : nlohmann::json::object();
  auto& p = metadata.preprocessing;
  p.resize = Field<int64_t>(pre, "resize", "preprocessing");
  p.crop = Field<int64_t>(pre, "crop", "preprocessing");
  // Parsed as double then narrowed, exactly as torch.tensor(python_floats, dtype=float32) does.
  auto mean = Field<std::vector<double>>(pre, "mean", "preprocessing");
  auto std = Field<std::vector<double>>(pre, "std", "preprocessing");
  if (mean.size() != 3 || std.size() != 3) {
    throw Error(ErrorCode::kModelLoad, "preprocessing.mean and .std need three values each");
  }
  for (size_t i = 0; i < 3; ++i) {
    if (!(std[i] > 0)) throw Error(ErrorCode::kModelLoad, "preprocessing.std must be positive");
    p.mean[i] = static_cast<float>(mean[i]);
    p.std[i] = static_cast<float>(std[i]);
  }
  const auto interpolation = pre.value("interpolation", std::string(kInterpolationNames[0]));
  const auto* known = std::find(kInterpolationNames.begin(), kInterpolationNames.end(), interpolation);
  if (known == kInterpolationNames.end()) {
    std::string names;
    for (const auto* name : kInterpolationNames) names += (names.empty() ? "" : ", ") + std::string(name);
    throw Error(ErrorCode::kModelLoad, "preprocessing.interpolation '" + interpolation +
                                           "' is not one this choripan knows (" + names + ")");
  }
  p.interpolation = static_cast<Interpolation>(known - kInterpolationNames.begin());
  if (p.crop < 1 || p.resize < p.crop) {
    throw Error(ErrorCode::kModelLoad, "preprocessing needs 1 <= crop <= resize");
  }
  if (pre.contains("decode") && pre["decode"].contains("background")) {
    auto background = Field<std::vector<int32_t>>(pre["decode"], "background", "preprocessing.decode");
    if (background.size() != 3) {
      throw Error(ErrorCode::kModelLoad, "preprocessing.decode.background needs three values");
    }
    for (size_t i = 0; i < 3; ++i) p.background[i] = background[i];
  }
  if (!root.contains("checksum") || !root["checksum"].is_object() || !root["checksum"].contains("value") ||
      !root["checksum"]["value"].is_string()) {
    throw Error(ErrorCode::kModelLoad, "metadata records no checksum; export the model again");
  }
  metadata.checksum = root["checksum"]["value"].get<std::string>();
  metadata.format = "torchscript";  // artifacts from before the runtime field
  if (root.contains("runtime")) {
    if (!root["runtime"].is_object()) throw Error(ErrorCode::kModelLoad, "metadata has a malformed runtime");
    metadata.format = Field<std::string>(root["runtime"], "format", "runtime");
  }
  if (metadata.format == "aoti") {
    const auto& models = root["runtime"].contains("models") ? root["runtime"]["models"] : nlohmann::json::object();
    const auto batch = models.contains("model") ? Field<std::vector<int64_t>>(models["model"], "batch", "runtime.models.model")
                                                : std::vector<int64_t>{};
    if (batch.size() != 2 || batch[1] < 1) {
      throw Error(ErrorCode::kModelLoad, "metadata lacks runtime.models.model.batch, the batch sizes the package runs");
    }
    metadata.max_batch = batch[1];
  }
  if (root.contains("quantization")) {
    if (!root["quantization"].is_object()) throw Error(ErrorCode::kModelLoad, "metadata has a malformed quantization");
    metadata.activation_bits = root["quantization"].contains("activation_bits")
                                   ? Field<int64_t>(root["quantization"], "activation_bits", "quantization")
                                   : 8;
  }
  return metadata;
}

}  // namespace choripan
