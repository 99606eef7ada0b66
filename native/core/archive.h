// A model file is code: TorchScript, or compiled libraries in a `.pt2` whose constructors run as soon
// as they are mapped. An Archive reads the file once into memory and checks it there — against a
// SHA-256 the caller pins (a signed digest), then the zip's own structure, record by record — and the
// loaders read nothing but these checked bytes, so the file cannot change between check and use.
#pragma once

#include <caffe2/serialize/read_adapter_interface.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vocabulary.h"

namespace caffe2::serialize {
class PyTorchStreamReader;
}

namespace choripan {

// A private folder (mode 0700, under $TMPDIR or /tmp) with records written into it as regular files;
// removed, with everything in it, when destroyed.
class Extraction {
 public:
  explicit Extraction(std::string path) : path_(std::move(path)) {}
  ~Extraction();
  Extraction(const Extraction&) = delete;
  Extraction& operator=(const Extraction&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class Archive {
 public:
  // Reads `path` (a regular file) and refuses it, with Error(kModelLoad) naming the reason, unless:
  // its SHA-256 is `expected_sha256` (when not empty); it is a zip whose every entry is a stored or
  // deflated regular file under one top folder (no absolute path, no `..`, `.` or empty component, no
  // backslash, no link, no duplicate, no encryption); each entry's local header agrees with the central
  // directory, lies inside the file and overlaps no other; and the records would not inflate past
  // kMaxInflation times the file's size.
  static Archive Open(const std::string& path, const std::string& expected_sha256);

  Archive(Archive&&) noexcept;
  Archive& operator=(Archive&&) noexcept;
  ~Archive();

  const std::string& path() const { return path_; }

  // Records by their names inside the top folder ("extra/choripan.json", "data.pkl", …), sorted.
  std::vector<std::string> Names() const;
  bool Has(std::string_view name) const;
  // The record's bytes, inflated and checked against its CRC-32.
  std::string Read(std::string_view name) const;
  // SHA-256 over every record's name, a NUL and its bytes, in name order, leaving out `unchecked`:
  // the artifact checksum that export/choripan/artifact.py records.
  std::string RecordsChecksum(const std::vector<std::string>& unchecked) const;
  // The archive as libtorch's readers take it (torch::jit::load).
  std::shared_ptr<caffe2::serialize::ReadAdapterInterface> Adapter() const;
  // Writes the records whose names start with one of `prefixes` into a new Extraction, as name paths
  // below it.
  std::unique_ptr<Extraction> Extract(const std::vector<std::string>& prefixes) const;

  // Deflated code and debug records inflate a few times over; a zip bomb, thousands of times.
  static constexpr uint64_t kMaxInflation = CHORIPAN_ARTIFACT_MAX_INFLATION;

 private:
  struct Entry {
    uint64_t data_offset;
    uint64_t size;
    bool stored;
  };
  Archive() = default;
  // Valid while the archive lives.
  std::string_view Bytes(std::string_view name, const Entry& entry) const;

  std::string path_;
  std::shared_ptr<const std::string> bytes_;
  mutable std::deque<std::string> inflated_;  // deflated records read so far
  std::map<std::string, Entry, std::less<>> entries_;  // by name inside the top folder
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader_;
};

}  // namespace choripan
