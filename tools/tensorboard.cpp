#include "tools/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/crc.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "tools/report.h"  // write_file_atomic

namespace timbre::tools {

namespace {

// Protocol-buffer wire format: a key is (field << 3) | wire type; wire type
// 0 is a varint, 1 a little-endian 64-bit value, 2 a length then the bytes,
// 5 a little-endian 32-bit value.
void varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  s += char(uint8_t(v));
}

template <typename T>
void little_endian(std::string& s, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) s += char(uint8_t(uint64_t(v) >> (8 * i)));
}

void key(std::string& s, int field, int wire_type) { varint(s, uint64_t(field << 3 | wire_type)); }

void double_field(std::string& s, int field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  key(s, field, 1);
  little_endian(s, bits);
}

void float_field(std::string& s, int field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  key(s, field, 5);
  little_endian(s, bits);
}

void bytes_field(std::string& s, int field, const std::string& bytes) {
  key(s, field, 2);
  varint(s, bytes.size());
  s += bytes;
}

std::string event(double wall_time, const TensorBoardScalar* scalar) {
  std::string e;
  double_field(e, 1, wall_time);
  if (!scalar) {
    bytes_field(e, 3, "brain.Event:2");
    return e;
  }
  key(e, 2, 0);
  varint(e, uint64_t(scalar->step));  // int64: two's complement as a 64-bit varint
  std::string value;                  // Summary.Value
  bytes_field(value, 1, scalar->tag);
  float_field(value, 2, scalar->value);
  std::string summary;                // Summary
  bytes_field(summary, 1, value);
  bytes_field(e, 5, summary);
  return e;
}

}  // namespace

uint32_t tfrecord_masked_crc(const void* data, size_t n) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, n);
  const uint32_t c = crc.checksum();
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string r, len;
  little_endian(len, uint64_t(data.size()));
  r += len;
  little_endian(r, tfrecord_masked_crc(len.data(), len.size()));
  r += data;
  little_endian(r, tfrecord_masked_crc(data.data(), data.size()));
  return r;
}

std::string tensorboard_events(double start_time, const std::vector<TensorBoardScalar>& scalars) {
  std::string f = tfrecord(event(start_time, nullptr));
  for (const TensorBoardScalar& s : scalars) f += tfrecord(event(s.wall_time, &s));
  return f;
}

void update_event_file(const std::string& path, const std::string& content) {
  std::string old;
  if (std::ifstream in{path, std::ios::binary}) {
    std::ostringstream s;
    s << in.rdbuf();
    old = s.str();
  }
  if (old.empty() || old.size() > content.size() || content.compare(0, old.size(), old) != 0) {
    write_file_atomic(path, content);
    return;
  }
  if (old.size() == content.size()) return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open for appending: " + std::strerror(errno));
  const char* p = content.data() + old.size();
  size_t left = content.size() - old.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error(path + ": write failed: " + std::strerror(err));
    }
    p += w;
    left -= size_t(w);
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  if (::close(fd) != 0 || !synced)
    throw std::runtime_error(path + ": flushing failed: " + std::strerror(synced ? errno : err));
}

std::string tensorboard_file_name(double start_time) {
  return "events.out.tfevents." + std::to_string(int64_t(std::floor(start_time))) + ".timbre";
}

}  // namespace timbre::tools
