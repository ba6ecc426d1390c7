// The whole extraction rate, `timbre extract` as a library call: decode
// (libmpg123 + libsoxr on 2 threads), cut segments, log-mel on the device,
// append to HDF5. Input: a folder dataset of 30 s stereo MP3s at 44.1 kHz
// (FMA's format), synthesized and encoded with LAME once per run.
//
//   build/sim/bench/bench_extract
//
// Reports tracks/s (including decoding) and clips/s (segments written).
#include <benchmark/benchmark.h>

#include <filesystem>

#include "tests/features/synth_audio.h"
#include "tools/extract.h"

namespace {

namespace synth = timbre::testing::synth;

void BM_ExtractFolder(benchmark::State& state) {
  const int tracks = int(state.range(0));
  timbre::testing::TempDir dir;
  const std::string audio = dir / "audio";
  for (int k = 0; k < tracks; ++k) {
    const std::string label = k % 2 ? "chords" : "noise";
    std::filesystem::create_directories(audio + "/" + label);
    const size_t n = 30 * 44100;
    std::vector<float> mono = k % 2 ? synth::chord(n, {196.0 + k, 247.0, 294.0}, 44100)
                                    : synth::noise(n, uint32_t(k + 1), 0.3);
    std::vector<float> stereo = synth::interleave({mono, mono});
    synth::write_mp3(audio + "/" + label + "/" + std::to_string(k) + ".mp3", stereo, 2, 44100);
  }
  int64_t segments = 0;
  for (auto _ : state) {
    timbre::tools::ExtractOptions o;
    o.dataset = "folder";
    o.audio_dir = audio;
    o.out = dir / "features.h5";
    o.force = true;
    o.jobs = 2;
    const auto s = timbre::tools::run_extract(o);
    segments += s.total_segments();
  }
  state.counters["tracks/s"] =
      benchmark::Counter(double(state.iterations()) * tracks, benchmark::Counter::kIsRate);
  state.counters["clips/s"] = benchmark::Counter(double(segments), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ExtractFolder)->Arg(20)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
