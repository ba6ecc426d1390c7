// serialize.cpp: see serialize.h and docs/checkpoints.md.
#include "engine/serialize.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "engine/module.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "kernels/cuda_check.h"

// The data section is the tensors' bytes exactly as they lie in memory, so
// the file is little-endian only if the host is. Every platform CUDA
// supports is; a big-endian port would have to swap here.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "timbre files are little-endian");

namespace timbre {
namespace {

// ------------------------------- constants ---------------------------------
// 0x89 (high bit set) catches 7-bit channels, '\n' catches newline
// translation, "TIMBRE" makes `head -c 8` readable.
constexpr char kMagic[8] = {'\x89', 'T', 'I', 'M', 'B', 'R', 'E', '\n'};
constexpr uint64_t kPrefixBytes = 32;  // magic, version, crc, header length, data length
constexpr uint64_t kAlign = 64;        // data section and every tensor start on 64 bytes
constexpr uint64_t kMaxHeaderBytes = uint64_t(1) << 30;
constexpr const char* kTempTag = ".timbre-tmp-";
constexpr size_t kTempRandomChars = 12;
constexpr const char* kCheckpointKind = "timbre-checkpoint";
constexpr int kCheckpointVersion = 1;

uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

std::string errno_text(int e) { return std::strerror(e); }

std::string hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

[[noreturn]] void fail_save(const std::string& path, const std::string& what) {
  throw SerializeError("cannot save '" + path + "': " + what);
}
[[noreturn]] void fail_load(const std::string& path, const std::string& what) {
  throw SerializeError("cannot load '" + path + "': " + what);
}

// zlib's crc32 takes a uInt length: feed it in chunks of at most 1 GiB.
uint32_t crc32_update(uint32_t crc, const void* data, uint64_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const uInt chunk = uInt(std::min<uint64_t>(n, uint64_t(1) << 30));
    crc = uint32_t(::crc32(crc, p, chunk));
    p += chunk;
    n -= chunk;
  }
  return crc;
}

template <class T>
void put_le(unsigned char* out, T v) {
  std::memcpy(out, &v, sizeof v);  // little-endian host (static_assert above)
}
template <class T>
T get_le(const unsigned char* in) {
  T v;
  std::memcpy(&v, in, sizeof v);
  return v;
}

// The header CRC covers the prefix except its own field, then the JSON:
// bytes [0, 12), [16, 32), then the header text.
uint32_t header_crc(const unsigned char* prefix, const std::string& json_text) {
  uint32_t c = crc32_update(0, prefix, 12);
  c = crc32_update(c, prefix + 16, kPrefixBytes - 16);
  return crc32_update(c, json_text.data(), json_text.size());
}

std::atomic<AtomicWriteHook> g_hook{nullptr};
void hook(const char* stage) {
  if (AtomicWriteHook h = g_hook.load()) h(stage);
}

std::string random_suffix() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng(
      std::random_device{}() ^ (uint64_t(getpid()) << 32) ^
      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  const uint64_t r = rng() ^ (counter++ * 0x9E3779B97F4A7C15ull);
  static const char* hex = "0123456789abcdef";
  std::string s(kTempRandomChars, '0');
  for (size_t i = 0; i < kTempRandomChars; ++i) s[i] = hex[(r >> (4 * i)) & 15];
  return s;
}

bool is_temp_of(const std::string& entry, const std::string& base) {
  const std::string prefix = base + kTempTag;
  if (entry.size() != prefix.size() + kTempRandomChars || entry.compare(0, prefix.size(), prefix))
    return false;
  return std::all_of(entry.begin() + long(prefix.size()), entry.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// Deletes "<base>.timbre-tmp-*" files in dir that no live writer holds. A
// writer keeps an exclusive flock on its temporary file from creation to
// rename; the kernel drops it when the process dies, even by SIGKILL. So a
// lock we can take belongs to a dead writer (or to a file already renamed
// away, which the inode comparison catches). Best effort: errors are ignored.
void remove_stale_temporaries(const std::string& dir, const std::string& base) {
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = readdir(d))
    if (is_temp_of(e->d_name, base)) names.push_back(e->d_name);
  closedir(d);
  for (const std::string& n : names) {
    const std::string p = dir + "/" + n;
    const int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;
    struct stat by_fd {}, by_name {};
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &by_fd) == 0 &&
        stat(p.c_str(), &by_name) == 0 && by_fd.st_ino == by_name.st_ino &&
        by_fd.st_dev == by_name.st_dev)
      unlink(p.c_str());
    close(fd);
  }
}

// Reads exactly n bytes at offset; a short read means the file ended.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail_load(path, errno_text(errno));
    struct stat st {};
    if (fstat(fd_, &st) != 0) fail_load(path, errno_text(errno));
    if (S_ISDIR(st.st_mode)) fail_load(path, "it is a directory");
    size_ = uint64_t(st.st_size);
  }
  ~Reader() { close(fd_); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  uint64_t size() const { return size_; }
  void read(uint64_t offset, void* out, uint64_t n, const char* what) const {
    auto* p = static_cast<char*>(out);
    while (n > 0) {
      const ssize_t got = pread(fd_, p, size_t(std::min<uint64_t>(n, 1 << 30)), off_t(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail_load(path_, std::string("reading ") + what + ": " + errno_text(errno));
      if (got == 0) fail_load(path_, std::string("truncated: the file ends inside ") + what);
      p += got, n -= uint64_t(got), offset += uint64_t(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

std::string describe_bytes(const unsigned char* b, size_t n) {
  std::ostringstream s;
  static const char* hex = "0123456789abcdef";
  for (size_t i = 0; i < n; ++i) s << (i ? " " : "") << hex[b[i] >> 4] << hex[b[i] & 15];
  s << " \"";
  for (size_t i = 0; i < n; ++i) s << (b[i] >= 32 && b[i] < 127 ? char(b[i]) : '.');
  s << "\"";
  return s.str();
}

DType parse_dtype(const std::string& path, const std::string& s, const std::string& name) {
  if (s == "f32") return DType::f32;
  if (s == "f64") return DType::f64;
  if (s == "i32") return DType::i32;
  fail_load(path, "corrupt header: tensor '" + name + "' has unknown dtype '" + s + "'");
}

uint64_t get_u64(const std::string& path, const nlohmann::json& j, const char* key,
                 const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned())
    fail_load(path, "corrupt header: " + where + " lacks a non-negative integer '" + key + "'");
  return it->get<uint64_t>();
}

// Reads and validates the prefix, the JSON header and the padding after it.
TensorFileHeader read_header(const Reader& r, const std::string& path) {
  const uint64_t size = r.size();
  if (size == 0) fail_load(path, "empty file (0 bytes): not a timbre checkpoint");
  unsigned char prefix[kPrefixBytes];
  const uint64_t have = std::min<uint64_t>(size, kPrefixBytes);
  r.read(0, prefix, have, "the fixed header");
  const size_t magic_have = size_t(std::min<uint64_t>(have, sizeof kMagic));
  if (std::memcmp(prefix, kMagic, magic_have) != 0)
    fail_load(path, "not a timbre checkpoint: wrong magic bytes (the file starts with " +
                        describe_bytes(prefix, magic_have) + ", a timbre file with " +
                        describe_bytes(reinterpret_cast<const unsigned char*>(kMagic), 8) + ")");
  if (size < kPrefixBytes)
    fail_load(path, "truncated: " + std::to_string(size) + " bytes, shorter than the " +
                        std::to_string(kPrefixBytes) + "-byte fixed header");
  TensorFileHeader h;
  h.version = get_le<uint32_t>(prefix + 8);
  const uint32_t stored_crc = get_le<uint32_t>(prefix + 12);
  const uint64_t json_bytes = get_le<uint64_t>(prefix + 16);
  h.data_bytes = get_le<uint64_t>(prefix + 24);
  if (h.version > kTensorFileVersion)
    fail_load(path, "format version " + std::to_string(h.version) +
                        " is newer than this build of timbre reads (" +
                        std::to_string(kTensorFileVersion) + "); update timbre");
  if (h.version == 0) fail_load(path, "corrupt: format version 0");
  if (json_bytes > kMaxHeaderBytes || json_bytes > size - kPrefixBytes)
    fail_load(path, "truncated or corrupt: the header claims " + std::to_string(json_bytes) +
                        " bytes of JSON but the file has " + std::to_string(size) + " bytes");
  std::string text(size_t(json_bytes), '\0');
  r.read(kPrefixBytes, text.data(), json_bytes, "the JSON header");
  const uint32_t crc = header_crc(prefix, text);
  if (crc != stored_crc)
    fail_load(path, "corrupt: header checksum mismatch (stored " + hex32(stored_crc) +
                        ", computed " + hex32(crc) + ")");
  h.data_offset = round_up(kPrefixBytes + json_bytes, kAlign);
  if (h.data_bytes > std::numeric_limits<uint64_t>::max() - h.data_offset)
    fail_load(path, "corrupt: data length overflows");
  const uint64_t expected = h.data_offset + h.data_bytes;
  if (size < expected)
    fail_load(path, "truncated: " + std::to_string(size) + " bytes, the header promises " +
                        std::to_string(expected));
  if (size > expected)
    fail_load(path, "corrupt: " + std::to_string(size - expected) +
                        " unexpected bytes after the data (the header promises " +
                        std::to_string(expected) + ")");
  unsigned char pad[kAlign];
  const uint64_t pad_bytes = h.data_offset - kPrefixBytes - json_bytes;
  r.read(kPrefixBytes + json_bytes, pad, pad_bytes, "the header padding");
  for (uint64_t i = 0; i < pad_bytes; ++i)
    if (pad[i]) fail_load(path, "corrupt: nonzero padding after the header");

  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail_load(path, std::string("corrupt header JSON: ") + e.what());
  }
  if (!doc.is_object() || doc.value("format", "") != "timbre-tensors" ||
      !doc.contains("tensors") || !doc["tensors"].is_array())
    fail_load(path, "corrupt header: not a timbre tensor-file document");
  if (get_u64(path, doc, "data_bytes", "the header") != h.data_bytes)
    fail_load(path, "corrupt header: data length disagrees with the fixed header");
  h.metadata = doc.contains("metadata") ? doc["metadata"] : nlohmann::json::object();

  std::set<std::string> seen;
  uint64_t end_of_previous = 0;
  for (const nlohmann::json& t : doc["tensors"]) {
    TensorEntry e;
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string() ||
        !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("shape") ||
        !t["shape"].is_array())
      fail_load(path, "corrupt header: a tensor entry lacks name, dtype or shape");
    e.name = t["name"].get<std::string>();
    if (e.name.empty() || !seen.insert(e.name).second)
      fail_load(path, "corrupt header: empty or repeated tensor name '" + e.name + "'");
    const std::string where = "tensor '" + e.name + "'";
    e.dtype = parse_dtype(path, t["dtype"].get<std::string>(), e.name);
    std::vector<int64_t> dims;
    for (const nlohmann::json& d : t["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t(1) << 40))
        fail_load(path, "corrupt header: " + where + " has a bad dimension " + d.dump());
      dims.push_back(d.get<int64_t>());
    }
    if (dims.size() > size_t(Shape::kMaxRank))
      fail_load(path, "corrupt header: " + where + " has rank " + std::to_string(dims.size()));
    e.shape = Shape(dims);
    e.offset = get_u64(path, t, "offset", where);
    e.bytes = get_u64(path, t, "bytes", where);
    const uint64_t crc64 = get_u64(path, t, "crc32", where);
    if (crc64 > 0xffffffffull) fail_load(path, "corrupt header: " + where + " crc32 out of range");
    e.crc32 = uint32_t(crc64);
    // numel <= 2^40 per dim could overflow the product: check by division.
    uint64_t numel = 1;
    for (int64_t d : dims) {
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / uint64_t(d))
        fail_load(path, "corrupt header: " + where + " is impossibly large");
      numel *= uint64_t(d);
    }
    if (e.bytes != numel * dtype_size(e.dtype))
      fail_load(path, "corrupt header: " + where + " has " + std::to_string(e.bytes) +
                          " bytes for " + std::string(dtype_name(e.dtype)) + e.shape.str());
    if (e.offset % kAlign != 0 || e.offset < end_of_previous || e.offset > h.data_bytes ||
        e.bytes > h.data_bytes - e.offset)
      fail_load(path, "corrupt header: " + where + " lies outside the data section or overlaps");
    end_of_previous = e.offset + e.bytes;
    h.tensors.push_back(std::move(e));
  }
  return h;
}

void copy_to_host(const Tensor& t, std::vector<unsigned char>& out) {
  out.resize(t.bytes());
  if (t.bytes()) CUDA_CHECK(cudaMemcpy(out.data(), t.raw(), t.bytes(), cudaMemcpyDeviceToHost));
}

}  // namespace

// ------------------------------ AtomicFile ---------------------------------
void set_atomic_write_hook(AtomicWriteHook h) { g_hook.store(h); }

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  const size_t slash = path_.rfind('/');
  const std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
  dir_ = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
  if (base.empty() || base == "." || base == "..") fail_save(path_, "not a file name");
  remove_stale_temporaries(dir_, base);
  // The temporary file lives in the target's directory: rename(2) is only
  // atomic within one file system, and a directory never spans two.
  for (int attempt = 0; attempt < 100; ++attempt) {
    temp_ = (slash == std::string::npos ? std::string() : path_.substr(0, slash + 1)) + base +
            kTempTag + random_suffix();
    fd_ = open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && errno == EEXIST) continue;
    if (fd_ < 0)
      fail_save(path_, "cannot create a temporary file in directory '" + dir_ +
                           "': " + errno_text(errno));
    // Announce that a live writer owns the file, then make sure a cleaner
    // did not delete it between our open and our lock.
    struct stat by_fd {}, by_name {};
    if (flock(fd_, LOCK_EX) == 0 && fstat(fd_, &by_fd) == 0 &&
        stat(temp_.c_str(), &by_name) == 0 && by_fd.st_ino == by_name.st_ino &&
        by_fd.st_dev == by_name.st_dev) {
      hook("created");
      return;
    }
    close(fd_);
    fd_ = -1;
  }
  fail_save(path_, "could not create a temporary file in '" + dir_ + "' after 100 attempts");
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) close(fd_);
  if (!committed_ && !temp_.empty()) unlink(temp_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (fd_ < 0) fail_save(path_, "write after commit");
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, std::min<size_t>(bytes, size_t(1) << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_save(path_, "writing '" + temp_ + "' failed: " + errno_text(errno));
    p += n, bytes -= size_t(n);
  }
  hook("data");
}

void AtomicFile::commit() {
  if (fd_ < 0) fail_save(path_, "commit twice");
  // 1. The data must be on disk before the name points at it; otherwise a
  //    power cut after the rename could leave the new name on an empty or
  //    partial file (the file system may order metadata before data).
  if (fsync(fd_) != 0) fail_save(path_, "fsync of '" + temp_ + "' failed: " + errno_text(errno));
  hook("synced");
  // 2. The switch: rename replaces the target atomically; readers see the
  //    old file or the new one. We still hold the lock, so no cleaner can
  //    take the temporary file away underneath.
  if (rename(temp_.c_str(), path_.c_str()) != 0)
    fail_save(path_, "renaming '" + temp_ + "' onto it failed: " + errno_text(errno));
  committed_ = true;
  close(fd_);
  fd_ = -1;
  hook("renamed");
  // 3. The rename is a change to the directory; fsync the directory so the
  //    change survives a power cut (else the old file could come back).
  //    Some file systems cannot fsync a directory (EINVAL): nothing to do.
  const int dfd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail_save(path_, "written, but opening directory '" + dir_ + "' to fsync it failed: " +
                                    errno_text(errno));
  const int rc = fsync(dfd);
  const int e = errno;
  close(dfd);
  if (rc != 0 && e != EINVAL)
    fail_save(path_, "written, but fsync of directory '" + dir_ + "' failed: " + errno_text(e));
  hook("committed");
}

// ------------------------------ tensor files -------------------------------
void save_tensor_file(const std::string& path, const NamedTensors& tensors,
                      const nlohmann::json& metadata) {
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) fail_save(path, "a tensor has an empty name");
    if (!names.insert(name).second) fail_save(path, "two tensors are named '" + name + "'");
    if (!t.defined()) fail_save(path, "tensor '" + name + "' is undefined");
  }
  // Copy everything to the host first: the header (with the checksums)
  // precedes the data, and the device copy is the only slow read.
  std::vector<std::vector<unsigned char>> host(tensors.size());
  nlohmann::json entries = nlohmann::json::array();
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].second;
    copy_to_host(t, host[i]);
    offset = round_up(offset, kAlign);
    entries.push_back({{"name", tensors[i].first},
                       {"dtype", dtype_name(t.dtype())},
                       {"shape", t.shape().dims()},
                       {"offset", offset},
                       {"bytes", uint64_t(t.bytes())},
                       {"crc32", crc32_update(0, host[i].data(), host[i].size())}});
    offset += t.bytes();
  }
  const uint64_t data_bytes = offset;
  nlohmann::json doc = {{"format", "timbre-tensors"},
                        {"tensors", entries},
                        {"data_bytes", data_bytes},
                        {"metadata", metadata}};
  std::string text;
  try {
    text = doc.dump();
  } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 in a string
    fail_save(path, std::string("metadata cannot be written as JSON: ") + e.what());
  }

  unsigned char prefix[kPrefixBytes] = {};
  std::memcpy(prefix, kMagic, sizeof kMagic);
  put_le<uint32_t>(prefix + 8, kTensorFileVersion);
  put_le<uint64_t>(prefix + 16, text.size());
  put_le<uint64_t>(prefix + 24, data_bytes);
  put_le<uint32_t>(prefix + 12, header_crc(prefix, text));

  static const unsigned char zeros[kAlign] = {};
  AtomicFile f(path);
  f.write(prefix, kPrefixBytes);
  f.write(text.data(), text.size());
  uint64_t pos = kPrefixBytes + text.size();
  f.write(zeros, round_up(pos, kAlign) - pos);
  pos = 0;  // now relative to the data section
  for (size_t i = 0; i < tensors.size(); ++i) {
    f.write(zeros, round_up(pos, kAlign) - pos);
    pos = round_up(pos, kAlign);
    f.write(host[i].data(), host[i].size());
    pos += host[i].size();
    std::vector<unsigned char>().swap(host[i]);  // free as we go
  }
  f.commit();
}

TensorFileHeader read_tensor_file_header(const std::string& path) {
  Reader r(path);
  return read_header(r, path);
}

NamedTensors load_tensor_file(const std::string& path, nlohmann::json* metadata) {
  Reader r(path);
  TensorFileHeader h = read_header(r, path);
  NamedTensors out;
  std::vector<unsigned char> buf;
  unsigned char pad[kAlign];
  uint64_t pos = 0;
  auto check_gap = [&](uint64_t until) {
    // Gaps are < 64 bytes (alignment); anything longer is a corrupt layout.
    if (until - pos >= kAlign) fail_load(path, "corrupt header: unexpected gap in the data section");
    r.read(h.data_offset + pos, pad, until - pos, "the data padding");
    for (uint64_t i = 0; i < until - pos; ++i)
      if (pad[i]) fail_load(path, "corrupt: nonzero padding in the data section");
  };
  for (const TensorEntry& e : h.tensors) {
    check_gap(e.offset);
    buf.resize(e.bytes);
    const std::string what = "tensor '" + e.name + "'";
    r.read(h.data_offset + e.offset, buf.data(), e.bytes, what.c_str());
    const uint32_t crc = crc32_update(0, buf.data(), buf.size());
    if (crc != e.crc32)
      fail_load(path, "corrupt: " + what + " fails its checksum (stored " + hex32(e.crc32) +
                          ", computed " + hex32(crc) + ")");
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.bytes) CUDA_CHECK(cudaMemcpy(t.raw(), buf.data(), e.bytes, cudaMemcpyHostToDevice));
    out.emplace_back(e.name, std::move(t));
    pos = e.offset + e.bytes;
  }
  check_gap(h.data_bytes);
  if (metadata) *metadata = std::move(h.metadata);
  return out;
}

// ------------------------------- checkpoints -------------------------------
namespace {

const char* form_name(kernels::AdamForm f) {
  return f == kernels::AdamForm::keras ? "keras" : "pytorch";
}

// Adam holds Variables, not names: find each one among the model's
// parameters by identity (the same device storage).
std::vector<std::string> adam_parameter_names(const std::string& path, const Module& model,
                                              const Adam& adam, bool saving) {
  const auto named = model.named_parameters();
  std::vector<std::string> out;
  for (const Variable& p : adam.parameters()) {
    auto it = std::find_if(named.begin(), named.end(), [&](const auto& nv) {
      return nv.second.value().raw() == p.value().raw() &&
             nv.second.value().shape() == p.value().shape();
    });
    const std::string msg = "Adam optimises a " + p.value().str() +
                            " tensor that is not a parameter of the model";
    if (it == named.end()) saving ? fail_save(path, msg) : fail_load(path, msg);
    out.push_back(it->first);
  }
  return out;
}

nlohmann::json adam_json(const AdamSettings& s) {
  return {{"lr", s.config.lr},       {"beta1", s.config.beta1}, {"beta2", s.config.beta2},
          {"eps", s.config.eps},     {"form", form_name(s.config.form)},
          {"decay", s.decay}};
}

// "param/fc.weight" -> "parameter 'fc.weight'" (the checkpoint's key scheme).
std::string describe_key(const std::string& key) {
  const size_t slash = key.find('/');
  const std::string kind = key.substr(0, slash), name = "'" + key.substr(slash + 1) + "'";
  if (kind == "param") return "parameter " + name;
  if (kind == "buffer") return "buffer " + name;
  if (kind == "adam.m") return "Adam first moment of " + name;
  if (kind == "adam.v") return "Adam second moment of " + name;
  return "tensor '" + key + "'";
}

std::string identity(const nlohmann::json& name, const nlohmann::json& config) {
  return "model '" + (name.is_string() ? name.get<std::string>() : name.dump()) +
         "' with config " + config.dump();
}

}  // namespace

void save_checkpoint(const std::string& path, const TrainingState& s) {
  if (!s.model) fail_save(path, "TrainingState.model is null");
  if (s.model_name.empty()) fail_save(path, "TrainingState.model_name is empty");
  NamedTensors tensors;
  nlohmann::json params = nlohmann::json::array(), buffers = nlohmann::json::array();
  for (const auto& [name, v] : s.model->named_parameters()) {
    tensors.emplace_back("param/" + name, v.value());
    params.push_back(name);
  }
  for (const auto& [name, t] : s.model->named_buffers()) {
    tensors.emplace_back("buffer/" + name, t);
    buffers.push_back(name);
  }
  nlohmann::json meta = {{"kind", kCheckpointKind},
                         {"checkpoint_version", kCheckpointVersion},
                         {"model",
                          {{"name", s.model_name},
                           {"config", s.model_config},
                           {"parameters", params},
                           {"buffers", buffers}}}};
#ifdef TIMBRE_VERSION
  meta["timbre_version"] = TIMBRE_VERSION;
#endif
  if (s.adam) {
    const auto names = adam_parameter_names(path, *s.model, *s.adam, true);
    for (size_t i = 0; i < names.size(); ++i) {
      tensors.emplace_back("adam.m/" + names[i], s.adam->first_moments()[i]);
      tensors.emplace_back("adam.v/" + names[i], s.adam->second_moments()[i]);
    }
    nlohmann::json a = adam_json(s.adam_settings);
    a["step"] = s.adam->steps();
    a["parameters"] = names;
    meta["adam"] = a;
  }
  if (s.generator)
    meta["generator"] = {{"seed", s.generator->seed()}, {"offset", s.generator->offset()}};
  meta["extra"] = s.extra;
  save_tensor_file(path, tensors, meta);
}

namespace {
// The checks every checkpoint document passes before anything reads it.
void check_checkpoint_meta(const std::string& path, const nlohmann::json& m) {
  if (!m.is_object() || m.value("kind", "") != kCheckpointKind)
    fail_load(path, "a timbre tensor file, but not a checkpoint (no \"kind\": \"" +
                        std::string(kCheckpointKind) + "\" in its metadata)");
  if (!m.contains("checkpoint_version") || !m["checkpoint_version"].is_number_integer() ||
      m["checkpoint_version"].get<int>() > kCheckpointVersion)
    fail_load(path, "checkpoint version " + m.value("checkpoint_version", nlohmann::json()).dump() +
                        " is not one this build reads (" + std::to_string(kCheckpointVersion) + ")");
  if (!m.contains("model") || !m["model"].is_object())
    fail_load(path, "corrupt checkpoint metadata: no \"model\" object");
}
}  // namespace

nlohmann::json read_checkpoint_metadata(const std::string& path) {
  nlohmann::json m = read_tensor_file_header(path).metadata;
  check_checkpoint_meta(path, m);
  return m;
}

nlohmann::json load_checkpoint(const std::string& path, TrainingState& s) {
  if (!s.model) fail_load(path, "TrainingState.model is null");
  nlohmann::json meta;
  NamedTensors all = load_tensor_file(path, &meta);
  check_checkpoint_meta(path, meta);
  const nlohmann::json& model = meta["model"];
  const nlohmann::json file_name = model.value("name", nlohmann::json());
  const nlohmann::json file_config = model.value("config", nlohmann::json());
  if (file_name != nlohmann::json(s.model_name) || file_config != s.model_config)
    fail_load(path, "it is a checkpoint of " + identity(file_name, file_config) + ", not of " +
                        identity(s.model_name, s.model_config));

  std::map<std::string, Tensor> file;
  for (auto& [name, t] : all) file.emplace(name, t);
  std::set<std::string> used;
  std::vector<std::string> problems;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  auto want = [&](const std::string& key, const std::string& what, const Tensor& dst) {
    auto it = file.find(key);
    if (it == file.end()) {
      problems.push_back("missing " + what);
      return;
    }
    used.insert(key);
    if (it->second.shape() != dst.shape() || it->second.dtype() != dst.dtype()) {
      problems.push_back(what + ": the checkpoint has " + it->second.str() + ", the model " +
                         dst.str());
      return;
    }
    copies.emplace_back(dst, it->second);
  };
  for (const auto& [name, v] : s.model->named_parameters())
    want("param/" + name, "parameter '" + name + "'", v.value());
  for (const auto& [name, t] : s.model->named_buffers())
    want("buffer/" + name, "buffer '" + name + "'", t);

  long long adam_step = 0;
  if (s.adam) {
    if (!meta.contains("adam") || !meta["adam"].is_object())
      fail_load(path, "it holds no optimizer state (saved without Adam?), so training cannot resume");
    const nlohmann::json& a = meta["adam"];
    nlohmann::json mine = adam_json(s.adam_settings), theirs = a;
    theirs.erase("step");
    theirs.erase("parameters");
    if (theirs != mine)
      fail_load(path, "Adam hyper-parameters differ: the checkpoint has " + theirs.dump() +
                          ", this run " + mine.dump());
    if (!a.contains("step") || !a["step"].is_number_integer())
      fail_load(path, "corrupt checkpoint metadata: Adam step count missing");
    adam_step = a["step"].get<long long>();
    const auto names = adam_parameter_names(path, *s.model, *s.adam, false);
    for (size_t i = 0; i < names.size(); ++i) {
      want("adam.m/" + names[i], "Adam first moment of '" + names[i] + "'",
           s.adam->first_moments()[i]);
      want("adam.v/" + names[i], "Adam second moment of '" + names[i] + "'",
           s.adam->second_moments()[i]);
    }
  }
  uint64_t seed = 0, offset = 0;
  if (s.generator) {
    if (!meta.contains("generator") || !meta["generator"].is_object())
      fail_load(path, "it holds no random generator state, so training cannot resume");
    seed = get_u64(path, meta["generator"], "seed", "the generator state");
    offset = get_u64(path, meta["generator"], "offset", "the generator state");
  }
  // Everything in the file must have found a home, except the optimizer
  // state when only the weights are wanted (evaluation).
  for (const auto& [name, t] : all) {
    const bool optional = !s.adam && name.rfind("adam.", 0) == 0;
    if (!used.count(name) && !optional)
      problems.push_back("unexpected " + describe_key(name) + " in the checkpoint (" + t.str() +
                         ")");
  }
  if (!problems.empty()) {
    std::string msg = "it does not fit " + identity(s.model_name, s.model_config) + ":";
    for (size_t i = 0; i < problems.size() && i < 20; ++i) msg += "\n  " + problems[i];
    if (problems.size() > 20) msg += "\n  ... and " + std::to_string(problems.size() - 20) + " more";
    fail_load(path, msg);
  }
  // All checks passed: now change the live objects (all or nothing).
  for (auto& [dst, src] : copies) dst.copy_from(src);
  if (s.adam) s.adam->set_steps(adam_step);
  if (s.generator) s.generator->set_state(seed, offset);
  s.extra = meta.value("extra", nlohmann::json::object());
  return meta;
}

}  // namespace timbre
