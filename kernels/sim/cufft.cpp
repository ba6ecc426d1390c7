// cufft.cpp: simcuda's cuFFT subset (R2C, C2R, C2C in single precision and
// D2Z, Z2D, Z2Z in double, of rank 1 to 3, batched), computed on the CPU by
// FFTW (fftw3f and fftw3).
//
// Transforms are unnormalised, as in cuFFT and FFTW:
//   X[k] = sum_j x[j] exp(sign * 2*pi*i * j*k / n),  sign = -1 forward, +1 inverse
// (CUFFT_FORWARD/CUFFT_INVERSE equal FFTW_FORWARD/FFTW_BACKWARD), so an
// inverse after a forward transform multiplies by the number of points. R2C
// writes the n/2+1 non-redundant outputs of the last dimension; C2R reads
// them and, like cuFFT and FFTW, may overwrite its input, even out of place.
//
// Data layout (cuFFT's rules, which differ from FFTW's):
//   * Basic layout: when inembed OR onembed is NULL, cuFFT ignores istride,
//     idist, ostride and odist altogether (FFTW would still apply them).
//     Arrays are contiguous and batches follow each other. The real side of
//     an in-place R2C/C2R transform has its rows padded to 2*(n/2+1) floats
//     so that the complex result fits; out of place it is unpadded.
//   * Advanced layout (both embeds given): element (x, y, z) of batch b is
//       input[b*idist + ((x*inembed[1] + y)*inembed[2] + z)*istride]
//     (fewer terms for lower ranks) and likewise for the output; inembed[0]
//     and onembed[0] are not used, idist/odist take their place. Strides are
//     counted in elements of each array's type (float or float2; double or
//     double2).
// The double types follow the same rules: D2Z is R2C, Z2D is C2R and Z2Z is
// C2C with double and double2 in place of float and float2.
// Whether a transform is in place is only known at exec time (idata ==
// odata), so the FFTW plan is made at the first exec of each kind and cached
// in the cuFFT plan: per in-place or not, direction, and alignment. Planning
// uses FFTW_ESTIMATE, which neither reads nor writes the arrays, and the
// cached plan runs on the caller's arrays through FFTW's new-array execute
// functions. FFTW requires those arrays to share the planning arrays'
// alignment (fftwf_alignment_of) unless planned with FFTW_UNALIGNED, so
// arrays FFTW considers aligned share one plan, and any other arrays a
// second, FFTW_UNALIGNED one. If FFTW cannot plan an in-place layout, the
// input is copied to a scratch buffer and transformed out of place.
//
// FFTW's planner is not thread-safe: one mutex guards planning, plan
// destruction and the handle table; executing a made plan is thread-safe in
// FFTW and runs outside the lock. (Other FFTW users in the process do not
// take this mutex.) Streams: simcuda runs every stream's work in issue order,
// so a transform is complete when its exec call returns; the stream is only
// stored.
//
// Error codes where cuFFT's documentation leaves room, chosen here:
//   * an exec function that does not match the plan's type (cufftExecR2C on
//     a C2C plan), a NULL data pointer or a direction other than
//     CUFFT_FORWARD/CUFFT_INVERSE: CUFFT_INVALID_VALUE (the handle is valid;
//     the documented meaning of INVALID_VALUE is "idata, odata or direction
//     is not valid");
//   * plan creation: a type outside the six above -> CUFFT_INVALID_TYPE;
//     rank outside 1..3, n[i] < 1, batch < 1 or sizes whose element counts
//     overflow -> CUFFT_INVALID_SIZE; NULL plan or n, and in the advanced
//     layout a stride < 1, a dist < 0 or an embed smaller than the data it
//     holds (dimensions 1..rank-1) -> CUFFT_INVALID_VALUE;
//   * cufftDestroy(CUFFT_PLAN_NULL) succeeds and does nothing (the header
//     calls that value safe to destroy); other unknown handles ->
//     CUFFT_INVALID_PLAN.

#include <cufft.h>

#include "kernels/sim/internal.h"

#include <fftw3.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace {

// One way an exec call lays out its arrays, in FFTW's guru terms: per
// dimension the logical size and the input/output strides, and the batch.
// (fftw_iodim64 and fftwf_iodim64 are one type in fftw3.h.)
struct Layout {
  fftwf_iodim64 dims[3];
  fftwf_iodim64 batch;     // n = batch count, is = idist, os = odist
  int64_t in_elements = 0;  // input elements spanned (first to last + 1)
};

// The three kinds of transform, whatever the precision.
enum class Kind { r2c, c2r, c2c };
Kind kind_of(cufftType t) {
  return t == CUFFT_R2C || t == CUFFT_D2Z ? Kind::r2c
         : t == CUFFT_C2R || t == CUFFT_Z2D ? Kind::c2r
                                            : Kind::c2c;
}
bool is_double(cufftType t) { return t == CUFFT_D2Z || t == CUFFT_Z2D || t == CUFFT_Z2Z; }

// An FFTW plan of either precision (fftw_plan and fftwf_plan are distinct
// pointer types), owned.
struct FftwPlan {
  fftwf_plan f = nullptr;
  fftw_plan d = nullptr;
  explicit operator bool() const { return f != nullptr || d != nullptr; }
  void reset() {
    if (f) fftwf_destroy_plan(f);
    if (d) fftw_destroy_plan(d);
    f = nullptr, d = nullptr;
  }
};

struct Plan {
  cufftType type = CUFFT_C2C;
  int rank = 1;
  Layout layout[2];  // [in_place]
  cudaStream_t stream = nullptr;
  // FFTW plans made so far, by slot(in_place, inverse, unaligned); via_scratch
  // plans (in-place layout run out of place from a copy) by direction.
  FftwPlan fftw[8];
  FftwPlan via_scratch[2];

  ~Plan() {
    for (FftwPlan& p : fftw) p.reset();
    for (FftwPlan& p : via_scratch) p.reset();
  }
};

std::mutex g_mutex;  // FFTW planner, plan destruction, the handle table
std::map<cufftHandle, std::unique_ptr<Plan>> g_plans;
cufftHandle g_next_handle = 1;

Plan* find_plan(cufftHandle h) {
  auto it = g_plans.find(h);
  return it == g_plans.end() ? nullptr : it->second.get();
}

bool mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Computes the layout of one placement; false if a count overflows int64.
bool make_layout(int rank, const int64_t* n, cufftType type, int64_t batch, bool advanced,
                 const int* inembed, int istride, int idist, const int* onembed, int ostride,
                 int odist, bool in_place, Layout* L) {
  const int last = rank - 1;
  const int64_t half = n[last] / 2 + 1;  // complex points kept along the last dimension
  // Logical extents of the input and output arrays.
  int64_t in_len[3], out_len[3];
  for (int d = 0; d < rank; ++d) in_len[d] = out_len[d] = n[d];
  if (kind_of(type) == Kind::r2c) out_len[last] = half;
  if (kind_of(type) == Kind::c2r) in_len[last] = half;

  int64_t iemb[3], oemb[3], is, os, id, od;
  if (advanced) {
    for (int d = 0; d < rank; ++d) iemb[d] = inembed[d], oemb[d] = onembed[d];
    is = istride, os = ostride, id = idist, od = odist;
  } else {
    // Contiguous; in place, the real rows are padded to 2*(n/2+1) floats.
    for (int d = 0; d < rank; ++d) iemb[d] = in_len[d], oemb[d] = out_len[d];
    if (in_place && kind_of(type) == Kind::r2c) iemb[last] = 2 * half;
    if (in_place && kind_of(type) == Kind::c2r) oemb[last] = 2 * half;
    is = os = 1;
    id = od = 1;
    for (int d = 0; d < rank; ++d)
      if (!mul(id, iemb[d], &id) || !mul(od, oemb[d], &od)) return false;
  }
  // Row-major strides: dimension d steps over the embedded extents after it.
  for (int d = last; d >= 0; --d) {
    L->dims[d].n = n[d];
    L->dims[d].is = is;
    L->dims[d].os = os;
    if (d > 0 && (!mul(is, iemb[d], &is) || !mul(os, oemb[d], &os))) return false;
  }
  L->batch.n = batch;
  L->batch.is = id;
  L->batch.os = od;
  // Span of the input: the offset of its last element, plus one.
  int64_t span = 0, t = 0;
  if (!mul(batch - 1, id, &span)) return false;
  for (int d = 0; d < rank; ++d) {
    if (!mul(in_len[d] - 1, L->dims[d].is, &t) || __builtin_add_overflow(span, t, &span))
      return false;
  }
  L->in_elements = span + 1;
  return true;
}

FftwPlan plan_fftw(const Plan& p, const Layout& L, void* in, void* out, int sign,
                   unsigned flags) {
  FftwPlan r;
  const auto* dims = reinterpret_cast<const fftw_iodim64*>(L.dims);
  const auto* batch = reinterpret_cast<const fftw_iodim64*>(&L.batch);
  if (is_double(p.type)) {
    switch (kind_of(p.type)) {
      case Kind::r2c:
        r.d = fftw_plan_guru64_dft_r2c(p.rank, dims, 1, batch, static_cast<double*>(in),
                                       static_cast<fftw_complex*>(out), flags);
        break;
      case Kind::c2r:
        r.d = fftw_plan_guru64_dft_c2r(p.rank, dims, 1, batch, static_cast<fftw_complex*>(in),
                                       static_cast<double*>(out), flags);
        break;
      case Kind::c2c:
        r.d = fftw_plan_guru64_dft(p.rank, dims, 1, batch, static_cast<fftw_complex*>(in),
                                   static_cast<fftw_complex*>(out), sign, flags);
        break;
    }
    return r;
  }
  switch (kind_of(p.type)) {
    case Kind::r2c:
      r.f = fftwf_plan_guru64_dft_r2c(p.rank, L.dims, 1, &L.batch, static_cast<float*>(in),
                                      static_cast<fftwf_complex*>(out), flags);
      break;
    case Kind::c2r:
      r.f = fftwf_plan_guru64_dft_c2r(p.rank, L.dims, 1, &L.batch,
                                      static_cast<fftwf_complex*>(in), static_cast<float*>(out),
                                      flags);
      break;
    case Kind::c2c:
      r.f = fftwf_plan_guru64_dft(p.rank, L.dims, 1, &L.batch, static_cast<fftwf_complex*>(in),
                                  static_cast<fftwf_complex*>(out), sign, flags);
      break;
  }
  return r;
}

void run_fftw(cufftType type, const FftwPlan& f, void* in, void* out) {
  if (is_double(type)) {
    switch (kind_of(type)) {
      case Kind::r2c:
        fftw_execute_dft_r2c(f.d, static_cast<double*>(in), static_cast<fftw_complex*>(out));
        break;
      case Kind::c2r:
        fftw_execute_dft_c2r(f.d, static_cast<fftw_complex*>(in), static_cast<double*>(out));
        break;
      case Kind::c2c:
        fftw_execute_dft(f.d, static_cast<fftw_complex*>(in), static_cast<fftw_complex*>(out));
        break;
    }
    return;
  }
  switch (kind_of(type)) {
    case Kind::r2c:
      fftwf_execute_dft_r2c(f.f, static_cast<float*>(in), static_cast<fftwf_complex*>(out));
      break;
    case Kind::c2r:
      fftwf_execute_dft_c2r(f.f, static_cast<fftwf_complex*>(in), static_cast<float*>(out));
      break;
    case Kind::c2c:
      fftwf_execute_dft(f.f, static_cast<fftwf_complex*>(in), static_cast<fftwf_complex*>(out));
      break;
  }
}

// Bytes of one input element.
size_t in_element_bytes(cufftType type) {
  const size_t real = is_double(type) ? sizeof(double) : sizeof(float);
  return kind_of(type) == Kind::r2c ? real : 2 * real;
}

// FFTW's alignment test (the same SIMD alignment in both precisions).
bool unaligned_pair(cufftType type, void* in, void* out) {
  if (is_double(type))
    return fftw_alignment_of(static_cast<double*>(in)) != 0 ||
           fftw_alignment_of(static_cast<double*>(out)) != 0;
  return fftwf_alignment_of(static_cast<float*>(in)) != 0 ||
         fftwf_alignment_of(static_cast<float*>(out)) != 0;
}

cufftResult exec(cufftHandle handle, cufftType type, void* in, void* out, int sign) {
  std::unique_lock<std::mutex> lock(g_mutex);
  Plan* p = find_plan(handle);
  if (p == nullptr) return CUFFT_INVALID_PLAN;
  if (p->type != type || in == nullptr || out == nullptr) return CUFFT_INVALID_VALUE;
  if (sign != CUFFT_FORWARD && sign != CUFFT_INVERSE) return CUFFT_INVALID_VALUE;
  if (simcuda::detail::capturing(p->stream)) {
    simcuda::detail::mark_capture_broken(p->stream, "a cuFFT transform (not captured by simcuda)");
    return CUFFT_NOT_SUPPORTED;
  }
  simcuda::detail::before_host_work(p->stream);

  const bool in_place = in == out;
  const bool inverse = sign == CUFFT_INVERSE;
  const Layout& L = p->layout[in_place];
  const bool unaligned = unaligned_pair(type, in, out);
  FftwPlan& cached = p->fftw[in_place * 4 + inverse * 2 + unaligned];
  if (!cached)
    cached = plan_fftw(*p, L, in, out, sign, FFTW_ESTIMATE | (unaligned ? FFTW_UNALIGNED : 0u));
  if (cached) {
    const FftwPlan f = cached;
    lock.unlock();
    run_fftw(type, f, in, out);
    return CUFFT_SUCCESS;
  }
  if (!in_place) return CUFFT_EXEC_FAILED;  // a layout FFTW rejects (e.g. outputs that overlap)

  // FFTW cannot do this layout in place: transform a copy of the input.
  std::vector<unsigned char> scratch;
  try {
    scratch.resize(size_t(L.in_elements) * in_element_bytes(type));
  } catch (const std::bad_alloc&) {
    return CUFFT_ALLOC_FAILED;
  }
  FftwPlan& cached_copy = p->via_scratch[inverse];
  if (!cached_copy)
    cached_copy = plan_fftw(*p, L, scratch.data(), out, sign, FFTW_ESTIMATE | FFTW_UNALIGNED);
  const FftwPlan g = cached_copy;
  if (!g) return CUFFT_EXEC_FAILED;
  lock.unlock();
  std::memcpy(scratch.data(), in, scratch.size());
  run_fftw(type, g, scratch.data(), out);
  return CUFFT_SUCCESS;
}

}  // namespace

extern "C" {

cufftResult cufftPlanMany(cufftHandle* plan, int rank, int* n, int* inembed, int istride,
                          int idist, int* onembed, int ostride, int odist, cufftType type,
                          int batch) {
  if (plan == nullptr) return CUFFT_INVALID_VALUE;
  if (type != CUFFT_R2C && type != CUFFT_C2R && type != CUFFT_C2C && type != CUFFT_D2Z &&
      type != CUFFT_Z2D && type != CUFFT_Z2Z)
    return CUFFT_INVALID_TYPE;
  if (rank < 1 || rank > 3) return CUFFT_INVALID_SIZE;
  if (n == nullptr) return CUFFT_INVALID_VALUE;
  if (batch < 1) return CUFFT_INVALID_SIZE;
  int64_t n64[3];
  for (int d = 0; d < rank; ++d) {
    if (n[d] < 1) return CUFFT_INVALID_SIZE;
    n64[d] = n[d];
  }

  // cuFFT: a NULL embed means the basic layout; strides and dists are ignored.
  const bool advanced = inembed != nullptr && onembed != nullptr;
  if (advanced) {
    if (istride < 1 || ostride < 1 || idist < 0 || odist < 0) return CUFFT_INVALID_VALUE;
    for (int d = 1; d < rank; ++d) {  // embed[0] is not used
      const bool last = d == rank - 1;
      const int64_t in_len = last && kind_of(type) == Kind::c2r ? n64[d] / 2 + 1 : n64[d];
      const int64_t out_len = last && kind_of(type) == Kind::r2c ? n64[d] / 2 + 1 : n64[d];
      if (inembed[d] < in_len || onembed[d] < out_len) return CUFFT_INVALID_VALUE;
    }
  }

  auto p = std::unique_ptr<Plan>(new (std::nothrow) Plan);
  if (!p) return CUFFT_ALLOC_FAILED;
  p->type = type;
  p->rank = rank;
  for (int in_place = 0; in_place < 2; ++in_place)
    if (!make_layout(rank, n64, type, batch, advanced, inembed, istride, idist, onembed, ostride,
                     odist, in_place, &p->layout[in_place]))
      return CUFFT_INVALID_SIZE;

  std::lock_guard<std::mutex> lock(g_mutex);
  const cufftHandle h = g_next_handle++;
  g_plans[h] = std::move(p);
  *plan = h;
  return CUFFT_SUCCESS;
}

// cufftPlan1d(nx, type, batch) is the basic-layout cufftPlanMany of rank 1.
cufftResult cufftPlan1d(cufftHandle* plan, int nx, cufftType type, int batch) {
  return cufftPlanMany(plan, 1, &nx, nullptr, 1, 0, nullptr, 1, 0, type, batch);
}

cufftResult cufftExecR2C(cufftHandle plan, cufftReal* idata, cufftComplex* odata) {
  return exec(plan, CUFFT_R2C, idata, odata, CUFFT_FORWARD);
}

cufftResult cufftExecC2R(cufftHandle plan, cufftComplex* idata, cufftReal* odata) {
  return exec(plan, CUFFT_C2R, idata, odata, CUFFT_INVERSE);
}

cufftResult cufftExecC2C(cufftHandle plan, cufftComplex* idata, cufftComplex* odata,
                         int direction) {
  return exec(plan, CUFFT_C2C, idata, odata, direction);
}

cufftResult cufftExecD2Z(cufftHandle plan, cufftDoubleReal* idata, cufftDoubleComplex* odata) {
  return exec(plan, CUFFT_D2Z, idata, odata, CUFFT_FORWARD);
}

cufftResult cufftExecZ2D(cufftHandle plan, cufftDoubleComplex* idata, cufftDoubleReal* odata) {
  return exec(plan, CUFFT_Z2D, idata, odata, CUFFT_INVERSE);
}

cufftResult cufftExecZ2Z(cufftHandle plan, cufftDoubleComplex* idata, cufftDoubleComplex* odata,
                         int direction) {
  return exec(plan, CUFFT_Z2Z, idata, odata, direction);
}

cufftResult cufftSetStream(cufftHandle plan, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Plan* p = find_plan(plan);
  if (p == nullptr) return CUFFT_INVALID_PLAN;
  p->stream = stream;
  return CUFFT_SUCCESS;
}

cufftResult cufftDestroy(cufftHandle plan) {
  if (plan == CUFFT_PLAN_NULL) return CUFFT_SUCCESS;
  std::lock_guard<std::mutex> lock(g_mutex);  // fftwf_destroy_plan is not thread-safe either
  return g_plans.erase(plan) == 1 ? CUFFT_SUCCESS : CUFFT_INVALID_PLAN;
}

}  // extern "C"
