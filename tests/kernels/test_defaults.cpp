// test_defaults.cpp: the table of backend defaults (kernels/defaults.h).
// The row in force follows TIMBRE_DEFAULTS (scripts/test.sh runs the whole
// suite once with each row, and this test fails if the variable did not
// reach the process), every choice it makes is visible through the helpers
// that read it, and `timbre info`'s description names every entry.
#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/defaults.h"
#include "kernels/grid.h"

namespace {

namespace k = timbre::kernels;

// Restores the row in force at the start of a test.
struct RestoreDefaults {
  k::BackendDefaults saved = k::defaults();
  ~RestoreDefaults() { k::use_defaults(saved); }
};

TEST(BackendDefaults, RowInForceFollowsTheEnvironment) {
  const char* env = std::getenv("TIMBRE_DEFAULTS");
  const std::string want = env && *env ? env : (TIMBRE_BACKEND_SIM ? "sim" : "gpu");
  EXPECT_EQ(std::string(k::defaults().name), want);
  if (!std::getenv("TIMBRE_MAX_GRID_THREADS")) {
    EXPECT_EQ(k::max_grid_threads(), k::defaults_named(want).grid_threads);
  }
  std::printf("%s", k::describe_defaults().c_str());
}

TEST(BackendDefaults, RowsDifferWhereTheBackendsDo) {
  const auto& g = k::gpu_defaults();
  const auto& s = k::sim_defaults();
  EXPECT_STREQ(g.name, "gpu");
  EXPECT_STREQ(s.name, "sim");
  EXPECT_EQ(g.grid_threads, 1LL << 19);
  EXPECT_EQ(g.row_columns, 1);  // coalesced: a warp on 32 consecutive columns
  EXPECT_EQ(g.stft, k::StftDefault::cufft_f64);
  EXPECT_EQ(s.row_columns, 0);  // the whole row
  EXPECT_EQ(s.stft, k::StftDefault::kernel_f64);
  EXPECT_EQ(&k::defaults_named("gpu"), &g);
  EXPECT_EQ(&k::defaults_named("sim"), &s);
  try {
    k::defaults_named("tpu");
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "TIMBRE_DEFAULTS must be 'gpu' or 'sim', not 'tpu'");
  }
}

TEST(BackendDefaults, LaunchHelpersReadTheRowInForce) {
  if (std::getenv("TIMBRE_MAX_GRID_THREADS") || std::getenv("TIMBRE_COLUMNS_PER_THREAD"))
    GTEST_SKIP() << "single entries overridden by the environment";
  RestoreDefaults restore;
  k::use_defaults(k::gpu_defaults());
  EXPECT_EQ(k::max_grid_threads(), 1LL << 19);
  EXPECT_EQ(k::columns_per_thread(100), 1);
  EXPECT_EQ(k::row_launch(4, 7, 100, 128).span, 1);
  EXPECT_EQ(k::row_launch(4, 7, 100, 128).tile.x, 32u);  // a warp along the row
  k::use_defaults(k::sim_defaults());
  EXPECT_EQ(k::max_grid_threads(), 1LL << 31);
  EXPECT_EQ(k::columns_per_thread(100), 100);
  EXPECT_EQ(k::row_launch(4, 7, 100, 128).tile.x, 1u);  // a thread per row
  k::set_columns_per_thread(3);  // a test's override wins over the row
  EXPECT_EQ(k::columns_per_thread(100), 3);
  k::set_columns_per_thread(0);
  EXPECT_EQ(k::columns_per_thread(100), 100);
}

TEST(BackendDefaults, DescriptionNamesEveryEntryWithBothValues) {
  const std::string d = k::describe_defaults();
  for (const char* s : {"grid_threads = ", "row_columns = ", "stft = ", "gpu: 524288",
                        "sim: 2147483648", "gpu: cufft_f64, sim: kernel_f64", "gpu: 1, sim: whole row"})
    EXPECT_NE(d.find(s), std::string::npos) << s << " not in:\n" << d;
}

}  // namespace
