// fuzz_checkpoint: the tensor-file and checkpoint reader (engine/serialize)
// on hostile files. Two kinds of input, by the first byte:
//   odd:  the rest is the file, as is (magic, version, lengths, CRC checks);
//   even: bytes 1-2 give a header length H, the next H bytes are the JSON
//         header and the rest the data section; the harness writes the
//         prefix and the header CRC-32 itself (docs/checkpoints.md), so the
//         input reaches the JSON validation (names, dtypes, shapes, offsets,
//         byte counts) that a random file would never get past the CRC to.
// Every input must be refused with an exception or load tensors whose byte
// counts agree with their shapes.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "engine/serialize.h"
#include "fuzz/fuzz_input.h"

namespace {

void put_le(unsigned char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

std::vector<unsigned char> with_valid_prefix(const uint8_t* data, size_t size) {
  const size_t h =
      size < 3 ? 0 : std::min<size_t>(size - 3, size_t(data[1]) | size_t(data[2]) << 8);
  const uint8_t* json = data + std::min<size_t>(size, 3);
  const uint8_t* rest = json + h;
  const size_t n = size - std::min<size_t>(size, 3) - h;
  std::vector<unsigned char> f(32 + h);
  const char magic[8] = {'\x89', 'T', 'I', 'M', 'B', 'R', 'E', '\n'};
  std::memcpy(f.data(), magic, 8);
  put_le(f.data() + 8, 1, 4);  // format version
  put_le(f.data() + 16, h, 8);
  put_le(f.data() + 24, n, 8);
  if (h) std::memcpy(f.data() + 32, json, h);
  // CRC-32 over bytes 0-11, 16-31 and the JSON (everything but itself).
  uLong c = crc32(0, f.data(), 12);
  c = crc32(c, f.data() + 16, 16);
  c = crc32(c, f.data() + 32, uInt(h));
  put_le(f.data() + 12, c, 4);
  f.resize((f.size() + 63) / 64 * 64, 0);
  f.insert(f.end(), rest, rest + n);
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string path;
  if (size > 0 && (data[0] & 1)) {
    path = fuzz::write_input("t.ckpt", data + 1, size - 1);
  } else {
    const auto f = with_valid_prefix(data, size);
    path = fuzz::write_input("t.ckpt", f.data(), f.size());
  }
  try {
    nlohmann::json meta;
    for (const auto& [name, t] : timbre::load_tensor_file(path, &meta)) {
      size_t elements = 1;
      for (int d = 0; d < t.rank(); ++d) elements *= size_t(t.size(d));
      if (elements != size_t(t.numel())) fuzz::broken("shape and element count disagree");
    }
  } catch (const std::exception&) {
  }
  try {
    timbre::read_checkpoint_metadata(path);
  } catch (const std::exception&) {
  }
  return 0;
}
