// fuzz_tracks_csv: FMA's tracks.csv reader (libcsv, the two-level header,
// track ids, subsets, splits, labels) on arbitrary bytes. Every input must
// either be refused with an exception or give a listing whose tracks have
// labels in range and distinct ids.
#include <set>
#include <stdexcept>

#include "features/datasets.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace timbre::features;
  FmaOptions o;
  o.tracks_csv = fuzz::write_input("tracks.csv", data, size);
  o.audio_dir = fuzz::dir() + "/no-audio";
  for (const char* subset : {"small", "large"}) {
    o.subset = subset;
    o.split = size % 2 ? SplitMode::random : SplitMode::official;
    try {
      const DatasetListing l = list_fma(o);
      std::set<int64_t> ids;
      for (const Track& t : l.tracks) {
        if (t.label < 0 || size_t(t.label) >= l.label_names.size()) fuzz::broken("label range");
        if (!ids.insert(t.id).second) fuzz::broken("duplicate track id in a listing");
      }
    } catch (const std::exception&) {
      // refused, with a message: what bad input should get
    }
  }
  return 0;
}
