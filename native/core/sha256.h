// SHA-256 (FIPS 180-4), for the checks a model file passes before it is loaded (archive.h). libtorch
// has no SHA-256 of its own and the runtime carries no crypto library; tests/python/test_archive.py
// compares this one with hashlib.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace choripan {

class Sha256 {
 public:
  // `portable`: never the SHA extensions (for tests that compare both ways).
  explicit Sha256(bool portable = false);
  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // The digest as 64 lower-case hex digits. Call once.
  std::string HexDigest();

 private:
  void Blocks(const uint8_t* data, size_t blocks);
  void Block(const uint8_t* block);  // the portable rounds

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  bool portable_;
  uint64_t length_ = 0;  // bytes so far
};

std::string Sha256Hex(std::string_view data, bool portable = false);

}  // namespace choripan
