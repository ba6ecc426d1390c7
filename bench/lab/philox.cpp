// philox: the uniform and normal fills and dropout forward and backward
// (p 0.1, the crnn's), per sample at the crnn's dropout sites (blocks 1-4:
// 64x64x64, 128x16x32, 128x4x16, 128x1x16); the fills also at the size of
// the rescnn's weights (617,272, initialisation: not scaled by the batch).
#include "bench/lab/lab.h"
#include "kernels/philox.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

struct Site {
  const char* shape;
  long long per_sample;
  bool per_batch;  // false: the size does not grow with the batch
};
const Site kDropoutSites[] = {
    {"crnn.block1.dropout", 64LL * 64 * 64, true},
    {"crnn.block2.dropout", 128LL * 16 * 32, true},
    {"crnn.block3.dropout", 128LL * 4 * 16, true},
    {"crnn.block4.dropout", 128LL * 1 * 16, true},
};
const Site kFillSites[] = {
    {"crnn.block1.64x64x64", 64LL * 64 * 64, true},
    {"rescnn.init.params", 617272, false},
};
long long count(const Site& s, int b) { return s.per_sample * (s.per_batch ? b : 1); }

constexpr uint64_t kSeed = 0x5eed1234abcdULL, kOffset = 1000;
constexpr double kP = 0.1;

enum class Op { fill_uniform, fill_normal, dropout_forward, dropout_backward };
const char* op_name(Op op) {
  switch (op) {
    case Op::fill_uniform: return "fill_uniform";
    case Op::fill_normal: return "fill_normal";
    case Op::dropout_forward: return "dropout_forward";
    default: return "dropout_backward";
  }
}

// x (dropout's input or dy) and the output of n values.
struct PhiloxRun : Run {
  Op op;
  long long n;
  std::vector<float> x;
  DeviceBuffer<float> d_x, d_y;
  PhiloxRun(Op o, long long count)
      : op(o), n(count), x(random_values<float>(size_t(n), 51)), d_x(x), d_y(size_t(n)) {}
  void run(int block) override {
    switch (op) {
      case Op::fill_uniform:
        k::fill_uniform<float>(d_y.get(), n, -1.f, 1.f, kSeed, kOffset, nullptr, block);
        break;
      case Op::fill_normal:
        k::fill_normal<float>(d_y.get(), n, 0.f, 1.f, kSeed, kOffset, nullptr, block);
        break;
      case Op::dropout_forward:
        k::dropout_forward<float>(d_x.get(), d_y.get(), n, kP, kSeed, kOffset, nullptr, block);
        break;
      case Op::dropout_backward:
        k::dropout_backward<float>(d_x.get(), d_y.get(), n, kP, kSeed, kOffset, false, nullptr,
                                   block);
        break;
    }
  }
  std::string check() override {
    std::vector<float> ref(x.size());
    switch (op) {
      case Op::fill_uniform:
        k::fill_uniform_cpu<float>(ref.data(), n, -1.f, 1.f, kSeed, kOffset);
        return compare(d_y.to_host(), widen(ref), 0);  // integer arithmetic, exact conversions
      case Op::fill_normal:
        k::fill_normal_cpu<float>(ref.data(), n, 0.f, 1.f, kSeed, kOffset);
        // The same bits under simcuda; on a GPU logf and sincosf differ from
        // glibc's by <= 2 ulp (the test's 4e-6 absolute, |z| <= 5.77).
        return compare(d_y.to_host(), widen(ref), 1e-6);
      case Op::dropout_forward:
        k::dropout_forward_cpu<float>(x.data(), ref.data(), n, kP, kSeed, kOffset);
        return compare(d_y.to_host(), widen(ref), 0);  // one product, as the reference
      case Op::dropout_backward:
      default:
        k::dropout_backward_cpu<float>(x.data(), ref.data(), n, kP, kSeed, kOffset, false);
        return compare(d_y.to_host(), widen(ref), 0);  // one product, as the reference
    }
  }
};

void add_case(Op op, const Site& s) {
  add({"philox", op_name(op), s.shape,
       [op, s](int b) {
         const long long n = count(s, b);
         switch (op) {
           case Op::fill_uniform: return k::fill_uniform_cost(n);
           case Op::fill_normal: return k::fill_normal_cost(n);
           case Op::dropout_forward: return k::dropout_forward_cost(n);
           default: return k::dropout_backward_cost(n, false);
         }
       },
       block_sweep(), [op, s](int b) { return std::make_unique<PhiloxRun>(op, count(s, b)); }});
}

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(philox) {
  using namespace timbre::lab;
  for (const Site& s : kFillSites)
    for (Op op : {Op::fill_uniform, Op::fill_normal}) add_case(op, s);
  for (const Site& s : kDropoutSites)
    for (Op op : {Op::dropout_forward, Op::dropout_backward}) add_case(op, s);
}
