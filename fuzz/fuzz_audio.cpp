// fuzz_audio: audio decoding on arbitrary bytes: the container sniffing,
// libmpg123 and libsndfile behind it, the length checks, the channel
// average and the resampler. Every input must either be refused with an
// AudioError (or another exception) or decode to finite samples at the
// target rate.
#include <cmath>
#include <stdexcept>

#include "features/audio.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace timbre::features;
  const std::string path = fuzz::write_input("clip.bin", data, size);
  try {
    const DecodedAudio a = load_audio(path, 22050, 0);
    if (a.sample_rate != 22050) fuzz::broken("sample rate");
    for (float x : a.samples)
      if (!std::isfinite(x)) fuzz::broken("non-finite sample");
  } catch (const std::exception&) {
  }
  return 0;
}
