// optim: one Adam step (both forms: Keras's, the paper's default, and
// PyTorch's) and one SGD step (plain, and momentum 0.9 with Nesterov) over
// each model's parameters as one flat array (rescnn 617,272, crnn 386,376,
// parallel 713,656). The step does not depend on the batch: every batch
// times the same launch.
#include "bench/lab/lab.h"
#include "kernels/optim.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

struct Site {
  const char* shape;
  long long params;
};
const Site kSites[] = {
    {"rescnn.params", 617272},
    {"crnn.params", 386376},
    {"parallel.params", 713656},
};
// A step past the first, so that the bias corrections and the momentum
// buffer's update are the general ones.
constexpr long long kStep = 10;

// param, grad and the optimiser state (m, v for Adam; the momentum buffer
// for SGD), n each; v positive.
struct OptimRun : Run {
  long long n;
  bool adam;
  k::AdamConfig ac;
  k::SgdConfig sc;
  std::vector<float> p, g, m, v;
  DeviceBuffer<float> d_p, d_g, d_m, d_v;
  OptimRun(long long params, bool is_adam, k::AdamConfig a, k::SgdConfig s)
      : n(params), adam(is_adam), ac(a), sc(s), p(random_values<float>(size_t(n), 41)),
        g(random_values<float>(size_t(n), 42, -1e-2, 1e-2)),
        m(random_values<float>(size_t(n), 43, -1e-2, 1e-2)),
        v(random_values<float>(size_t(n), 44, 1e-6, 1e-4)), d_p(p), d_g(g), d_m(m), d_v(v) {}
  // Every run steps the device's state in place; the reference replays as
  // many steps on a host copy (the same step number each time).
  int runs = 0, ref_runs = 0;
  std::vector<float> rp, rm, rv;
  void run(int block) override {
    ++runs;
    if (adam)
      k::adam_step<float>(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, ac, kStep, nullptr,
                          block);
    else
      k::sgd_step<float>(d_p.get(), d_g.get(), sc.momentum != 0 ? d_m.get() : nullptr, n, sc,
                         kStep, nullptr, block);
  }
  std::string check() override {
    if (ref_runs == 0) rp = p, rm = m, rv = v;
    for (; ref_runs < runs; ++ref_runs)
      if (adam)
        k::adam_step_cpu<float>(rp.data(), g.data(), rm.data(), rv.data(), n, ac, kStep);
      else
        k::sgd_step_cpu<float>(rp.data(), g.data(), sc.momentum != 0 ? rm.data() : nullptr, n,
                               sc, kStep);
    // The reference runs the kernel's expressions on the same host scalars:
    // the same bits under simcuda; on a GPU fma contraction may move the
    // last bit of an update, relative to max|param| (~1) far below 1e-6.
    std::string e = compare(d_p.to_host(), widen(rp), 1e-6);
    if (e.empty() && (adam || sc.momentum != 0)) e = compare(d_m.to_host(), widen(rm), 1e-6);
    if (e.empty() && adam) e = compare(d_v.to_host(), widen(rv), 1e-6);
    return e;
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(optim) {
  using namespace timbre::lab;
  for (const Site& s : kSites) {
    const long long n = s.params;
    for (const k::AdamConfig& a : {k::keras_adam(), k::pytorch_adam()})
      add({"optim", std::string("adam_step_") + k::adam_form_name(a.form), s.shape,
           [n, a](int) { return k::adam_step_cost(a.form, n); }, block_sweep(),
           [n, a](int) { return std::make_unique<OptimRun>(n, true, a, k::SgdConfig{}); }});
    const k::SgdConfig plain{0.01, 0, 0, false}, nesterov{0.01, 0.9, 0, true};
    for (const auto& [name, c] : {std::pair{"sgd_step", plain},
                                  std::pair{"sgd_step_nesterov", nesterov}})
      add({"optim", name, s.shape, [n, c = c](int) { return k::sgd_step_cost(c, n); },
           block_sweep(),
           [n, c = c](int) { return std::make_unique<OptimRun>(n, false, k::AdamConfig{}, c); }});
  }
}
