// h5store.cpp: the HDF5 feature store over the libhdf5 C API (serial 1.10).
// Layout, statistics and atomicity are explained in h5store.h.
//
// HDF5 C API in brief: every object (file, group, dataset, dataspace,
// datatype, attribute, property list) is an integer handle `hid_t` that must
// be closed with its own H5?close function; calls return a negative value on
// failure. `Handle` below owns one handle; `ok()` turns a failure into an
// exception naming the file and the step. A dataset's *dataspace* is its
// shape; reading or writing part of it means selecting a *hyperslab* (a box:
// start and count per dimension) in the file dataspace and describing the
// caller's buffer with a memory dataspace of the same number of elements.
#include "features/h5store.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace timbre::features {

// The one place timbre's version lives for the store. The CMake project
// version is used when the build passes it as TIMBRE_VERSION_STRING.
const char* timbre_version() {
#ifdef TIMBRE_VERSION_STRING
  return TIMBRE_VERSION_STRING;
#else
  return "0.1.0";
#endif
}

namespace {

constexpr Split kSplits[3] = {Split::train, Split::validation, Split::test};

// --- FeatureParams fields as attributes: one table for writing, reading and
// comparing, so adding a field to params.h means adding one line here.
struct IntField {
  const char* name;
  int FeatureParams::*member;
};
struct DoubleField {
  const char* name;
  double FeatureParams::*member;
};
constexpr IntField kIntFields[] = {
    {"sample_rate", &FeatureParams::sample_rate}, {"n_fft", &FeatureParams::n_fft},
    {"hop", &FeatureParams::hop},                 {"n_mels", &FeatureParams::n_mels},
    {"frames", &FeatureParams::frames},           {"n_mfcc", &FeatureParams::n_mfcc},
};
constexpr DoubleField kDoubleFields[] = {
    {"fmin", &FeatureParams::fmin}, {"fmax", &FeatureParams::fmax},
    {"top_db", &FeatureParams::top_db}};

int rows_of(const FeatureParams& p) { return p.n_mfcc > 0 ? p.n_mfcc : p.n_mels; }

std::string fmt_double(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// --- Handles and errors.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

// HDF5 prints its whole error stack to stderr on every failure unless told
// not to. We report our own messages, so printing is off while our calls
// run and restored afterwards (the setting is process-global).
class QuietHdf5 {
 public:
  QuietHdf5() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}
// HDF5 flushes and closes the files still open at exit, from an atexit
// handler. timbre closes every file it completes; the only file that can be
// open then is a temporary one whose close failed (a full disk), and which
// is deleted: flushing it again from H5_term_library crashed the process
// (SIGSEGV in H5F__close_cb). So no exit-time cleanup (H5dont_atexit must
// come before any other HDF5 call: a static initialiser).
const bool kNoHdf5AtExit = (H5dont_atexit(), true);

// The operating system's reason for an HDF5 I/O failure, from the default
// error stack: its file driver records "errno = 28, error message = 'No
// space left on device'" in the description of the failed read or write.
// Empty when the failure was not an I/O error.
std::string hdf5_system_error() {
  std::string found;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        auto* out = static_cast<std::string*>(data);
        const std::string d = e->desc ? e->desc : "";
        const std::string key = "error message = '";
        const size_t at = d.find(key);
        if (out->empty() && at != std::string::npos) {
          const size_t end = d.find('\'', at + key.size());
          *out = d.substr(at + key.size(), end == std::string::npos ? end : end - at - key.size());
        }
        return 0;
      },
      &found);
  return found;
}

// "<what> failed (HDF5 error)", with the system's reason when there is one.
[[noreturn]] void fail_hdf5(const std::string& path, const std::string& what) {
  const std::string reason = hdf5_system_error();
  fail(path, what + " failed (" + (reason.empty() ? "HDF5 error" : reason) + ")");
}

hid_t ok(hid_t id, const std::string& path, const std::string& what) {
  if (id < 0) fail_hdf5(path, what);
  return id;
}
void ok_status(herr_t st, const std::string& path, const std::string& what) {
  if (st < 0) fail_hdf5(path, what);
}

Handle space_simple(int rank, const hsize_t* dims, const hsize_t* maxdims, const std::string& path) {
  return Handle(ok(H5Screate_simple(rank, dims, maxdims), path, "H5Screate_simple"), H5Sclose);
}

// --- Attribute writers.
void write_attr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, int rank,
                const hsize_t* dims, const void* data, const std::string& path) {
  Handle space(rank == 0 ? ok(H5Screate(H5S_SCALAR), path, "H5Screate")
                         : ok(H5Screate_simple(rank, dims, nullptr), path, "H5Screate_simple"),
               H5Sclose);
  Handle attr(ok(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), path,
                 std::string("creating attribute ") + name),
              H5Aclose);
  ok_status(H5Awrite(attr.get(), mem_type, data), path, std::string("writing attribute ") + name);
}

Handle vlen_string_type(const std::string& path) {
  Handle t(ok(H5Tcopy(H5T_C_S1), path, "H5Tcopy"), H5Tclose);
  ok_status(H5Tset_size(t.get(), H5T_VARIABLE), path, "H5Tset_size");
  ok_status(H5Tset_cset(t.get(), H5T_CSET_UTF8), path, "H5Tset_cset");
  return t;
}

void write_string_attr(hid_t obj, const char* name, const std::string& value,
                       const std::string& path) {
  Handle t = vlen_string_type(path);
  const char* p = value.c_str();
  write_attr(obj, name, t.get(), t.get(), 0, nullptr, &p, path);
}

void write_string_array_attr(hid_t obj, const char* name, const std::vector<std::string>& v,
                             const std::string& path) {
  Handle t = vlen_string_type(path);
  std::vector<const char*> ptrs;
  for (const auto& s : v) ptrs.push_back(s.c_str());
  const hsize_t n = v.size();
  write_attr(obj, name, t.get(), t.get(), 1, &n, ptrs.data(), path);
}

// --- Attribute readers (accepting what h5py writes too: int64 scalars,
// fixed or variable-length strings).
struct AttrInfo {
  Handle attr, type, space;
  hssize_t npoints = 0;
  int rank = 0;
};

AttrInfo open_attr(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) fail(path, std::string("missing root attribute '") + name + "'");
  AttrInfo a;
  a.attr = Handle(ok(H5Aopen(obj, name, H5P_DEFAULT), path, std::string("opening attribute ") + name),
                  H5Aclose);
  a.type = Handle(ok(H5Aget_type(a.attr.get()), path, "H5Aget_type"), H5Tclose);
  a.space = Handle(ok(H5Aget_space(a.attr.get()), path, "H5Aget_space"), H5Sclose);
  a.npoints = H5Sget_simple_extent_npoints(a.space.get());
  a.rank = H5Sget_simple_extent_ndims(a.space.get());
  return a;
}

std::string class_name(hid_t type) {
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return std::string(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_FLOAT: return "float" + std::to_string(bits);
    case H5T_STRING: return "string";
    default: return "a non-numeric type";
  }
}

void expect_scalar(const AttrInfo& a, const char* name, const std::string& path) {
  if (a.npoints != 1 || a.rank > 1)
    fail(path, std::string("attribute '") + name + "' should be a scalar, it has " +
                   std::to_string(a.npoints) + " elements");
}

long long read_int_attr(hid_t obj, const char* name, const std::string& path) {
  AttrInfo a = open_attr(obj, name, path);
  if (H5Tget_class(a.type.get()) != H5T_INTEGER)
    fail(path, std::string("attribute '") + name + "' should be an integer, it is " +
                   class_name(a.type.get()));
  expect_scalar(a, name, path);
  long long v = 0;
  ok_status(H5Aread(a.attr.get(), H5T_NATIVE_LLONG, &v), path, std::string("reading ") + name);
  return v;
}

double read_double_attr(hid_t obj, const char* name, const std::string& path) {
  AttrInfo a = open_attr(obj, name, path);
  const H5T_class_t c = H5Tget_class(a.type.get());
  if (c != H5T_FLOAT && c != H5T_INTEGER)
    fail(path, std::string("attribute '") + name + "' should be a number, it is " +
                   class_name(a.type.get()));
  expect_scalar(a, name, path);
  double v = 0;
  ok_status(H5Aread(a.attr.get(), H5T_NATIVE_DOUBLE, &v), path, std::string("reading ") + name);
  return v;
}

std::vector<float> read_float_array_attr(hid_t obj, const char* name, size_t n,
                                         const std::string& path) {
  AttrInfo a = open_attr(obj, name, path);
  if (H5Tget_class(a.type.get()) != H5T_FLOAT)
    fail(path, std::string("attribute '") + name + "' should be float32, it is " +
                   class_name(a.type.get()));
  if (a.rank != 1 || a.npoints != static_cast<hssize_t>(n))
    fail(path, std::string("attribute '") + name + "' should have shape (" + std::to_string(n) +
                   ",), it has " + std::to_string(a.npoints) + " elements in rank " +
                   std::to_string(a.rank));
  std::vector<float> v(n);
  ok_status(H5Aread(a.attr.get(), H5T_NATIVE_FLOAT, v.data()), path,
            std::string("reading ") + name);
  return v;
}

std::vector<std::string> read_strings_attr(hid_t obj, const char* name, const std::string& path) {
  AttrInfo a = open_attr(obj, name, path);
  if (H5Tget_class(a.type.get()) != H5T_STRING)
    fail(path, std::string("attribute '") + name + "' should be a string, it is " +
                   class_name(a.type.get()));
  const size_t n = static_cast<size_t>(a.npoints);
  std::vector<std::string> out;
  Handle mem(ok(H5Tcopy(H5T_C_S1), path, "H5Tcopy"), H5Tclose);
  H5Tset_cset(mem.get(), H5Tget_cset(a.type.get()));
  if (H5Tis_variable_str(a.type.get()) > 0) {
    // Variable length: HDF5 allocates each string; we copy, then reclaim.
    H5Tset_size(mem.get(), H5T_VARIABLE);
    std::vector<char*> ptrs(n, nullptr);
    ok_status(H5Aread(a.attr.get(), mem.get(), ptrs.data()), path, std::string("reading ") + name);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    H5Dvlen_reclaim(mem.get(), a.space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    // Fixed length: n strings of `size` bytes, NUL- or space-padded.
    const size_t size = H5Tget_size(a.type.get());
    H5Tset_size(mem.get(), size);
    H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
    std::vector<char> buf(n * size);
    ok_status(H5Aread(a.attr.get(), mem.get(), buf.data()), path, std::string("reading ") + name);
    const bool spacepad = H5Tget_strpad(a.type.get()) == H5T_STR_SPACEPAD;
    for (size_t i = 0; i < n; ++i) {
      std::string s(buf.data() + i * size, size);
      s.resize(std::strlen(s.c_str()));
      if (spacepad)
        while (!s.empty() && s.back() == ' ') s.pop_back();
      out.push_back(s);
    }
  }
  return out;
}

std::string read_string_attr(hid_t obj, const char* name, const std::string& path) {
  std::vector<std::string> v = read_strings_attr(obj, name, path);
  if (v.size() != 1)
    fail(path, std::string("attribute '") + name + "' should be one string, it has " +
                   std::to_string(v.size()));
  return v[0];
}

// --- Dataset helpers.
struct DatasetShape {
  Handle dset;
  std::vector<hsize_t> dims;
};

DatasetShape open_checked(hid_t file, const std::string& name, H5T_class_t cls, size_t bytes,
                          int rank, const std::string& path) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) fail(path, "missing dataset " + name);
  DatasetShape d;
  d.dset = Handle(ok(H5Dopen2(file, name.c_str(), H5P_DEFAULT), path, "opening " + name),
                  H5Dclose);
  Handle type(ok(H5Dget_type(d.dset.get()), path, "H5Dget_type"), H5Tclose);
  const std::string want = std::string(cls == H5T_FLOAT ? "float" : "int") + std::to_string(bytes * 8);
  if (H5Tget_class(type.get()) != cls || H5Tget_size(type.get()) != bytes ||
      (cls == H5T_INTEGER && H5Tget_sign(type.get()) != H5T_SGN_2))
    fail(path, name + " has dtype " + class_name(type.get()) + ", expected " + want);
  Handle space(ok(H5Dget_space(d.dset.get()), path, "H5Dget_space"), H5Sclose);
  const int r = H5Sget_simple_extent_ndims(space.get());
  if (r != rank)
    fail(path, name + " has rank " + std::to_string(r) + ", expected " + std::to_string(rank));
  d.dims.resize(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), d.dims.data(), nullptr);
  return d;
}

template <class T>
std::vector<T> read_all_1d(hid_t dset, hid_t mem_type, size_t n, const std::string& path,
                           const std::string& name) {
  std::vector<T> v(n);
  if (n > 0)
    ok_status(H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), path,
              "reading " + name);
  return v;
}

// Appends `count` elements (each of `inner` values) along dimension 0.
void append_rows(hid_t dset, hid_t mem_type, int rank, const hsize_t* inner_dims, hsize_t old_n,
                 hsize_t count, const void* data, const std::string& path, const std::string& name) {
  hsize_t dims[3] = {old_n + count, 0, 0}, start[3] = {old_n, 0, 0}, cnt[3] = {count, 0, 0};
  for (int d = 1; d < rank; ++d) dims[d] = cnt[d] = inner_dims[d - 1];
  ok_status(H5Dset_extent(dset, dims), path, "extending " + name);
  Handle fspace(ok(H5Dget_space(dset), path, "H5Dget_space"), H5Sclose);
  ok_status(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, cnt, nullptr), path,
            "selecting in " + name);
  Handle mspace = space_simple(rank, cnt, nullptr, path);
  ok_status(H5Dwrite(dset, mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, data), path,
            "writing " + name);
}

}  // namespace

// ===========================================================================
// FeatureWriter
struct FeatureWriter::Impl {
  std::string path, tmp;
  FeatureParams params;
  std::vector<std::string> labels;
  int rows = 0, frames = 0;
  Handle file;
  Handle group[3], x[3], y[3], tid[3], seg[3];
  int64_t n[3] = {0, 0, 0};
  // Running per-row statistics of the training split (see h5store.h).
  double stat_n = 0;
  std::vector<double> mean, m2;
  bool finished = false, broken = false;
  mutable std::mutex mu;

  void create_split(int s) {
    const std::string g = std::string("/") + split_name(kSplits[s]);
    Handle gcpl(ok(H5Pcreate(H5P_GROUP_CREATE), tmp, "H5Pcreate"), H5Pclose);
    ok_status(H5Pset_obj_track_times(gcpl.get(), false), tmp, "H5Pset_obj_track_times");
    group[s] = Handle(ok(H5Gcreate2(file.get(), g.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
                         tmp, "creating group " + g),
                      H5Gclose);
    auto make = [&](const char* name, hid_t type, int rank, const hsize_t* chunk) {
      hsize_t dims[3] = {0, hsize_t(rows), hsize_t(frames)};
      hsize_t maxdims[3] = {H5S_UNLIMITED, hsize_t(rows), hsize_t(frames)};
      Handle space = space_simple(rank, dims, maxdims, tmp);
      Handle dcpl(ok(H5Pcreate(H5P_DATASET_CREATE), tmp, "H5Pcreate"), H5Pclose);
      ok_status(H5Pset_chunk(dcpl.get(), rank, chunk), tmp, "H5Pset_chunk");
      // No modification times in object headers: the same contents give the
      // same bytes (reproducible fixtures and checksums).
      ok_status(H5Pset_obj_track_times(dcpl.get(), false), tmp, "H5Pset_obj_track_times");
      return Handle(ok(H5Dcreate2(group[s].get(), name, type, space.get(), H5P_DEFAULT, dcpl.get(),
                                  H5P_DEFAULT),
                       tmp, "creating " + g + "/" + name),
                    H5Dclose);
    };
    const hsize_t chunk_x[3] = {1, hsize_t(rows), hsize_t(frames)};
    const hsize_t chunk_1d[1] = {1024};
    x[s] = make("x", H5T_IEEE_F32LE, 3, chunk_x);
    y[s] = make("y", H5T_STD_I32LE, 1, chunk_1d);
    tid[s] = make("track_id", H5T_STD_I64LE, 1, chunk_1d);
    seg[s] = make("segment_start", H5T_STD_I64LE, 1, chunk_1d);
  }

  void close_all() {
    for (int s = 0; s < 3; ++s) {
      x[s].reset();
      y[s].reset();
      tid[s].reset();
      seg[s].reset();
      group[s].reset();
    }
    file.reset();
  }
};

FeatureWriter::FeatureWriter(std::string path, const FeatureParams& params,
                             std::vector<std::string> label_names, std::string source)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = std::move(path);
  m.tmp = m.path + ".tmp-" + std::to_string(::getpid());
  m.params = params;
  m.labels = std::move(label_names);
  m.rows = rows_of(params);
  m.frames = params.frames;
  if (m.rows <= 0 || m.frames <= 0)
    throw std::invalid_argument("FeatureWriter(" + m.path + "): rows (n_mels or n_mfcc) = " +
                                std::to_string(m.rows) + " and frames = " +
                                std::to_string(m.frames) + " must be positive");
  if (m.labels.empty())
    throw std::invalid_argument("FeatureWriter(" + m.path + "): label_names is empty");
  m.mean.assign(size_t(m.rows), 0.0);
  m.m2.assign(size_t(m.rows), 0.0);

  QuietHdf5 quiet;
  try {
    Handle fcpl(ok(H5Pcreate(H5P_FILE_CREATE), m.tmp, "H5Pcreate"), H5Pclose);
    ok_status(H5Pset_obj_track_times(fcpl.get(), false), m.tmp, "H5Pset_obj_track_times");
    const hid_t f = H5Fcreate(m.tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT);
    if (f < 0) {
      const std::string reason = hdf5_system_error();
      fail(m.tmp, "cannot create the temporary HDF5 file (" +
                      (reason.empty() ? std::string("is the folder writable?") : reason) + ")");
    }
    m.file = Handle(f, H5Fclose);
    for (int s = 0; s < 3; ++s) m.create_split(s);
    const hid_t root = m.file.get();
    for (const IntField& fld : kIntFields) {
      const int v = params.*fld.member;
      write_attr(root, fld.name, H5T_STD_I32LE, H5T_NATIVE_INT, 0, nullptr, &v, m.tmp);
    }
    for (const DoubleField& fld : kDoubleFields) {
      const double v = params.*fld.member;
      write_attr(root, fld.name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, nullptr, &v, m.tmp);
    }
    write_string_array_attr(root, "label_names", m.labels, m.tmp);
    write_string_attr(root, "source", source, m.tmp);
    write_string_attr(root, "timbre_version", timbre_version(), m.tmp);
    const int fv = kFeatureFormatVersion;
    write_attr(root, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, 0, nullptr, &fv, m.tmp);
  } catch (...) {
    m.close_all();
    std::remove(m.tmp.c_str());
    throw;
  }
}

FeatureWriter::~FeatureWriter() {
  if (!impl_ || impl_->finished) return;
  QuietHdf5 quiet;
  impl_->close_all();
  std::remove(impl_->tmp.c_str());  // an unfinished file never replaces `path`
}

int64_t FeatureWriter::size(Split split) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->n[int(split)];
}

const std::string& FeatureWriter::temp_path() const { return impl_->tmp; }

void FeatureWriter::append(Split split, int64_t count, const float* x, const int32_t* y,
                           const int64_t* track_id, const int64_t* segment_start) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  const std::string where = "FeatureWriter(" + m.path + ").append(" + split_name(split) + "): ";
  if (m.finished || m.broken) throw std::logic_error(where + "writer already finished or failed");
  if (count < 0) throw std::invalid_argument(where + "negative count");
  if (count == 0) return;
  if (!x || !y || !track_id || !segment_start)
    throw std::invalid_argument(where + "null data pointer");
  const size_t per = size_t(m.rows) * size_t(m.frames);
  // Validate the whole batch before writing any of it.
  for (int64_t i = 0; i < count; ++i) {
    if (y[i] < 0 || y[i] >= int32_t(m.labels.size()))
      throw std::invalid_argument(where + "sample " + std::to_string(i) + " has label " +
                                  std::to_string(y[i]) + " outside [0, " +
                                  std::to_string(m.labels.size()) + ")");
    if (segment_start[i] < 0)
      throw std::invalid_argument(where + "sample " + std::to_string(i) +
                                  " has negative segment_start");
  }
  for (size_t k = 0; k < size_t(count) * per; ++k)
    if (!std::isfinite(x[k]))
      throw std::invalid_argument(where + "sample " + std::to_string(k / per) +
                                  " holds a non-finite value");

  QuietHdf5 quiet;
  const int s = int(split);
  const hsize_t inner[2] = {hsize_t(m.rows), hsize_t(m.frames)};
  try {
    append_rows(m.x[s].get(), H5T_NATIVE_FLOAT, 3, inner, hsize_t(m.n[s]), hsize_t(count), x,
                m.tmp, std::string(split_name(split)) + "/x");
    append_rows(m.y[s].get(), H5T_NATIVE_INT32, 1, nullptr, hsize_t(m.n[s]), hsize_t(count), y,
                m.tmp, std::string(split_name(split)) + "/y");
    append_rows(m.tid[s].get(), H5T_NATIVE_INT64, 1, nullptr, hsize_t(m.n[s]), hsize_t(count),
                track_id, m.tmp, std::string(split_name(split)) + "/track_id");
    append_rows(m.seg[s].get(), H5T_NATIVE_INT64, 1, nullptr, hsize_t(m.n[s]), hsize_t(count),
                segment_start, m.tmp, std::string(split_name(split)) + "/segment_start");
  } catch (...) {
    m.broken = true;  // datasets may now differ in length: the file is abandoned
    throw;
  }
  m.n[s] += count;

  if (split == Split::train) {
    // Batch statistics per row (count, mean, M2 by two passes), merged with
    // Chan's update. Row r of sample i is x[i*per + r*F .. + F).
    const double nb = double(count) * m.frames;
    for (int r = 0; r < m.rows; ++r) {
      double sum = 0;
      for (int64_t i = 0; i < count; ++i) {
        const float* row = x + size_t(i) * per + size_t(r) * m.frames;
        for (int t = 0; t < m.frames; ++t) sum += row[t];
      }
      const double mb = sum / nb;
      double m2b = 0;
      for (int64_t i = 0; i < count; ++i) {
        const float* row = x + size_t(i) * per + size_t(r) * m.frames;
        for (int t = 0; t < m.frames; ++t) m2b += (row[t] - mb) * (row[t] - mb);
      }
      const double na = m.stat_n, n = na + nb, delta = mb - m.mean[r];
      m.mean[r] += delta * nb / n;
      m.m2[r] += m2b + delta * delta * na * nb / n;
    }
    m.stat_n += nb;
  }
}

void FeatureWriter::finish() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.finished) throw std::logic_error("FeatureWriter(" + m.path + ").finish(): called twice");
  if (m.broken) throw std::logic_error("FeatureWriter(" + m.path + ").finish(): an append failed");
  if (m.n[int(Split::train)] == 0) {
    m.broken = true;
    fail(m.path, "no training samples: the per-band statistics (band_mean, band_std) are "
                 "computed on the training split and would be undefined");
  }
  QuietHdf5 quiet;
  try {
    std::vector<float> mean(size_t(m.rows)), sd(size_t(m.rows));
    for (int r = 0; r < m.rows; ++r) {
      mean[r] = float(m.mean[r]);
      sd[r] = float(std::sqrt(m.m2[r] / m.stat_n));  // population std (ddof = 0)
    }
    const hsize_t nr = hsize_t(m.rows);
    write_attr(m.file.get(), "band_mean", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &nr, mean.data(),
               m.tmp);
    write_attr(m.file.get(), "band_std", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &nr, sd.data(),
               m.tmp);
    ok_status(H5Fflush(m.file.get(), H5F_SCOPE_GLOBAL), m.tmp, "H5Fflush");
    m.close_all();  // H5Fclose writes the last metadata

    // Make the bytes durable before the rename makes them visible, then the
    // rename itself durable by syncing the folder.
    const int fd = ::open(m.tmp.c_str(), O_RDONLY);
    if (fd < 0 || ::fsync(fd) != 0) {
      if (fd >= 0) ::close(fd);
      fail(m.tmp, std::string("fsync failed: ") + std::strerror(errno));
    }
    ::close(fd);
    if (std::rename(m.tmp.c_str(), m.path.c_str()) != 0)
      fail(m.path, "cannot rename " + m.tmp + " onto it: " + std::strerror(errno));
    m.finished = true;
    std::string dir = std::filesystem::path(m.path).parent_path().string();
    if (dir.empty()) dir = ".";
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  } catch (...) {
    m.broken = true;
    throw;
  }
}

// ===========================================================================
// FeatureStore
struct FeatureStore::Impl {
  std::string path;
  Handle file;
  FeatureParams params;
  int rows = 0, frames = 0;
  std::vector<std::string> labels;
  std::vector<float> mean, sd;
  std::string source, version;
  int format_version = 0;
  Handle x[3], y[3], tid[3], seg[3];
  int64_t n[3] = {0, 0, 0};
  mutable std::mutex mu;
};

FeatureStore::FeatureStore() : impl_(std::make_unique<Impl>()) {}
FeatureStore::FeatureStore(FeatureStore&&) noexcept = default;
FeatureStore& FeatureStore::operator=(FeatureStore&&) noexcept = default;
FeatureStore::~FeatureStore() {
  if (!impl_) return;
  QuietHdf5 quiet;
  for (int s = 0; s < 3; ++s) {
    impl_->x[s].reset();
    impl_->y[s].reset();
    impl_->tid[s].reset();
    impl_->seg[s].reset();
  }
  impl_->file.reset();
}

FeatureStore FeatureStore::open(const std::string& path) {
  FeatureStore store;
  Impl& m = *store.impl_;
  m.path = path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail(path, "feature store not found");
  QuietHdf5 quiet;
  if (H5Fis_hdf5(path.c_str()) <= 0) fail(path, "not an HDF5 file");
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) fail(path, "cannot open the HDF5 file");
  m.file = Handle(f, H5Fclose);

  for (const IntField& fld : kIntFields) {
    const long long v = read_int_attr(f, fld.name, path);
    if (v < INT32_MIN || v > INT32_MAX)
      fail(path, std::string("attribute '") + fld.name + "' = " + std::to_string(v) +
                     " does not fit an int");
    m.params.*fld.member = int(v);
  }
  for (const DoubleField& fld : kDoubleFields) m.params.*fld.member = read_double_attr(f, fld.name, path);
  m.format_version = int(read_int_attr(f, "format_version", path));
  if (m.format_version != kFeatureFormatVersion)
    fail(path, "format_version " + std::to_string(m.format_version) + " is not supported (this "
               "timbre reads version " + std::to_string(kFeatureFormatVersion) + ")");
  m.rows = rows_of(m.params);
  m.frames = m.params.frames;
  if (m.rows <= 0 || m.frames <= 0)
    fail(path, "attributes give " + std::to_string(m.rows) + " rows (n_mels/n_mfcc) and " +
                   std::to_string(m.frames) + " frames; both must be positive");
  m.labels = read_strings_attr(f, "label_names", path);
  if (m.labels.empty()) fail(path, "attribute 'label_names' is empty");
  m.mean = read_float_array_attr(f, "band_mean", size_t(m.rows), path);
  m.sd = read_float_array_attr(f, "band_std", size_t(m.rows), path);
  // Training divides by these: a NaN here would surface as a non-finite
  // loss blamed on the first training batch.
  for (size_t r = 0; r < m.mean.size(); ++r) {
    if (!std::isfinite(m.mean[r]))
      fail(path, "attribute 'band_mean' is not finite at band " + std::to_string(r) + " (" +
                     std::to_string(m.mean[r]) + ")");
    if (!std::isfinite(m.sd[r]) || !(m.sd[r] >= 0))  // 0: a constant band (the
      // normaliser adds batch norm's epsilon)
      fail(path, "attribute 'band_std' must be finite and >= 0, band " + std::to_string(r) +
                     " holds " + std::to_string(m.sd[r]));
  }
  m.source = read_string_attr(f, "source", path);
  m.version = read_string_attr(f, "timbre_version", path);

  for (int s = 0; s < 3; ++s) {
    const std::string g = std::string("/") + split_name(kSplits[s]);
    if (H5Lexists(f, g.c_str(), H5P_DEFAULT) <= 0) fail(path, "missing group " + g);
    {
      const hid_t grp = H5Gopen2(f, g.c_str(), H5P_DEFAULT);
      if (grp < 0) fail(path, g + " is not a group");
      H5Gclose(grp);
    }
    DatasetShape x = open_checked(f, g + "/x", H5T_FLOAT, 4, 3, path);
    const hsize_t n = x.dims[0];
    if (x.dims[1] != hsize_t(m.rows) || x.dims[2] != hsize_t(m.frames))
      fail(path, g + "/x has shape (" + std::to_string(n) + ", " + std::to_string(x.dims[1]) +
                     ", " + std::to_string(x.dims[2]) + "), expected (N, " +
                     std::to_string(m.rows) + ", " + std::to_string(m.frames) +
                     ") from the attributes (rows = n_mfcc if > 0 else n_mels, frames)");
    DatasetShape y = open_checked(f, g + "/y", H5T_INTEGER, 4, 1, path);
    DatasetShape t = open_checked(f, g + "/track_id", H5T_INTEGER, 8, 1, path);
    DatasetShape sg = open_checked(f, g + "/segment_start", H5T_INTEGER, 8, 1, path);
    for (const auto* d : {&y, &t, &sg})
      if (d->dims[0] != n) {
        const char* name = d == &y ? "y" : d == &t ? "track_id" : "segment_start";
        fail(path, g + "/" + name + " has length " + std::to_string(d->dims[0]) + ", but " + g +
                       "/x holds " + std::to_string(n) + " samples");
      }
    const std::vector<int32_t> labels =
        read_all_1d<int32_t>(y.dset.get(), H5T_NATIVE_INT32, size_t(n), path, g + "/y");
    for (size_t i = 0; i < labels.size(); ++i)
      if (labels[i] < 0 || labels[i] >= int32_t(m.labels.size()))
        fail(path, g + "/y[" + std::to_string(i) + "] = " + std::to_string(labels[i]) +
                       " is outside [0, " + std::to_string(m.labels.size()) +
                       ") (label_names has " + std::to_string(m.labels.size()) + " names)");
    m.n[s] = int64_t(n);
    m.x[s] = std::move(x.dset);
    m.y[s] = std::move(y.dset);
    m.tid[s] = std::move(t.dset);
    m.seg[s] = std::move(sg.dset);
  }
  return store;
}

const std::string& FeatureStore::path() const { return impl_->path; }
const FeatureParams& FeatureStore::params() const { return impl_->params; }
int FeatureStore::rows() const { return impl_->rows; }
int FeatureStore::frames() const { return impl_->frames; }
const std::vector<std::string>& FeatureStore::label_names() const { return impl_->labels; }
const std::vector<float>& FeatureStore::band_mean() const { return impl_->mean; }
const std::vector<float>& FeatureStore::band_std() const { return impl_->sd; }
const std::string& FeatureStore::source() const { return impl_->source; }
const std::string& FeatureStore::version() const { return impl_->version; }
int FeatureStore::format_version() const { return impl_->format_version; }
int64_t FeatureStore::size(Split split) const { return impl_->n[int(split)]; }

void FeatureStore::check_params(const FeatureParams& req) const {
  const FeatureParams& have = impl_->params;
  std::string diff;
  for (const IntField& f : kIntFields)
    if (have.*f.member != req.*f.member)
      diff += std::string(diff.empty() ? "" : "; ") + f.name + ": file " +
              std::to_string(have.*f.member) + ", requested " + std::to_string(req.*f.member);
  for (const DoubleField& f : kDoubleFields)
    if (have.*f.member != req.*f.member)
      diff += std::string(diff.empty() ? "" : "; ") + f.name + ": file " +
              fmt_double(have.*f.member) + ", requested " + fmt_double(req.*f.member);
  if (!diff.empty())
    fail(impl_->path, "feature parameters differ from the request (" + diff +
                          "); extract the features again with the requested parameters");
}

void FeatureStore::read_x(Split split, const int64_t* indices, size_t count, float* out) const {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  const int s = int(split);
  for (size_t k = 0; k < count; ++k)
    if (indices[k] < 0 || indices[k] >= m.n[s])
      throw std::out_of_range(m.path + ": read_x(" + split_name(split) + "): index " +
                              std::to_string(indices[k]) + " (position " + std::to_string(k) +
                              ") is outside [0, " + std::to_string(m.n[s]) + ")");
  if (count == 0) return;
  QuietHdf5 quiet;
  const size_t per = size_t(m.rows) * size_t(m.frames);
  Handle fspace(ok(H5Dget_space(m.x[s].get()), m.path, "H5Dget_space"), H5Sclose);
  // Runs of consecutive indices (sequential evaluation) are read in one call;
  // a shuffled batch is mostly runs of one sample = one chunk each.
  size_t k = 0;
  while (k < count) {
    size_t run = 1;
    while (k + run < count && indices[k + run] == indices[k] + int64_t(run)) ++run;
    const hsize_t start[3] = {hsize_t(indices[k]), 0, 0};
    const hsize_t cnt[3] = {hsize_t(run), hsize_t(m.rows), hsize_t(m.frames)};
    ok_status(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, cnt, nullptr),
              m.path, "selecting samples");
    Handle mspace = space_simple(3, cnt, nullptr, m.path);
    ok_status(H5Dread(m.x[s].get(), H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), H5P_DEFAULT,
                      out + k * per),
              m.path, std::string("reading ") + split_name(split) + "/x");
    k += run;
  }
}

std::vector<int32_t> FeatureStore::read_y(Split split) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  QuietHdf5 quiet;
  const int s = int(split);
  return read_all_1d<int32_t>(impl_->y[s].get(), H5T_NATIVE_INT32, size_t(impl_->n[s]),
                              impl_->path, std::string(split_name(split)) + "/y");
}

std::vector<int64_t> FeatureStore::read_track_id(Split split) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  QuietHdf5 quiet;
  const int s = int(split);
  return read_all_1d<int64_t>(impl_->tid[s].get(), H5T_NATIVE_INT64, size_t(impl_->n[s]),
                              impl_->path, std::string(split_name(split)) + "/track_id");
}

std::vector<int64_t> FeatureStore::read_segment_start(Split split) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  QuietHdf5 quiet;
  const int s = int(split);
  return read_all_1d<int64_t>(impl_->seg[s].get(), H5T_NATIVE_INT64, size_t(impl_->n[s]),
                              impl_->path, std::string(split_name(split)) + "/segment_start");
}

}  // namespace timbre::features
