// Cross-backend test: CPU and CUDA give the same Θ, the same real fine-tuning and
// the same predicted T(ε). It needs a usable CUDA device and a CUDA build of
// LibTorch (docs/performance.md §5); elsewhere each case reports that it was
// skipped, and passes. Run it on a GPU machine whenever one is available:
//   ctest -R unit.backend --output-on-failure
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>

#include "ttpred/data.hpp"
#include "ttpred/estimate.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"

using namespace ttpred;

namespace {

bool have_cuda() {
  static const bool yes = resolve_device("auto") == "cuda";
  if (!yes) std::fprintf(stderr, "test_backend: no usable CUDA device (or a CPU-only LibTorch): case skipped\n");
  return yes;
}

double rel_diff(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1e-30, b.cwiseAbs().maxCoeff());
}

std::vector<int64_t> first(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

Spec cnn_spec(const std::string& device) {
  const std::string dir = TEST_MODELS;
  std::string y = "model: cnn_small.pt\n"
                  "data:\n  path: img_train.pt\n"
                  "loss: cross_entropy\n"
                  "optimizer:\n  lr: 0.05\n  momentum: 0.9\n  batch_size: 8\n"
                  "training:\n  epochs: 6\n"
                  "target:\n  epsilon: 0.01\n"
                  "engine:\n  runs: 8\n  seed: 3\n  device: " + device + "\n"
                  "hardware:\n  step_seconds: 0.1\n";
  return parse_spec(y, "backend.yaml", dir);
}

}  // namespace

TEST_CASE("Θ on CUDA equals Θ on CPU: exact, CountSketch and trace-NTK") {
  if (!have_cuda()) return;
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/img_train.pt");
  const std::string path = std::string(TEST_MODELS) + "/cnn_small.pt";
  Model cpu(path, "cpu"), gpu(path, "cuda");
  CHECK(gpu.device() == "cuda");
  for (const char* projection : {"exact", "countsketch"})
    for (int64_t trace_k : {int64_t(0), int64_t(2)}) {
      CAPTURE(projection);
      CAPTURE(trace_k);
      GramOptions o;
      o.projection = projection;
      o.dim = 4096;
      o.seed = 5;
      o.trace_k = trace_k;
      const Gram a = compute_gram(cpu, d, first(24), o), b = compute_gram(gpu, d, first(24), o);
      REQUIRE(a.theta.rows() == b.theta.rows());
      CHECK(rel_diff(b.theta, a.theta) < 1e-4);  // float32 on both, different kernels
      CHECK(rel_diff(b.f0, a.f0) < 1e-5);
      CHECK(rel_diff(b.jw0, a.jw0) < (trace_k > 0 ? 1e-3 : 1e-4));
    }
}

TEST_CASE("real fine-tuning on CUDA follows the CPU run") {
  if (!have_cuda()) return;
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/img_train.pt");
  const std::string path = std::string(TEST_MODELS) + "/cnn_small.pt";
  Model cpu(path, "cpu"), gpu(path, "cuda");
  const int64_t C = cpu.num_classes(d);
  Hyper h;
  h.lr = 0.05;
  h.momentum = 0.9;
  h.batch_size = 8;
  h.steps = 30;
  FinetuneOptions fo;
  fo.seed = 2;
  const auto idx = first(d.n);
  const FinetuneResult a = finetune(cpu, d, idx, Loss::cross_entropy, target_matrix(d, d.n, C), h, fo);
  const FinetuneResult b = finetune(gpu, d, idx, Loss::cross_entropy, target_matrix(d, d.n, C), h, fo);
  REQUIRE(a.loss.size() == b.loss.size());
  for (size_t i = 0; i < a.loss.size(); ++i) CHECK(b.loss[i] == doctest::Approx(a.loss[i]).epsilon(1e-3));
}

TEST_CASE("the predicted T(ε) is the same on CUDA and CPU") {
  if (!have_cuda()) return;
  const Prediction a = estimate(cnn_spec("cpu")), b = estimate(cnn_spec("cuda"));
  CHECK(b.device == "cuda");
  CHECK(a.horizon == b.horizon);
  // Θ agrees to float rounding and the simulation runs on the host in double:
  // T(ε) may move by a step where the mean curve crosses ε.
  CHECK(std::abs(a.steps - b.steps) <= std::max<int64_t>(2, a.steps / 50));
  CHECK(b.final_loss == doctest::Approx(a.final_loss).epsilon(1e-3));
  CHECK(b.initial_loss == doctest::Approx(a.initial_loss).epsilon(1e-5));
}
