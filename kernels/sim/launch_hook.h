// launch_hook.h: a profiler's view of launches, in both flavours.
//
// When set (timbre's kernels/profile.cpp sets it while a Recorder lives),
// simcuda::launch calls it before (after = false) and after (after = true)
// every launch, with the kernel's name or, under nvcc, the launch's
// __PRETTY_FUNCTION__ that names it, and the grid and block. Unset, it
// costs one branch per launch.
// The stream is CUDA's cudaStream_t (struct CUstream_st* in the toolkit and
// in simcuda's own headers), spelled so that this header needs neither.
#pragma once

#include <string>

struct CUstream_st;

namespace simcuda {

struct LaunchShape {
  unsigned grid[3], block[3];
};
using LaunchHook = void (*)(const char* kernel, CUstream_st* stream, bool after,
                            const LaunchShape& shape);
inline LaunchHook launch_hook = nullptr;

// The readable part of a launch's __PRETTY_FUNCTION__: the compilers spell
// the kernel as "... [with auto Kernel = saxpy]" or, for templates,
// "... [with auto Kernel = &(void ns::k<16>(int, float*)); Args = {...}]";
// this returns "saxpy" or "ns::k<16>" (anything else unchanged).
inline std::string readable_kernel_name(const std::string& pretty) {
  const std::string key = "Kernel = ";
  const size_t at = pretty.find(key);
  if (at == std::string::npos) return pretty;
  std::string s = pretty.substr(at + key.size());
  // The argument ends at the first ';' or unmatched ']' outside brackets.
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    depth += (c == '(' || c == '<' || c == '[') ? 1 : (c == ')' || c == '>' || c == ']') ? -1 : 0;
    if (depth < 0 || (depth == 0 && c == ';')) {
      s.erase(i);
      break;
    }
  }
  if (s.rfind("&(", 0) == 0 && s.back() == ')') s = s.substr(2, s.size() - 3);
  if (s.rfind("& ", 0) == 0) s.erase(0, 2);
  if (s.rfind("&", 0) == 0) s.erase(0, 1);
  if (s.rfind("void ", 0) == 0) s.erase(0, 5);
  if (!s.empty() && s.back() == ')') {  // drop the parameter list
    int d = 0;
    for (size_t i = s.size(); i-- > 0;) {
      d += s[i] == ')' ? 1 : s[i] == '(' ? -1 : 0;
      if (d == 0) {
        s.erase(i);
        break;
      }
    }
  }
  return s;
}

}  // namespace simcuda
