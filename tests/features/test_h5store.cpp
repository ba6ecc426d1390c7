// test_h5store.cpp: the HDF5 feature store. Round trip, on-disk layout
// checked through the HDF5 C API (chunking, dtypes, maxdims), training-only
// statistics against a loop reference, atomic writes, layout errors, the
// params check, and the two h5py fixtures (h5py -> timbre, timbre -> h5py)
// made by tests/fixtures/make_h5_fixtures.py.
#include <gtest/gtest.h>

// The test inspects files with the HDF5 C API directly. The features library
// links libhdf5 privately, so its include folder may not be on this target's
// path; Debian's serial flavour lives under hdf5/serial.
#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <functional>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "features/h5store.h"
#include "tests/testing.h"

namespace fs = std::filesystem;
using namespace timbre::features;
using timbre::testing::all_close;

namespace {

using timbre::testing::TempDir;

// Contents of a small store, kept in memory to compare with what comes back.
struct SplitData {
  std::vector<float> x;
  std::vector<int32_t> y;
  std::vector<int64_t> track_id, segment_start;
  int64_t n() const { return int64_t(y.size()); }
};

struct StoreData {
  FeatureParams params;
  std::vector<std::string> labels;
  std::string source;
  SplitData split[3];
};

FeatureParams small_params(int n_mels = 8, int frames = 6) {
  FeatureParams p;
  p.n_mels = n_mels;
  p.frames = frames;
  return p;
}

// Random nonzero contents: x around -40 dB (like log-mel), each split offset
// differently so a statistics bug that mixes splits shows.
StoreData random_store(uint64_t seed, int n_mels, int frames, std::array<int, 3> sizes) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> val(-80.f, 0.f);
  StoreData d;
  d.params = small_params(n_mels, frames);
  d.labels = {"blues", "hip-hop", "rock", "zydeco"};
  d.source = "test store seed=" + std::to_string(seed);
  for (int s = 0; s < 3; ++s) {
    SplitData& sd = d.split[s];
    for (int i = 0; i < sizes[s]; ++i) {
      for (int k = 0; k < n_mels * frames; ++k) sd.x.push_back(val(gen) + 25.f * float(s));
      sd.y.push_back(int32_t(gen() % d.labels.size()));
      sd.track_id.push_back(int64_t(gen() % 200000));
      sd.segment_start.push_back(int64_t(gen() % 10) * 65024);
    }
  }
  return d;
}

// Writes `d` in batches of at most `batch` samples, interleaving the splits.
void write_store(const std::string& path, const StoreData& d, int batch) {
  FeatureWriter w(path, d.params, d.labels, d.source);
  const size_t per = size_t(d.params.n_mels) * d.params.frames;
  int64_t done[3] = {0, 0, 0};
  bool more = true;
  while (more) {
    more = false;
    for (int s = 0; s < 3; ++s) {
      const SplitData& sd = d.split[s];
      const int64_t c = std::min<int64_t>(batch, sd.n() - done[s]);
      if (c <= 0) continue;
      w.append(Split(s), c, sd.x.data() + done[s] * per, sd.y.data() + done[s],
               sd.track_id.data() + done[s], sd.segment_start.data() + done[s]);
      done[s] += c;
      more = true;
    }
  }
  w.finish();
}

// Reference statistics over the training split: plain double loops, two passes.
void reference_stats(const StoreData& d, std::vector<double>& mean, std::vector<double>& sd) {
  const int R = d.params.n_mels, F = d.params.frames;
  const SplitData& t = d.split[0];
  mean.assign(R, 0.0);
  sd.assign(R, 0.0);
  const double n = double(t.n()) * F;
  for (int r = 0; r < R; ++r) {
    double s = 0;
    for (int64_t i = 0; i < t.n(); ++i)
      for (int f = 0; f < F; ++f) s += t.x[(i * R + r) * F + f];
    mean[r] = s / n;
    double q = 0;
    for (int64_t i = 0; i < t.n(); ++i)
      for (int f = 0; f < F; ++f) {
        const double e = t.x[(i * R + r) * F + f] - mean[r];
        q += e * e;
      }
    sd[r] = std::sqrt(q / n);
  }
}

void expect_same_contents(const FeatureStore& st, const StoreData& d) {
  EXPECT_EQ(st.label_names(), d.labels);
  EXPECT_EQ(st.source(), d.source);
  EXPECT_EQ(st.version(), timbre_version());
  EXPECT_EQ(st.format_version(), kFeatureFormatVersion);
  EXPECT_NO_THROW(st.check_params(d.params));
  const size_t per = size_t(st.rows()) * st.frames();
  for (int s = 0; s < 3; ++s) {
    const SplitData& sd = d.split[s];
    ASSERT_EQ(st.size(Split(s)), sd.n()) << split_name(Split(s));
    EXPECT_EQ(st.read_y(Split(s)), sd.y);
    EXPECT_EQ(st.read_track_id(Split(s)), sd.track_id);
    EXPECT_EQ(st.read_segment_start(Split(s)), sd.segment_start);
    std::vector<int64_t> all(size_t(sd.n()));
    for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
    std::vector<float> got(all.size() * per, std::nanf(""));
    st.read_x(Split(s), all.data(), all.size(), got.data());
    // Stored float32 and read back: bit-exact.
    EXPECT_TRUE(all_close(got, sd.x, {.atol = 0, .rtol = 0}));
  }
}

// --- Raw HDF5 inspection and mutation helpers (the test's own, not the store's).
struct H5File {
  hid_t id;
  explicit H5File(const std::string& path, unsigned flags = H5F_ACC_RDONLY)
      : id(H5Fopen(path.c_str(), flags, H5P_DEFAULT)) {
    EXPECT_GE(id, 0) << path;
  }
  ~H5File() { H5Fclose(id); }
};

void replace_dataset(hid_t file, const char* name, hid_t type, std::vector<hsize_t> dims) {
  ASSERT_GE(H5Ldelete(file, name, H5P_DEFAULT), 0) << name;
  const hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  const hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(d, 0) << name;
  H5Dclose(d);
  H5Sclose(space);
}

std::string open_error(const std::string& path) {
  try {
    FeatureStore::open(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

constexpr std::array<int, 3> kSizes = {7, 3, 2};

}  // namespace

TEST(H5Store, RoundTripInBatchesAndRandomAccess) {
  TempDir tmp;
  const std::string path = tmp.file("feat.h5");
  const StoreData d = random_store(1, 9, 7, {13, 5, 3});
  write_store(path, d, 4);  // batches of 4, 4, 4, 1 for train: several extensions
  FeatureStore st = FeatureStore::open(path);
  EXPECT_EQ(st.path(), path);
  EXPECT_EQ(st.rows(), 9);
  EXPECT_EQ(st.frames(), 7);
  EXPECT_EQ(st.params().n_mels, 9);
  EXPECT_EQ(st.params().hop, 512);
  EXPECT_EQ(st.params().fmax, 11025.0);
  expect_same_contents(st, d);

  // Shuffled indices, with a repeat and a consecutive run, into a caller buffer.
  const std::vector<int64_t> idx = {12, 0, 5, 6, 7, 3, 3, 11};
  const size_t per = 9 * 7;
  std::vector<float> got(idx.size() * per), ref;
  st.read_x(Split::train, idx.data(), idx.size(), got.data());
  for (int64_t i : idx)
    ref.insert(ref.end(), d.split[0].x.begin() + i * per, d.split[0].x.begin() + (i + 1) * per);
  EXPECT_TRUE(all_close(got, ref, {.atol = 0, .rtol = 0}));

  const int64_t bad[] = {0, 5};
  try {
    st.read_x(Split::validation, bad, 2, got.data());
    FAIL() << "index 5 of 5 accepted";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find("index 5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(H5Store, ChunkingDtypesAndAttributesOnDisk) {
  TempDir tmp;
  const std::string path = tmp.file("feat.h5");
  const StoreData d = random_store(2, 8, 6, kSizes);
  write_store(path, d, 3);
  H5File f(path);
  for (int si = 0; si < 3; ++si) {
    const char* g = split_name(Split(si));
    const std::string x = std::string("/") + g + "/x";
    const hid_t ds = H5Dopen2(f.id, x.c_str(), H5P_DEFAULT);
    ASSERT_GE(ds, 0) << x;
    const hid_t type = H5Dget_type(ds);
    EXPECT_GT(H5Tequal(type, H5T_IEEE_F32LE), 0) << x;
    const hid_t space = H5Dget_space(ds);
    hsize_t dims[3], maxdims[3];
    ASSERT_EQ(H5Sget_simple_extent_dims(space, dims, maxdims), 3);
    EXPECT_EQ(dims[0], hsize_t(kSizes[si]));
    EXPECT_EQ(dims[1], 8u);
    EXPECT_EQ(dims[2], 6u);
    EXPECT_EQ(maxdims[0], H5S_UNLIMITED);
    EXPECT_EQ(maxdims[1], 8u);
    EXPECT_EQ(maxdims[2], 6u);
    const hid_t dcpl = H5Dget_create_plist(ds);
    EXPECT_EQ(H5Pget_layout(dcpl), H5D_CHUNKED);
    hsize_t chunk[3];
    ASSERT_EQ(H5Pget_chunk(dcpl, 3, chunk), 3);
    EXPECT_EQ(chunk[0], 1u);  // one sample per chunk
    EXPECT_EQ(chunk[1], 8u);
    EXPECT_EQ(chunk[2], 6u);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(type);
    H5Dclose(ds);
    const std::pair<const char*, hid_t> ones[] = {
        {"y", H5T_STD_I32LE}, {"track_id", H5T_STD_I64LE}, {"segment_start", H5T_STD_I64LE}};
    for (const auto& [name, want] : ones) {
      const std::string p = std::string("/") + g + "/" + name;
      const hid_t d1 = H5Dopen2(f.id, p.c_str(), H5P_DEFAULT);
      ASSERT_GE(d1, 0) << p;
      const hid_t t1 = H5Dget_type(d1);
      EXPECT_GT(H5Tequal(t1, want), 0) << p;
      const hid_t s1 = H5Dget_space(d1);
      hsize_t n1, m1;
      EXPECT_EQ(H5Sget_simple_extent_dims(s1, &n1, &m1), 1) << p;
      EXPECT_EQ(n1, dims[0]) << p;
      EXPECT_EQ(m1, H5S_UNLIMITED) << p;
      H5Sclose(s1);
      H5Tclose(t1);
      H5Dclose(d1);
    }
  }
  auto attr_type_is = [&](const char* name, hid_t want) {
    const hid_t a = H5Aopen(f.id, name, H5P_DEFAULT);
    if (a < 0) return false;
    const hid_t t = H5Aget_type(a);
    const bool same = H5Tequal(t, want) > 0;
    H5Tclose(t);
    H5Aclose(a);
    return same;
  };
  for (const char* n : {"sample_rate", "n_fft", "hop", "n_mels", "frames", "n_mfcc", "format_version"})
    EXPECT_TRUE(attr_type_is(n, H5T_STD_I32LE)) << n;
  for (const char* n : {"fmin", "fmax", "top_db"}) EXPECT_TRUE(attr_type_is(n, H5T_IEEE_F64LE)) << n;
  for (const char* n : {"band_mean", "band_std"}) EXPECT_TRUE(attr_type_is(n, H5T_IEEE_F32LE)) << n;
  for (const char* n : {"label_names", "source", "timbre_version"}) {
    const hid_t a = H5Aopen(f.id, n, H5P_DEFAULT);
    ASSERT_GE(a, 0) << n;
    const hid_t t = H5Aget_type(a);
    EXPECT_EQ(H5Tget_class(t), H5T_STRING) << n;
    EXPECT_GT(H5Tis_variable_str(t), 0) << n;
    H5Tclose(t);
    H5Aclose(a);
  }
}

TEST(H5Store, BandStatisticsOverTrainingSplitOnly) {
  TempDir tmp;
  const std::string path = tmp.file("feat.h5");
  // Validation and test are offset by +25 and +50 dB: including them would
  // move every mean by several dB.
  const StoreData d = random_store(3, 11, 5, {23, 9, 6});
  write_store(path, d, 5);  // batches 5,5,5,5,3: exercises the batch merge
  FeatureStore st = FeatureStore::open(path);
  std::vector<double> mean, sd;
  reference_stats(d, mean, sd);
  // The store keeps float32: allow float32 rounding of values of magnitude
  // <= 80 (half an ulp ~ 4e-6) plus a little for a different summation order.
  EXPECT_TRUE(all_close(st.band_mean(), mean, {.atol = 1e-5, .rtol = 1e-6}));
  EXPECT_TRUE(all_close(st.band_std(), sd, {.atol = 1e-5, .rtol = 1e-6}));
  // A single batch must give the same statistics as five.
  const std::string path1 = tmp.file("one.h5");
  write_store(path1, d, 1000);
  FeatureStore st1 = FeatureStore::open(path1);
  EXPECT_TRUE(all_close(st1.band_mean(), st.band_mean(), {.atol = 1e-5, .rtol = 1e-6}));
  EXPECT_TRUE(all_close(st1.band_std(), st.band_std(), {.atol = 1e-5, .rtol = 1e-6}));
}

TEST(H5Store, UnfinishedWriterLeavesExistingFileAndNoTemp) {
  TempDir tmp;
  const std::string path = tmp.file("feat.h5");
  {
    std::ofstream(path) << "previous contents";
  }
  const StoreData d = random_store(4, 8, 6, kSizes);
  std::string temp;
  {
    FeatureWriter w(path, d.params, d.labels, d.source);
    temp = w.temp_path();
    EXPECT_NE(temp, path);
    EXPECT_TRUE(fs::exists(temp));
    w.append(Split::train, 2, d.split[0].x.data(), d.split[0].y.data(),
             d.split[0].track_id.data(), d.split[0].segment_start.data());
    // destroyed without finish(), as when an exception unwinds extraction
  }
  EXPECT_FALSE(fs::exists(temp));
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  EXPECT_EQ(s, "previous contents");
  EXPECT_EQ(tmp.names(), std::vector<std::string>{"feat.h5"});

  // finish() that fails (no training samples) also leaves the old file alone.
  {
    FeatureWriter w(path, d.params, d.labels, d.source);
    w.append(Split::test, 1, d.split[2].x.data(), d.split[2].y.data(),
             d.split[2].track_id.data(), d.split[2].segment_start.data());
    try {
      w.finish();
      FAIL() << "finish() without training samples accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("no training samples"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(tmp.names(), std::vector<std::string>{"feat.h5"});
  std::ifstream in2(path);
  std::getline(in2, s);
  EXPECT_EQ(s, "previous contents");

  // A finished writer replaces it, and leaves no temporary behind.
  write_store(path, d, 2);
  EXPECT_EQ(tmp.names(), std::vector<std::string>{"feat.h5"});
  expect_same_contents(FeatureStore::open(path), d);
}

TEST(H5Store, AppendRejectsBadBatchesWithoutWritingThem) {
  TempDir tmp;
  const std::string path = tmp.file("feat.h5");
  StoreData d = random_store(5, 8, 6, kSizes);
  FeatureWriter w(path, d.params, d.labels, d.source);
  SplitData& t = d.split[0];
  std::vector<int32_t> bad_y = t.y;
  bad_y[1] = 4;  // 4 labels: 4 is out of range
  try {
    w.append(Split::train, 2, t.x.data(), bad_y.data(), t.track_id.data(), t.segment_start.data());
    FAIL() << "label 4 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("label 4 outside [0, 4)"), std::string::npos) << e.what();
  }
  std::vector<float> bad_x = t.x;
  bad_x[8 * 6 + 3] = std::nanf("");
  EXPECT_THROW(w.append(Split::train, 2, bad_x.data(), t.y.data(), t.track_id.data(),
                        t.segment_start.data()),
               std::invalid_argument);
  EXPECT_EQ(w.size(Split::train), 0);
  w.append(Split::train, t.n(), t.x.data(), t.y.data(), t.track_id.data(), t.segment_start.data());
  EXPECT_EQ(w.size(Split::train), t.n());
  w.finish();
  FeatureStore st = FeatureStore::open(path);
  EXPECT_EQ(st.read_y(Split::train), t.y);

  EXPECT_THROW(FeatureWriter(tmp.file("x.h5"), d.params, {}, "s"), std::invalid_argument);
  try {
    FeatureWriter(tmp.file("no/such/dir/x.h5"), d.params, d.labels, "s");
    FAIL() << "unwritable folder accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/x.h5.tmp-"), std::string::npos) << e.what();
  }
}

TEST(H5Store, ParamsMismatchNamesEachField) {
  TempDir tmp;
  const std::string path = tmp.file("feat.h5");
  const StoreData d = random_store(6, 8, 6, kSizes);
  write_store(path, d, 8);
  FeatureStore st = FeatureStore::open(path);
  FeatureParams req = d.params;
  req.n_mels = 64;
  req.hop = 604;
  req.fmax = 8000.5;
  try {
    st.check_params(req);
    FAIL() << "differing params accepted";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find("n_mels: file 8, requested 64"), std::string::npos) << m;
    EXPECT_NE(m.find("hop: file 512, requested 604"), std::string::npos) << m;
    EXPECT_NE(m.find("fmax: file 11025, requested 8000.5"), std::string::npos) << m;
    EXPECT_EQ(m.find("n_fft"), std::string::npos) << m;  // equal fields are not listed
  }
}

TEST(H5Store, LayoutErrorsNameFileAndProblem) {
  TempDir tmp;
  const StoreData d = random_store(7, 8, 6, kSizes);
  const std::string good = tmp.file("good.h5");
  write_store(good, d, 8);
  ASSERT_NO_THROW(FeatureStore::open(good));
  int case_no = 0;
  // Copies the good file, applies `mutate` through the HDF5 API, opens it
  // with FeatureStore and checks the message names the file and the problem.
  auto expect_error = [&](const std::function<void(hid_t)>& mutate, const std::string& want) {
    const std::string p = tmp.file("bad" + std::to_string(case_no++) + ".h5");
    fs::copy_file(good, p);
    {
      H5File f(p, H5F_ACC_RDWR);
      mutate(f.id);
    }
    const std::string msg = open_error(p);
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find(want), std::string::npos) << "wanted \"" << want << "\" in: " << msg;
  };
  expect_error([](hid_t f) { H5Ldelete(f, "/validation", H5P_DEFAULT); },
               "missing group /validation");
  expect_error([](hid_t f) { H5Ldelete(f, "/test/track_id", H5P_DEFAULT); },
               "missing dataset /test/track_id");
  expect_error([](hid_t f) { replace_dataset(f, "/train/y", H5T_STD_I64LE, {7}); },
               "/train/y has dtype int64, expected int32");
  expect_error([](hid_t f) { replace_dataset(f, "/train/x", H5T_IEEE_F64LE, {7, 8, 6}); },
               "/train/x has dtype float64, expected float32");
  expect_error([](hid_t f) { replace_dataset(f, "/validation/x", H5T_IEEE_F32LE, {3, 48}); },
               "/validation/x has rank 2, expected 3");
  expect_error([](hid_t f) { replace_dataset(f, "/train/x", H5T_IEEE_F32LE, {7, 8, 5}); },
               "/train/x has shape (7, 8, 5), expected (N, 8, 6)");
  expect_error([](hid_t f) { replace_dataset(f, "/test/y", H5T_STD_I32LE, {3}); },
               "/test/y has length 3, but /test/x holds 2 samples");
  expect_error([](hid_t f) { replace_dataset(f, "/train/track_id", H5T_STD_I64LE, {6}); },
               "/train/track_id has length 6, but /train/x holds 7 samples");
  expect_error(
      [](hid_t f) {
        const hid_t ds = H5Dopen2(f, "/validation/y", H5P_DEFAULT);
        const int32_t bad[3] = {0, 9, 1};
        H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad);
        H5Dclose(ds);
      },
      "/validation/y[1] = 9 is outside [0, 4)");
  expect_error([](hid_t f) { H5Adelete(f, "hop"); }, "missing root attribute 'hop'");
  expect_error(
      [](hid_t f) {
        H5Adelete(f, "format_version");
        const hid_t sp = H5Screate(H5S_SCALAR);
        const hid_t a = H5Acreate2(f, "format_version", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        const int v = 99;
        H5Awrite(a, H5T_NATIVE_INT, &v);
        H5Aclose(a);
        H5Sclose(sp);
      },
      "format_version 99 is not supported");
  // Band statistics that would turn every normalised sample into NaN.
  auto set_band_attr = [](const char* name, float bad_value) {
    return [=](hid_t f) {
      const hid_t a = H5Aopen(f, name, H5P_DEFAULT);
      std::vector<float> v(8, 1.f);
      v[5] = bad_value;
      H5Awrite(a, H5T_NATIVE_FLOAT, v.data());
      H5Aclose(a);
    };
  };
  expect_error(set_band_attr("band_mean", std::nanf("")),
               "attribute 'band_mean' is not finite at band 5");
  expect_error(set_band_attr("band_std", -1.f),
               "attribute 'band_std' must be finite and >= 0, band 5 holds -1");
  expect_error(set_band_attr("band_std", INFINITY), "band_std' must be finite");

  const std::string text = tmp.file("text.h5");
  std::ofstream(text) << "not hdf5";
  EXPECT_NE(open_error(text).find(text + ": not an HDF5 file"), std::string::npos)
      << open_error(text);
  const std::string none = tmp.file("none.h5");
  EXPECT_NE(open_error(none).find(none + ": feature store not found"), std::string::npos)
      << open_error(none);
}

// Reads a batch of 64 random samples of 128x128 repeatedly: the access
// pattern of shuffled training. Prints the throughput (no assertion: the
// machine is shared).
TEST(H5Store, RandomReadThroughput) {
  TempDir tmp;
  const std::string path = tmp.file("big.h5");
  FeatureParams p;  // 128 x 128
  const int n = 512;
  const size_t per = size_t(p.n_mels) * p.frames;
  {
    FeatureWriter w(path, p, {"a", "b"}, "throughput");
    std::vector<float> x(64 * per);
    std::vector<int32_t> y(64);
    std::vector<int64_t> t(64), s(64);
    for (int b = 0; b < n / 64; ++b) {
      for (size_t k = 0; k < x.size(); ++k) x[k] = float((k * 7 + size_t(b)) % 997) * -0.08f;
      for (int i = 0; i < 64; ++i) {
        y[i] = (b * 64 + i) % 2;
        t[i] = b * 64 + i;
        s[i] = 0;
      }
      w.append(Split::train, 64, x.data(), y.data(), t.data(), s.data());
    }
    w.finish();
  }
  FeatureStore st = FeatureStore::open(path);
  std::mt19937_64 gen(9);
  std::vector<int64_t> idx(64);
  std::vector<float> out(64 * per);
  const int batches = 40;
  const auto t0 = std::chrono::steady_clock::now();
  for (int b = 0; b < batches; ++b) {
    for (auto& i : idx) i = int64_t(gen() % n);
    st.read_x(Split::train, idx.data(), idx.size(), out.data());
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double samples = double(batches) * 64;
  std::printf("random read: %.0f samples/s, %.0f MB/s (128x128 float32, batches of 64, page cache warm)\n",
              samples / sec, samples * per * 4 / sec / 1e6);
  // Check the last batch against the formula that wrote it: sample g was
  // sample g % 64 of batch g / 64.
  for (size_t k = 0; k < idx.size(); ++k) {
    const size_t b = size_t(idx[k]) / 64, i = size_t(idx[k]) % 64;
    for (size_t e = 0; e < per; e += 97)
      ASSERT_EQ(out[k * per + e], float(((i * per + e) * 7 + b) % 997) * -0.08f) << idx[k];
  }
}

// ---------------------------------------------------------------------------
// h5py fixtures (tests/fixtures/make_h5_fixtures.py).

namespace {

const std::string kH5Dir = timbre::testing::fixtures_dir() + "/h5";

// What DISABLED_WriteTimbreFixture commits as timbre_written.h5: small,
// nonzero, non-trivial float values (sin), three labels, uneven splits.
StoreData timbre_fixture_data() {
  StoreData d;
  d.params = small_params(8, 6);
  d.labels = {"blues", "hip-hop", "rock"};
  d.source = "timbre fixture: tests/features/test_h5store.cpp";
  const int sizes[3] = {4, 2, 1};
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < sizes[s]; ++i) {
      for (int m = 0; m < 8; ++m)
        for (int t = 0; t < 6; ++t)
          d.split[s].x.push_back(float(-40.0 + 30.0 * std::sin(0.37 * i + 0.21 * m - 0.13 * t + s)));
      d.split[s].y.push_back(int32_t((i + 2 * s) % 3));
      d.split[s].track_id.push_back(int64_t(100000 * (s + 1) + 13 * i));
      d.split[s].segment_start.push_back(int64_t(i) * 65024 + 3 * s);
    }
  return d;
}

double h5py_x(int s, int i, int m, int t) { return s * 100.0 + i * 1.0 + m * 0.25 - t * 0.0625 - 50.0; }

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, '\t')) out.push_back(field);
  if (!line.empty() && line.back() == '\t') out.push_back("");
  return out;
}

}  // namespace

TEST(H5pyFixture, H5pyWrittenStoreReadsValueByValue) {
  const std::string path = kH5Dir + "/h5py_written.h5";
  FeatureStore st = FeatureStore::open(path);
  EXPECT_EQ(st.rows(), 8);
  EXPECT_EQ(st.frames(), 6);
  FeatureParams want = small_params(8, 6);
  EXPECT_NO_THROW(st.check_params(want));
  EXPECT_EQ(st.label_names(), (std::vector<std::string>{"blues", "classical", "rock"}));
  EXPECT_EQ(st.source(), "h5py fixture: tests/fixtures/make_h5_fixtures.py");
  EXPECT_EQ(st.version(), "0.1.0");
  EXPECT_EQ(st.format_version(), 1);
  const int sizes[3] = {5, 2, 3};
  std::vector<double> train_x;
  for (int s = 0; s < 3; ++s) {
    ASSERT_EQ(st.size(Split(s)), sizes[s]);
    std::vector<int64_t> idx;
    for (int i = sizes[s] - 1; i >= 0; --i) idx.push_back(i);  // reversed order
    std::vector<float> x(idx.size() * 48);
    st.read_x(Split(s), idx.data(), idx.size(), x.data());
    const auto y = st.read_y(Split(s));
    const auto tid = st.read_track_id(Split(s));
    const auto seg = st.read_segment_start(Split(s));
    for (int i = 0; i < sizes[s]; ++i) {
      EXPECT_EQ(y[i], (i + s) % 3);
      EXPECT_EQ(tid[i], 1000 * (s + 1) + 7 * i);
      EXPECT_EQ(seg[i], int64_t(i) * 65024 + s);
    }
    for (size_t k = 0; k < idx.size(); ++k)
      for (int m = 0; m < 8; ++m)
        for (int t = 0; t < 6; ++t)
          ASSERT_EQ(x[(k * 8 + m) * 6 + t], float(h5py_x(s, int(idx[k]), m, t)))
              << "split " << s << " sample " << idx[k] << " m " << m << " t " << t;
  }
  // numpy's statistics (float64, stored float32) against our loop.
  for (int m = 0; m < 8; ++m) {
    double sum = 0, sq = 0;
    for (int i = 0; i < 5; ++i)
      for (int t = 0; t < 6; ++t) sum += h5py_x(0, i, m, t);
    const double mean = sum / 30;
    for (int i = 0; i < 5; ++i)
      for (int t = 0; t < 6; ++t) sq += (h5py_x(0, i, m, t) - mean) * (h5py_x(0, i, m, t) - mean);
    // float32 storage: relative rounding 6e-8 on values up to ~50.
    EXPECT_NEAR(st.band_mean()[m], mean, 1e-5) << m;
    EXPECT_NEAR(st.band_std()[m], std::sqrt(sq / 30), 1e-6) << m;
  }
}

// Regenerates the committed tests/fixtures/h5/timbre_written.h5 (run
// explicitly, then `make_h5_fixtures.py read`; see that script's docstring).
TEST(H5pyFixture, DISABLED_WriteTimbreFixture) {
  write_store(kH5Dir + "/timbre_written.h5", timbre_fixture_data(), 3);
}

// The committed timbre_written.h5 holds what today's writer writes.
TEST(H5pyFixture, CommittedTimbreFileMatchesWriter) {
  TempDir tmp;
  const std::string path = tmp.file("timbre_written.h5");
  const StoreData d = timbre_fixture_data();
  write_store(path, d, 3);
  expect_same_contents(FeatureStore::open(path), d);
  expect_same_contents(FeatureStore::open(kH5Dir + "/timbre_written.h5"), d);
  const FeatureStore a = FeatureStore::open(path), b = FeatureStore::open(kH5Dir + "/timbre_written.h5");
  EXPECT_EQ(a.band_mean(), b.band_mean());
  EXPECT_EQ(a.band_std(), b.band_std());
}

// What h5py read from timbre_written.h5 equals what timbre wrote.
TEST(H5pyFixture, H5pyReadsTimbreWrittenFile) {
  const std::string path = kH5Dir + "/timbre_written_h5py.txt";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " missing: run tests/fixtures/make_h5_fixtures.py read";
  std::map<std::string, std::vector<std::string>> rec;
  std::string line;
  while (std::getline(in, line)) {
    const auto f = split_tabs(line);
    ASSERT_GE(f.size(), 2u) << line;
    rec[f[0] + ":" + f[1]] = std::vector<std::string>(f.begin() + 2, f.end());
  }
  const StoreData d = timbre_fixture_data();
  auto attr = [&](const std::string& name) -> const std::vector<std::string>& {
    static const std::vector<std::string> none;
    auto it = rec.find("attr:" + name);
    EXPECT_NE(it, rec.end()) << "h5py saw no attribute " << name;
    return it == rec.end() ? none : it->second;
  };
  // Attributes: dtype, shape, value.
  const std::pair<const char*, int> ints[] = {
      {"sample_rate", d.params.sample_rate}, {"n_fft", d.params.n_fft}, {"hop", d.params.hop},
      {"n_mels", d.params.n_mels},           {"frames", d.params.frames},
      {"n_mfcc", d.params.n_mfcc},           {"format_version", kFeatureFormatVersion}};
  for (const auto& [name, v] : ints)
    EXPECT_EQ(attr(name), (std::vector<std::string>{"<i4", "", std::to_string(v)})) << name;
  const std::pair<const char*, double> dbls[] = {
      {"fmin", d.params.fmin}, {"fmax", d.params.fmax}, {"top_db", d.params.top_db}};
  for (const auto& [name, v] : dbls) {
    const auto& a = attr(name);
    ASSERT_EQ(a.size(), 3u) << name;
    EXPECT_EQ(a[0], "<f8") << name;
    EXPECT_EQ(std::strtod(a[2].c_str(), nullptr), v) << name;
  }
  EXPECT_EQ(attr("label_names"), (std::vector<std::string>{"str", "3", "blues", "hip-hop", "rock"}));
  EXPECT_EQ(attr("source"), (std::vector<std::string>{"str", "", d.source}));
  EXPECT_EQ(attr("timbre_version"), (std::vector<std::string>{"str", "", timbre_version()}));
  std::vector<double> mean, sd;
  reference_stats(d, mean, sd);
  for (const auto& [name, ref] : {std::pair{"band_mean", mean}, std::pair{"band_std", sd}}) {
    const auto& a = attr(name);
    ASSERT_EQ(a.size(), 2u + 8u) << name;
    EXPECT_EQ(a[0], "<f4");
    EXPECT_EQ(a[1], "8");
    std::vector<double> got;
    for (size_t k = 2; k < a.size(); ++k) got.push_back(std::strtod(a[k].c_str(), nullptr));
    // float32 storage of a double statistic (values <= 70): see BandStatistics.
    EXPECT_TRUE(all_close(got, ref, {.atol = 1e-5, .rtol = 1e-6})) << name;
  }
  // Datasets: dtype, shape, chunks, maxshape and every value.
  for (int s = 0; s < 3; ++s) {
    const SplitData& sd_ = d.split[s];
    const std::string g = std::string("/") + split_name(Split(s));
    const std::string n = std::to_string(sd_.n());
    EXPECT_EQ(rec["dataset:" + g + "/x"], (std::vector<std::string>{"<f4", n + ",8,6", "1,8,6", "None,8,6"}));
    EXPECT_EQ(rec["dataset:" + g + "/y"], (std::vector<std::string>{"<i4", n, "1024", "None"}));
    EXPECT_EQ(rec["dataset:" + g + "/track_id"], (std::vector<std::string>{"<i8", n, "1024", "None"}));
    EXPECT_EQ(rec["dataset:" + g + "/segment_start"],
              (std::vector<std::string>{"<i8", n, "1024", "None"}));
    std::vector<float> x;
    for (const auto& v : rec["values:" + g + "/x"]) x.push_back(float(std::strtod(v.c_str(), nullptr)));
    EXPECT_TRUE(all_close(x, sd_.x, {.atol = 0, .rtol = 0})) << g;  // exact: repr round-trips
    auto ints_of = [&](const std::string& key) {
      std::vector<int64_t> v;
      for (const auto& e : rec[key]) v.push_back(std::strtoll(e.c_str(), nullptr, 10));
      return v;
    };
    EXPECT_EQ(ints_of("values:" + g + "/y"), std::vector<int64_t>(sd_.y.begin(), sd_.y.end())) << g;
    EXPECT_EQ(ints_of("values:" + g + "/track_id"), sd_.track_id) << g;
    EXPECT_EQ(ints_of("values:" + g + "/segment_start"), sd_.segment_start) << g;
  }
}
