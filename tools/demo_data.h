// demo_data: the labelled toy dataset behind `timbre demo`, rendered from
// MMA (Musical MIDI Accompaniment) styles. Design and timings: docs/demo.md.
//
// What it makes. One folder per class, one WAV per clip:
//
//   OUT/<style>/<style>_<k>.wav     k = 0 .. clips_per_style-1
//
// which is the layout timbre's "folder" dataset reader reads (the folder name
// is the label). Every clip is 16-bit PCM mono at sample_rate (22,050 Hz),
// exactly round(seconds * sample_rate) samples long: the default 10 s holds
// three 65,024-sample segments (2.95 s each).
//
// How a clip is made (all on the host: this is data preparation, not compute):
//   1. text   an .mma file: a random seed for MMA's own humanising, the tempo,
//             the groove (= the style, the label) and one chord per bar;
//   2. mma    turns it into a MIDI file (drums, bass, chords, ... as the style
//             prescribes);
//   3. fluidsynth renders the MIDI with the General MIDI soundfont FluidR3_GM
//             to a stereo 16-bit WAV at sample_rate, offline (-n -i -F);
//   4. trim   the WAV is cut to the clip length (fluidsynth adds the release
//             tail of the last notes), its channels averaged, and written to
//             "<final>.tmp", flushed to disk, then renamed over the final name.
//             A rename is atomic, so an interrupted run never leaves a half
//             written .wav; a clip whose .wav exists is skipped (re-runs are
//             cheap and finish what an interrupted run started).
//
// What makes the classes differ. Only the style. Tempo, key, chord
// progression and MMA's random seed of clip k are drawn from one pool with a
// generator keyed by (seed, k) alone, so clip k of every style has the same
// tempo, key and chords: the .mma texts of <a>_<k> and <b>_<k> differ in the
// "Groove" line only. A classifier can only succeed by hearing the
// accompaniment style (instruments, rhythm, metre).
//
// Determinism. The same options give byte-identical .mma files (pure function
// below), MIDI files (MMA is seeded with "RndSeed") and WAV files (fluidsynth's
// offline rendering is deterministic; see docs/demo.md for what was checked).
//
// Processes. mma and fluidsynth run with posix_spawn from an argument vector
// (no shell, so no quoting or injection), stdout and stderr captured to a log
// file; `jobs` clips render at once, one worker thread per job. A missing
// program or soundfont throws before anything starts, naming the Debian
// package to install; a failing command throws DemoDataError with the command
// line and its output.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace timbre::tools {

// A render that failed: a missing program, a command that exited with an
// error (what() holds the command line and its output), an output directory
// made with other options, or a rendered file that is not what was asked.
class DemoDataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The default classes: five MMA styles (mma's standard library,
// /usr/share/mma/lib/stdlib) that differ in instruments and rhythm:
//   swing        jazz kit with ride cymbal, walking bass, piano, saxophone
//   bossanova    latin percussion, nylon/jazz guitar comping, strings
//   basicrock    rock kit, distortion guitar, fingered bass
//   waltz        3/4 metre, piano, tremolo strings, acoustic bass
//   polka        tuba bass, accordion, oom-pah rhythm
std::vector<std::string> default_demo_styles();

// Progress of a render, handed to on_progress on the calling thread after
// each clip (and once at the start with done == 0).
struct DemoProgress {
  std::size_t done = 0;      // clips finished (rendered or skipped)
  std::size_t total = 0;     // clips in the dataset
  std::size_t rendered = 0;  // of done: rendered by this run
  std::size_t skipped = 0;   // of done: already on disk
  std::string path;          // the clip just finished (empty at the start)
};

struct DemoDataOptions {
  std::string out_dir;                                  // OUT; created if missing
  std::vector<std::string> styles = default_demo_styles();  // the labels
  int clips_per_style = 24;
  double seconds = 10.0;          // clip length; >= 1
  std::uint64_t seed = 1;         // the shared pool of tempo, key and chords
  int jobs = 2;                   // clips rendered at once
  int sample_rate = 22050;        // Hz
  double gain = 0.4;              // fluidsynth -g (its default 0.2 is quiet)
  std::string soundfont = "/usr/share/sounds/sf2/FluidR3_GM.sf2";
  // Where to keep the .mma and .mid files (<sources_dir>/<style>/<style>_<k>.*);
  // empty: a temporary directory, removed at the end.
  std::string sources_dir;
  std::function<void(const DemoProgress&)> on_progress;  // may be empty
};

// One clip's draw from the shared pool (no style: it is the same for all).
struct DemoClipDraw {
  int tempo = 0;                    // beats per minute
  std::string key;                  // root of the key, e.g. "Eb" (major)
  std::vector<std::string> chords;  // one chord symbol per bar, e.g. "Cm7"
  std::uint32_t mma_seed = 0;       // MMA's RndSeed (timing/velocity humanising)
};

// Clip k's draw: a function of (seed, k, seconds) only. The chord list holds
// enough bars for `seconds` plus one bar of margin, counted in 3/4 (the
// shortest bar of the default styles) so that every style gets the same bars.
DemoClipDraw draw_demo_clip(std::uint64_t seed, int k, double seconds);

// The .mma file of one clip (pure): the draw's lines plus "Groove <style>".
// Throws std::invalid_argument if `style` is not a plain MMA groove name
// (letters, digits, '-', '_'; it becomes a line of the file).
std::string demo_mma_text(const std::string& style, const DemoClipDraw& draw);

// What a render did.
struct DemoDataResult {
  std::vector<std::string> paths;   // every clip, style-major order
  std::vector<std::string> labels;  // paths[i]'s style
  std::size_t rendered = 0, skipped = 0;
  double wall_seconds = 0;          // the whole call
  double seconds_per_clip = 0;      // mean wall time of one rendered clip in one
                                    // worker (mma + fluidsynth + trim); 0 if none
};

// Renders the dataset (see the top of this file). Throws std::invalid_argument
// for bad options (naming the option), DemoDataError for everything else.
// Clips already rendered are skipped; OUT/timbre-demo.txt records the options
// that decide the audio (seed, seconds, rate, gain, soundfont) and a run with
// other values into the same OUT throws instead of mixing two datasets.
DemoDataResult render_demo_dataset(const DemoDataOptions& options);

// The absolute path of `program` from the PATH environment variable, or ""
// if no executable of that name is found.
std::string find_program(const std::string& program);

}  // namespace timbre::tools
