// Tensor, Shape and the caching allocator.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/tensor.h"

namespace {

using timbre::DType;
using timbre::Shape;
using timbre::ShapeError;
using timbre::Tensor;

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ShapeError& e) {
    return e.what();
  }
  return "(no ShapeError)";
}

TEST(Shape, BasicsAndErrors) {
  const Shape s{3, 5, 7};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 105);
  EXPECT_EQ(s.dim(-1), 7);
  EXPECT_EQ(s.str(), "(3, 5, 7)");
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
  EXPECT_THROW(Shape({1, 2, 3, 4, 5, 6}), ShapeError);
  EXPECT_THROW(Shape({2, -1}), ShapeError);
  EXPECT_NE(message_of([&] { s.dim(3); }).find("(3, 5, 7)"), std::string::npos);
}

TEST(Tensor, HostRoundTripAllDtypes) {
  const std::vector<float> f{1.5f, -2.f, 3.25f, 4.f, 5.f, 6.f};
  EXPECT_EQ(Tensor::from_host(Shape{2, 3}, f).to_host<float>(), f);
  const std::vector<double> d{1e-300, -2.5, 3.0};
  EXPECT_EQ(Tensor::from_host(Shape{3}, d).to_host<double>(), d);
  const std::vector<int32_t> i{7, -8, 9, 2147483647};
  EXPECT_EQ(Tensor::from_host(Shape{2, 2}, i).to_host<int32_t>(), i);
  EXPECT_THROW(Tensor::from_host(Shape{2, 2}, f), ShapeError);  // 6 values for 4
  EXPECT_THROW(Tensor::from_host(Shape{6}, f).to_host<int32_t>(), ShapeError);  // wrong dtype
}

TEST(Tensor, ZerosFullClone) {
  EXPECT_EQ(Tensor::zeros(Shape{3, 3}).to_host<float>(), std::vector<float>(9, 0.f));
  EXPECT_EQ(Tensor::full(Shape{5}, 2.5, DType::f64).to_host<double>(), std::vector<double>(5, 2.5));
  EXPECT_EQ(Tensor::full(Shape{4}, -3, DType::i32).to_host<int32_t>(), std::vector<int32_t>(4, -3));
  Tensor a = Tensor::from_host(Shape{4}, std::vector<float>{1, 2, 3, 4});
  Tensor b = a.clone();
  EXPECT_FALSE(b.shares_storage_with(a));
  a.fill(0);
  EXPECT_EQ(b.to_host<float>(), (std::vector<float>{1, 2, 3, 4}));
}

TEST(Tensor, ViewsShareStorage) {
  const std::vector<float> v{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  Tensor t = Tensor::from_host(Shape{2, 3, 2}, v);
  Tensor r = t.reshape({3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 4}));
  EXPECT_TRUE(r.shares_storage_with(t));
  EXPECT_EQ(r.to_host<float>(), v);
  EXPECT_EQ(t.flatten().shape(), (Shape{2, 6}));
  EXPECT_EQ(t.flatten(0).shape(), (Shape{12}));
  Tensor u = t.unsqueeze(1);
  EXPECT_EQ(u.shape(), (Shape{2, 1, 3, 2}));
  EXPECT_EQ(u.squeeze(1).shape(), t.shape());
  EXPECT_EQ(t.unsqueeze(-1).shape(), (Shape{2, 3, 2, 1}));
  r.fill(1);  // a write through a view is seen by every view
  EXPECT_EQ(t.to_host<float>(), std::vector<float>(12, 1.f));
}

TEST(Tensor, ShapeErrorsNameTheOpAndShapes) {
  Tensor t = Tensor::zeros(Shape{2, 3});
  const std::string m = message_of([&] { t.reshape({4, 2}); });
  EXPECT_NE(m.find("reshape"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
  EXPECT_NE(m.find("(4, 2)"), std::string::npos) << m;
  EXPECT_NE(message_of([&] { t.squeeze(0); }).find("not of size 1"), std::string::npos);
  EXPECT_THROW(t.reshape({-1, -1}), ShapeError);
  Tensor other = Tensor::zeros(Shape{3, 2});
  const std::string m2 = message_of([&] { timbre::check_same_shape("add", t, other); });
  EXPECT_NE(m2.find("add: shapes differ: f32(2, 3) and f32(3, 2)"), std::string::npos) << m2;
}

TEST(Allocator, ReusesFreedBlocksAndTracksPeak) {
  auto& a = timbre::Allocator::instance();
  a.empty_cache();
  a.reset_peak();
  const auto before = a.stats();
  void* p;
  {
    Tensor t = Tensor::empty(Shape{1000});  // 4000 bytes -> 4096
    p = t.raw();
    EXPECT_EQ(a.stats().in_use, before.in_use + 4096);
  }
  EXPECT_EQ(a.stats().in_use, before.in_use);
  EXPECT_EQ(a.stats().cached, 4096u);
  const auto calls = a.stats().device_calls;
  Tensor again = Tensor::empty(Shape{1020});  // rounds to the same 4096
  EXPECT_EQ(again.raw(), p);
  EXPECT_EQ(a.stats().device_calls, calls);
  EXPECT_GE(a.stats().reuses, 1u);
  EXPECT_GE(a.stats().peak, before.in_use + 4096);
  // A block much larger than the request is not handed out (waste > 1/4).
  Tensor small = Tensor::empty(Shape{10});
  EXPECT_NE(small.raw(), p);
}

// A graph's private pool (engine/allocator.h): a block the capture
// allocated or released, or took from the general cache, is not handed to
// other work while the graph lives, but is reused within the capture;
// release_pool gives the blocks back.
TEST(Allocator, ACapturePoolKeepsItsBlocksUntilReleased) {
  auto& a = timbre::Allocator::instance();
  a.empty_cache();
  void* before_capture;
  {
    Tensor t = Tensor::empty(Shape{3000});  // 12000 bytes: cached when released
    before_capture = t.raw();
  }
  const int pool = a.begin_capture();
  void *inside, *taken;
  {
    Tensor t = Tensor::empty(Shape{3000});  // from the general cache, into the pool
    taken = t.raw();
  }
  EXPECT_EQ(taken, before_capture);
  {
    Tensor t = Tensor::empty(Shape{2990});  // the pool's free block, reused in the capture
    inside = t.raw();
  }
  EXPECT_EQ(inside, taken);
  Tensor outlives = Tensor::empty(Shape{5000});
  a.end_capture();
  EXPECT_GE(a.pool_bytes(pool), 2 * 12288u);
  {
    Tensor t = Tensor::empty(Shape{3000});  // not the graph's block
    EXPECT_NE(t.raw(), taken);
  }
  void* escaped = outlives.raw();
  outlives = Tensor();  // back to the pool, not the general cache
  {
    Tensor t = Tensor::empty(Shape{5000});
    EXPECT_NE(t.raw(), escaped);
  }
  a.release_pool(pool);
  EXPECT_EQ(a.pool_bytes(pool), 0u);
  // Two blocks of each size are cached now, the pool's and the ones made
  // beside it: four requests need no cudaMalloc.
  const auto calls = a.stats().device_calls;
  Tensor t1 = Tensor::empty(Shape{3000}), t2 = Tensor::empty(Shape{3000});
  Tensor u1 = Tensor::empty(Shape{5000}), u2 = Tensor::empty(Shape{5000});
  EXPECT_EQ(a.stats().device_calls, calls) << "the pool's blocks are reusable again";
}

TEST(Allocator, OutOfMemoryNamesTheSize) {
  try {
    Tensor::empty(Shape{int64_t(1) << 40, 1 << 10});  // 4 EiB
    FAIL() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("out of device memory"), std::string::npos) << e.what();
  }
}

}  // namespace
