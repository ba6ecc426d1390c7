// activation: ReLU / ELU forward and backward and the residual add, at the
// sizes of the models' activations (per sample: rescnn block 1 16x128x128,
// crnn block 1 after pooling 64x64x64, the parallel model's block 3
// 64x32x32).
#include "bench/lab/lab.h"
#include "kernels/activation.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

struct Site {
  const char* shape;
  long long per_sample;
  k::Activation act;
};
const Site kSites[] = {
    {"rescnn.block1.relu", 16LL * 128 * 128, k::Activation::relu},
    {"crnn.block1.relu", 64LL * 64 * 64, k::Activation::relu},
    {"parallel.block3.relu", 64LL * 32 * 32, k::Activation::relu},
    {"elu.64x64x64", 64LL * 64 * 64, k::Activation::elu},
};

// x, y, dy, dx of n values; forward or backward.
struct ActivationRun : Run {
  Site site;
  bool backward;
  long long n;
  std::vector<float> x, dy;
  DeviceBuffer<float> dx_in, y, dy_in, dx;
  ActivationRun(const Site& s, bool bw, int batch)
      : site(s), backward(bw), n(s.per_sample * batch), x(random_values<float>(n, 11)),
        dy(random_values<float>(n, 12)), dx_in(x), y(size_t(n)), dy_in(dy), dx(size_t(n)) {
    if (backward) k::activation_forward<float>(site.act, dx_in.get(), y.get(), n, 1.f, nullptr);
  }
  void run(int block) override {
    if (backward)
      k::activation_backward<float>(site.act, dx_in.get(), y.get(), dy_in.get(), dx.get(), n,
                                    1.f, false, nullptr, block);
    else
      k::activation_forward<float>(site.act, dx_in.get(), y.get(), n, 1.f, nullptr, block);
  }
  std::string check() override {
    std::vector<float> ref_y(n);
    k::activation_forward_cpu<float>(site.act, x.data(), ref_y.data(), n, 1.f);
    if (!backward) return compare(y.to_host(), widen(ref_y), 1e-6);
    std::vector<float> ref_dx(n);
    k::activation_backward_cpu<float>(site.act, x.data(), ref_y.data(), dy.data(), ref_dx.data(),
                                      n, 1.f, false);
    return compare(dx.to_host(), widen(ref_dx), 1e-6);
  }
};

struct AddRun : Run {
  long long n;
  std::vector<float> a, b;
  DeviceBuffer<float> da, db, out;
  AddRun(long long per_sample, int batch)
      : n(per_sample * batch), a(random_values<float>(n, 13)), b(random_values<float>(n, 14)),
        da(a), db(b), out(size_t(n)) {}
  void run(int block) override {
    k::add<float>(da.get(), db.get(), out.get(), n, 1.f, 1.f, nullptr, block);
  }
  std::string check() override {
    std::vector<float> ref(n);
    k::add_cpu<float>(a.data(), b.data(), ref.data(), n, 1.f, 1.f);
    return compare(out.to_host(), widen(ref), 0);  // one rounding, as the reference
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(activation) {
  using namespace timbre::lab;
  for (const Site& s : kSites) {
    const std::string act = k::activation_name(s.act);
    for (bool bw : {false, true})
      add({"activation", act + (bw ? "_backward" : "_forward"), s.shape,
           [s, bw](int b) {
             return bw ? k::activation_backward_cost(s.act, s.per_sample * b, false)
                       : k::activation_forward_cost(s.act, s.per_sample * b);
           },
           block_sweep(), [s, bw](int b) { return std::make_unique<ActivationRun>(s, bw, b); }});
  }
  const long long residual = 16LL * 128 * 128;  // rescnn block 1: relu(y + shortcut)
  add({"activation", "add", "rescnn.block1.residual",
       [residual](int b) { return k::add_cost(residual * b); }, block_sweep(),
       [residual](int b) { return std::make_unique<AddRun>(residual, b); }});
}
