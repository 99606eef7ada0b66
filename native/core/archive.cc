#include "archive.h"

#include <caffe2/serialize/inline_container.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "errors.h"
#include "sha256.h"

namespace choripan {

namespace {

// What stat says a path is, where it is not a file to read.
std::string NotAFile(mode_t mode) {
  if (S_ISDIR(mode)) return "it is a directory, not a model file";
  if (S_ISFIFO(mode)) return "it is a FIFO, not a regular file";
  if (S_ISCHR(mode)) return "it is a character device, not a regular file";
  if (S_ISBLK(mode)) return "it is a block device, not a regular file";
  if (S_ISSOCK(mode)) return "it is a socket, not a regular file";
  return "it is not a regular file";
}

std::string Reason(int error) {
  if (error == ENOENT) return "no such file";
  if (error == EACCES) return "permission denied";
  return std::strerror(error);
}

// The whole file, once. A FIFO or a device is refused before it is opened for reading (opening a FIFO
// would wait for a writer), and again after, in case the path changed in between.
std::string ReadWhole(const std::string& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) throw ModelLoadError(path, Reason(errno));
  if (!S_ISREG(info.st_mode)) throw ModelLoadError(path, NotAFile(info.st_mode));
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ModelLoadError(path, Reason(errno));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  if (fstat(fd, &info) != 0) throw ModelLoadError(path, Reason(errno));
  if (!S_ISREG(info.st_mode)) throw ModelLoadError(path, NotAFile(info.st_mode));
  if (info.st_size == 0) throw ModelLoadError(path, "it is empty");
  std::string bytes(static_cast<size_t>(info.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    const auto got = read(fd, bytes.data() + done, bytes.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw ModelLoadError(path, std::string("cannot read it: ") + std::strerror(errno));
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  char more;
  if (done != bytes.size() || read(fd, &more, 1) != 0) throw ModelLoadError(path, "it changed while it was read");
  return bytes;
}

// Little-endian fields of a zip structure, bounds-checked against the whole file.
class Fields {
 public:
  Fields(const std::string& bytes, const std::string& path) : bytes_(bytes), path_(path) {}

  uint64_t At(uint64_t offset, int width) const {
    if (offset > bytes_.size() || bytes_.size() - offset < static_cast<uint64_t>(width)) {
      throw Malformed("a structure runs past the end of the file");
    }
    uint64_t value = 0;
    for (int i = width - 1; i >= 0; --i) value = value << 8 | static_cast<uint8_t>(bytes_[offset + i]);
    return value;
  }
  uint16_t U16(uint64_t offset) const { return static_cast<uint16_t>(At(offset, 2)); }
  uint32_t U32(uint64_t offset) const { return static_cast<uint32_t>(At(offset, 4)); }
  uint64_t U64(uint64_t offset) const { return At(offset, 8); }
  std::string_view Text(uint64_t offset, uint64_t size) const {
    At(offset, 0);
    if (bytes_.size() - offset < size) throw Malformed("a name runs past the end of the file");
    return std::string_view(bytes_).substr(offset, size);
  }

  Error Malformed(const std::string& what) const {
    return ModelLoadError(path_, "it is not a well-formed TorchScript or .pt2 archive (" + what + ")");
  }
  Error Unsafe(const std::string& what) const {
    return ModelLoadError(path_, "its archive is refused: " + what);
  }

 private:
  const std::string& bytes_;
  const std::string& path_;
};

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint32_t kZip64End = 0x06064b50;
constexpr uint16_t kZip64Extra = 0x0001;
constexpr uint16_t kStored = 0;
constexpr uint16_t kDeflated = 8;

struct CentralEntry {
  std::string name;
  uint16_t method;
  uint64_t compressed;
  uint64_t size;
  uint64_t local_offset;
  uint64_t data_offset = 0;
};

// Where the central directory is and how many entries it holds, from the end records.
struct Directory {
  uint64_t offset;
  uint64_t size;
  uint64_t entries;
};

Directory FindDirectory(const Fields& f, uint64_t file_size) {
  // The end record is the last 22 bytes, or further up by the length of a comment (at most 65535).
  const uint64_t lowest = file_size > 22 + 65535 ? file_size - 22 - 65535 : 0;
  for (uint64_t at = file_size >= 22 ? file_size - 22 : 0; file_size >= 22; --at) {
    if (f.U32(at) == kEndOfCentralDirectory && at + 22 + f.U16(at + 20) == file_size) {
      if (f.U16(at + 4) != 0 || f.U16(at + 6) != 0 || f.U16(at + 8) != f.U16(at + 10)) {
        throw f.Malformed("it spans several disks");
      }
      Directory directory{f.U32(at + 16), f.U32(at + 12), f.U16(at + 10)};
      if (at >= 20 && f.U32(at - 20) == kZip64Locator) {
        const uint64_t end64 = f.U64(at - 12);
        if (f.U32(end64) != kZip64End) throw f.Malformed("the zip64 end record is missing");
        const Directory wide{f.U64(end64 + 48), f.U64(end64 + 40), f.U64(end64 + 32)};
        // The classic record may only say "see zip64" (all ones) or agree with it.
        if ((directory.entries != 0xffff && directory.entries != wide.entries) ||
            (directory.size != 0xffffffff && directory.size != wide.size) ||
            (directory.offset != 0xffffffff && directory.offset != wide.offset)) {
          throw f.Malformed("its zip64 and classic end records disagree");
        }
        directory = wide;
      }
      if (directory.offset > file_size || directory.size > file_size - directory.offset) {
        throw f.Malformed("the central directory lies outside the file");
      }
      return directory;
    }
    if (at == lowest) break;
  }
  throw f.Malformed("no zip end record");
}

// An entry's name for a message: quoted, and not the whole of a name made to flood the log.
std::string Quoted(std::string_view name) {
  std::string quoted = "'";
  quoted.append(name.substr(0, 200)).append(name.size() > 200 ? "…'" : "'");
  return quoted;
}

// A name is safe to use as a path below a folder of ours: relative, with no way up and no aliases.
void CheckName(const Fields& f, std::string_view name) {
  const auto quoted = Quoted(name);
  if (name.empty()) throw f.Unsafe("an entry has an empty name");
  if (name.find('\0') != std::string_view::npos) throw f.Unsafe("an entry's name holds a NUL byte");
  if (name.find('\\') != std::string_view::npos) throw f.Unsafe("the entry " + quoted + " has a backslash in its name");
  if (name.front() == '/') throw f.Unsafe("the entry " + quoted + " has an absolute path");
  size_t start = 0;
  while (start <= name.size()) {
    const auto end = std::min(name.find('/', start), name.size());
    const auto part = name.substr(start, end - start);
    if (part.empty()) throw f.Unsafe("the entry " + quoted + " has an empty path component (a folder, or '//')");
    if (part == "." || part == "..") throw f.Unsafe("the entry " + quoted + " has a '" + std::string(part) + "' component");
    start = end + 1;
  }
}

std::vector<CentralEntry> ReadDirectory(const Fields& f, uint64_t file_size) {
  const auto directory = FindDirectory(f, file_size);
  std::vector<CentralEntry> entries;
  uint64_t at = directory.offset;
  const uint64_t end = directory.offset + directory.size;
  for (uint64_t i = 0; i < directory.entries; ++i) {
    if (at >= end || f.U32(at) != kCentralHeader) throw f.Malformed("the central directory is damaged");
    const uint16_t made_by = f.U16(at + 4);
    const uint16_t flags = f.U16(at + 8);
    CentralEntry entry;
    entry.method = f.U16(at + 10);
    entry.compressed = f.U32(at + 20);
    entry.size = f.U32(at + 24);
    const uint16_t name_length = f.U16(at + 28);
    const uint16_t extra_length = f.U16(at + 30);
    const uint16_t comment_length = f.U16(at + 32);
    const uint32_t attributes = f.U32(at + 38);
    entry.local_offset = f.U32(at + 42);
    entry.name = std::string(f.Text(at + 46, name_length));
    // Zip64: the fields that are all ones come, in this order, from the extra field.
    for (uint64_t extra = at + 46 + name_length; extra + 4 <= at + 46 + name_length + extra_length;) {
      const uint16_t id = f.U16(extra);
      const uint16_t length = f.U16(extra + 2);
      if (id == kZip64Extra) {
        uint64_t field = extra + 4;
        for (uint64_t* value : {&entry.size, &entry.compressed, &entry.local_offset}) {
          if (*value != 0xffffffff) continue;
          if (field + 8 > extra + 4 + length) throw f.Malformed("a zip64 extra field is short");
          *value = f.U64(field);
          field += 8;
        }
      }
      extra += 4 + length;
    }
    CheckName(f, entry.name);
    const auto quoted = Quoted(entry.name);
    if (flags & 1) throw f.Unsafe("the entry " + quoted + " is encrypted");
    const uint32_t type = attributes >> 16 & 0170000;
    if (made_by >> 8 == 3 && type != 0 && type != 0100000) {  // Unix: a link, a device, a folder, …
      throw f.Unsafe("the entry " + quoted + (type == 0120000 ? " is a symbolic link" : " is not a regular file"));
    }
    if (entry.method != kStored && entry.method != kDeflated) {
      throw f.Malformed("the entry " + quoted + " uses compression method " + std::to_string(entry.method));
    }
    if (entry.method == kStored && entry.compressed != entry.size) {
      throw f.Malformed("the stored entry " + quoted + " declares two sizes");
    }
    // The local header must name the same entry, stored the same way, inside the file.
    const uint64_t local = entry.local_offset;
    if (f.U32(local) != kLocalHeader) throw f.Malformed("the entry " + quoted + " has no local header");
    if (f.Text(local + 30, f.U16(local + 26)) != entry.name || f.U16(local + 8) != entry.method) {
      throw f.Unsafe("the entry " + quoted + " is described differently in its local header");
    }
    entry.data_offset = local + 30 + f.U16(local + 26) + f.U16(local + 28);
    if (entry.data_offset > directory.offset || entry.compressed > directory.offset - entry.data_offset) {
      throw f.Malformed("the entry " + quoted + " runs past its data");
    }
    entries.push_back(std::move(entry));
    at += 46 + name_length + extra_length + comment_length;
  }
  if (at != end) throw f.Malformed("the central directory holds more than its end record counts");
  // No two entries may share bytes: overlapping entries are how zip bombs and two readers that
  // disagree about one archive are made.
  std::vector<const CentralEntry*> by_offset;
  for (const auto& entry : entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->local_offset < b->local_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->local_offset < by_offset[i - 1]->data_offset + by_offset[i - 1]->compressed) {
      throw f.Unsafe("the entries " + Quoted(by_offset[i - 1]->name) + " and " + Quoted(by_offset[i]->name) + " overlap");
    }
  }
  return entries;
}

// libtorch's zip reader over the bytes already in memory.
class MemoryAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit MemoryAdapter(std::shared_ptr<const std::string> bytes) : bytes_(std::move(bytes)) {}
  size_t size() const override { return bytes_->size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_->size()) return 0;
    n = std::min<uint64_t>(n, bytes_->size() - pos);
    std::memcpy(buf, bytes_->data() + pos, n);
    return n;
  }

 private:
  std::shared_ptr<const std::string> bytes_;
};

std::string MakePrivateDirectory() {
  std::error_code error;
  auto base = std::filesystem::temp_directory_path(error);
  if (error) base = "/tmp";
  std::string pattern = (base / "choripan-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    throw Error(ErrorCode::kModelLoad, "cannot create a private folder in " + base.string() + ": " + std::strerror(errno));
  }
  return pattern;
}

void WriteFile(const std::string& file, std::string_view data) {
  const int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(ErrorCode::kModelLoad, "cannot write " + file + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    const auto wrote = write(fd, data.data() + done, data.size() - done);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0) {
      const int error = errno;
      close(fd);
      throw Error(ErrorCode::kModelLoad, "cannot write " + file + ": " + std::strerror(error));
    }
    done += static_cast<size_t>(wrote);
  }
  if (close(fd) != 0) throw Error(ErrorCode::kModelLoad, "cannot write " + file + ": " + std::strerror(errno));
}

}  // namespace

Extraction::~Extraction() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

Archive::Archive(Archive&&) noexcept = default;
Archive& Archive::operator=(Archive&&) noexcept = default;
Archive::~Archive() = default;

Archive Archive::Open(const std::string& path, const std::string& expected_sha256) {
  Archive archive;
  archive.path_ = path;
  archive.bytes_ = std::make_shared<const std::string>(ReadWhole(path));
  const std::string& bytes = *archive.bytes_;
  if (!expected_sha256.empty()) {
    const auto actual = Sha256Hex(bytes);
    if (actual != expected_sha256) {
      throw ModelLoadError(path, "its SHA-256 is " + actual + ", not the " + expected_sha256 + " it must have");
    }
  }

  const Fields fields(bytes, path);
  auto entries = ReadDirectory(fields, bytes.size());
  if (entries.empty()) throw fields.Malformed("it holds no records");
  // torch names the top folder after the file it saved to; every record is inside it.
  const std::string top = entries.front().name.substr(0, entries.front().name.find('/'));
  uint64_t inflated = 0;
  for (const auto& entry : entries) {
    if (!entry.name.starts_with(top + "/")) {
      throw fields.Unsafe("the entry " + Quoted(entry.name) + " is outside the top folder " + Quoted(top + "/"));
    }
    auto name = entry.name.substr(top.size() + 1);
    if (archive.entries_.contains(name)) throw fields.Unsafe("the entry " + Quoted(entry.name) + " appears twice");
    inflated += entry.size;
    archive.entries_.emplace(std::move(name), Entry{entry.data_offset, entry.size, entry.method == kStored});
  }
  if (inflated > kMaxInflation * bytes.size()) {
    throw fields.Unsafe("its records would inflate to " + std::to_string(inflated) + " bytes, more than " +
                        std::to_string(kMaxInflation) + " times the file");
  }

  // libtorch reads the records through its own zip reader (miniz): it must see exactly these.
  try {
    archive.reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(archive.Adapter());
    auto seen = archive.reader_->getAllRecords();
    std::sort(seen.begin(), seen.end());
    if (seen != archive.Names()) throw fields.Unsafe("libtorch's zip reader lists other records");
    for (const auto& [name, entry] : archive.entries_) {
      if (archive.reader_->getRecordOffset(name) != entry.data_offset) {
        throw fields.Unsafe("libtorch's zip reader finds " + Quoted(name) + " elsewhere");
      }
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw fields.Malformed(Describe(error));
  }
  return archive;
}

std::vector<std::string> Archive::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

bool Archive::Has(std::string_view name) const { return entries_.find(name) != entries_.end(); }

std::string Archive::Read(std::string_view name) const {
  const auto found = entries_.find(name);
  if (found == entries_.end()) throw ModelLoadError(path_, "it has no record " + Quoted(name));
  return std::string(Bytes(name, found->second));
}

std::string_view Archive::Bytes(std::string_view name, const Entry& entry) const {
  // A stored record is a slice of the file; a deflated one is inflated by miniz, which checks its CRC-32.
  if (entry.stored) return std::string_view(*bytes_).substr(entry.data_offset, entry.size);
  try {
    auto [data, size] = reader_->getRecord(std::string(name));
    inflated_.emplace_back(static_cast<const char*>(data.get()), size);
    return inflated_.back();
  } catch (const std::exception& error) {
    throw ModelLoadError(path_, "its record " + Quoted(name) + " does not read back: " + Describe(error));
  }
}

std::string Archive::RecordsChecksum(const std::vector<std::string>& unchecked) const {
  Sha256 hash;
  for (const auto& [name, entry] : entries_) {
    if (std::find(unchecked.begin(), unchecked.end(), name) != unchecked.end()) continue;
    hash.Update(name.data(), name.size() + 1);  // with its NUL
    hash.Update(Bytes(name, entry));
  }
  return hash.HexDigest();
}

std::shared_ptr<caffe2::serialize::ReadAdapterInterface> Archive::Adapter() const {
  return std::make_shared<MemoryAdapter>(bytes_);
}

std::unique_ptr<Extraction> Archive::Extract(const std::vector<std::string>& prefixes) const {
  auto extraction = std::make_unique<Extraction>(MakePrivateDirectory());
  std::set<std::string> folders;
  for (const auto& [name, entry] : entries_) {
    if (std::ranges::none_of(prefixes, [&name](const auto& prefix) { return name.starts_with(prefix); })) continue;
    // Names were checked in Open: each is a relative path of plain components, so it stays below.
    for (auto slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1)) {
      const auto folder = extraction->path() + "/" + name.substr(0, slash);
      if (folders.insert(folder).second && mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) {
        throw Error(ErrorCode::kModelLoad, "cannot create " + folder + ": " + std::strerror(errno));
      }
    }
    WriteFile(extraction->path() + "/" + name, Bytes(name, entry));
  }
  return extraction;
}

}  // namespace choripan
