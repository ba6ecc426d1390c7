// fuzz_h5store: the feature store's checks on open (features/h5store.h:
// groups, datasets, dtypes, ranks, shapes, lengths, label ranges,
// attributes, band statistics). Random bytes would only exercise HDF5's own
// parser, so each input is a list of edits made through the HDF5 API to a
// valid store that FeatureWriter wrote: delete or rewrite an attribute
// (another type, a random value), delete or replace a dataset (another
// dtype, rank and shape), overwrite labels or samples. The result must be
// refused with an exception naming the file, or open and read back with
// every label in range.
#include <hdf5.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "features/h5store.h"
#include "fuzz/fuzz_input.h"

namespace {

using namespace timbre::features;

const char* const kAttrs[] = {"sample_rate", "n_fft", "hop", "n_mels", "frames", "n_mfcc",
                              "fmin", "fmax", "top_db", "label_names", "band_mean",
                              "band_std", "source", "format_version", "timbre_version"};
const char* const kDatasets[] = {"/train/x", "/train/y", "/train/track_id",
                                 "/train/segment_start", "/validation/x", "/validation/y",
                                 "/test/x", "/test/y", "/test/track_id"};
const hid_t kTypes[] = {H5T_IEEE_F32LE, H5T_IEEE_F64LE, H5T_STD_I32LE, H5T_STD_I64LE,
                        H5T_STD_U8LE};

// A valid store, written once: 3 labels, 4 mel rows x 3 frames.
const std::string& good_store() {
  static const std::string path = [] {
    FeatureParams p;
    p.sample_rate = 8000, p.n_fft = 16, p.hop = 8, p.n_mels = 4, p.fmax = 4000, p.frames = 3;
    const std::string out = fuzz::dir() + "/good.h5";
    FeatureWriter w(out, p, {"a", "b", "c"}, "fuzz");
    const int64_t n[3] = {5, 2, 2};
    for (int s = 0; s < 3; ++s) {
      std::vector<float> x(static_cast<size_t>(n[s]) * 12);
      for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) - 3.f;
      const size_t m = static_cast<size_t>(n[s]);
      std::vector<int32_t> y(m);
      std::vector<int64_t> id(m), start(m, 0);
      for (int64_t i = 0; i < n[s]; ++i) y[size_t(i)] = int32_t(i % 3), id[size_t(i)] = i;
      w.append(Split(s), n[s], x.data(), y.data(), id.data(), start.data());
    }
    w.finish();
    return out;
  }();
  return path;
}

// Reads the input a byte at a time; zeros once it runs out.
struct Bytes {
  const uint8_t* p;
  size_t n, at = 0;
  uint8_t next() { return at < n ? p[at++] : 0; }
  bool more() const { return at < n; }
};

void write_dataset(hid_t f, const char* name, hid_t type, int rank, const hsize_t* dims,
                   Bytes& in) {
  H5Ldelete(f, name, H5P_DEFAULT);
  const hid_t space = H5Screate_simple(rank, dims, nullptr);
  const hid_t ds = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (ds >= 0) {
    hsize_t count = 1;
    for (int d = 0; d < rank; ++d) count *= dims[d];
    std::vector<uint8_t> raw(size_t(count) * H5Tget_size(type));
    for (auto& b : raw) b = in.next();
    H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data());
    H5Dclose(ds);
  }
  H5Sclose(space);
}

void edit(hid_t f, Bytes& in) {
  const uint8_t op = in.next() % 4, which = in.next();
  switch (op) {
    case 0:  // delete an attribute
      H5Adelete(f, kAttrs[which % std::size(kAttrs)]);
      break;
    case 1: {  // rewrite an attribute: another type, rank 0 or 1, random bytes
      const char* name = kAttrs[which % std::size(kAttrs)];
      H5Adelete(f, name);
      const hid_t type = kTypes[in.next() % std::size(kTypes)];
      const hsize_t len = in.next() % 6;
      const hid_t space = len == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &len, nullptr);
      const hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
      if (a >= 0) {
        std::vector<uint8_t> raw(size_t(len == 0 ? 1 : len) * H5Tget_size(type));
        for (auto& b : raw) b = in.next();
        H5Awrite(a, type, raw.data());
        H5Aclose(a);
      }
      H5Sclose(space);
      break;
    }
    case 2:  // delete a dataset
      H5Ldelete(f, kDatasets[which % std::size(kDatasets)], H5P_DEFAULT);
      break;
    default: {  // replace a dataset: another dtype, rank 1-3, small dims, random contents
      const hid_t type = kTypes[in.next() % std::size(kTypes)];
      const int rank = 1 + in.next() % 3;
      hsize_t dims[3];
      for (int d = 0; d < rank; ++d) dims[d] = in.next() % 7;
      write_dataset(f, kDatasets[which % std::size(kDatasets)], type, rank, dims, in);
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::dir() + "/case.h5";
  std::filesystem::copy_file(good_store(), path,
                             std::filesystem::copy_options::overwrite_existing);
  {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // failed edits are part of the game
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) fuzz::broken("the valid store does not open");
    Bytes in{data, size};
    for (int k = 0; k < 8 && in.more(); ++k) edit(f, in);
    H5Fclose(f);
  }
  try {
    const FeatureStore st = FeatureStore::open(path);
    for (Split s : {Split::train, Split::validation, Split::test}) {
      const int64_t n = st.size(s);
      for (int32_t y : st.read_y(s))
        if (y < 0 || size_t(y) >= st.label_names().size()) fuzz::broken("label out of range");
      std::vector<int64_t> idx(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = i;
      std::vector<float> x(static_cast<size_t>(n * st.rows() * st.frames()));
      st.read_x(s, idx.data(), idx.size(), x.data());
      st.read_track_id(s);
    }
  } catch (const std::exception& e) {
    if (std::strstr(e.what(), path.c_str()) == nullptr) fuzz::broken("an error not naming the file");
  }
  return 0;
}
