// fuzz_input.h: what the fuzz harnesses share. The readers under test take
// file paths, so each input is written to a file in a folder of this
// process's own (made once, removed at exit), and a broken invariant aborts
// so that libFuzzer reports the input.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fuzz {

inline const std::string& dir() {
  static const std::string d = [] {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") + "/timbre-fuzz-XXXXXX";
    if (!::mkdtemp(t.data())) std::abort();
    static struct Cleanup {
      std::string path;
      ~Cleanup() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
      }
    } cleanup{t};
    return t;
  }();
  return d;
}

// The input as the file dir()/name; returns its path.
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = dir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  if (!f) std::abort();
  return path;
}

// A broken invariant: report it and abort (libFuzzer saves the input).
[[noreturn]] inline void broken(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

}  // namespace fuzz
