// A model linear in its parameters (fixed random features + a linear head):
// its linearization is exact, so SGD on it, run for real with LibTorch, must
// follow the predicted curve (same seed = same batches).
#include <doctest/doctest.h>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"

using namespace ttpred;

namespace {

struct Case {
  const char* data;
  Loss loss;
  double lr, momentum, wd;
  int64_t batch;
};

std::vector<int64_t> all_samples(const Dataset& d) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < d.n; ++i) idx.push_back(i);
  return idx;
}

// The linearized problem of model m on samples idx: targets, exact Θ, f0, J·w0.
Problem problem_for(const Model& m, const Dataset& d, Loss loss, const std::vector<int64_t>& idx) {
  const int64_t n = int64_t(idx.size()), C = m.num_classes(d);
  Problem p;
  p.loss = loss;
  p.y = target_matrix(d, idx, C, &p.labels);
  GramOptions go;
  go.projection = "exact";
  Gram g = compute_gram(m, d, idx, go);
  p.theta = g.theta;
  p.f0 = g.f0;
  p.jw0 = g.jw0;
  return p;
}

void run_case(const Case& k) {
  CAPTURE(k.data);
  CAPTURE(k.momentum);
  CAPTURE(k.wd);
  CAPTURE(k.batch);
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/" + k.data);
  Model m(dir + "/linear_rf.pt", "cpu");
  std::vector<int64_t> idx = all_samples(d);
  Problem p = problem_for(m, d, k.loss, idx);
  Hyper h;
  h.lr = k.lr;
  h.momentum = k.momentum;
  h.weight_decay = k.wd;
  h.batch_size = k.batch;
  h.steps = 60;
  SimOptions so;
  so.runs = 1;
  so.seed = 11;
  Curves pred = simulate(p, h, so);

  FinetuneOptions fo;
  fo.seed = 11;  // run 0 of the simulator draws the same batches
  FinetuneResult real = finetune(m, d, idx, k.loss, p.y, h, fo);
  REQUIRE(real.loss.size() == pred.loss.size());
  for (size_t t = 0; t < real.loss.size(); ++t) {
    CAPTURE(t);
    CHECK(pred.loss[t] == doctest::Approx(real.loss[t]).epsilon(2e-3));
  }
  CHECK(real.loss.back() < real.loss.front());
  CHECK(time_to_epsilon(pred.loss, 0.01) == time_to_epsilon(real.loss, 0.01));
}

}  // namespace

TEST_CASE("linear-in-parameters model: predicted = real SGD, cross-entropy") {
  run_case({"vec_train.pt", Loss::cross_entropy, 0.5, 0.0, 0.0, 8});
  run_case({"vec_train.pt", Loss::cross_entropy, 0.1, 0.9, 0.0, 8});
  run_case({"vec_train.pt", Loss::cross_entropy, 0.1, 0.9, 0.01, 16});
}

TEST_CASE("linear-in-parameters model: predicted = real SGD, MSE with float targets") {
  run_case({"vec_mse.pt", Loss::mse, 0.2, 0.0, 0.0, 8});
  run_case({"vec_mse.pt", Loss::mse, 0.05, 0.9, 0.001, 16});
  run_case({"vec_mse.pt", Loss::mse, 0.2, 0.0, 0.0, 64});  // full batch
}

TEST_CASE("a nonlinear model: the linearization matches real SGD early on") {
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/vec_train.pt");
  Model m(dir + "/mlp.pt", "cpu");
  const std::vector<int64_t> idx = all_samples(d);
  Problem p = problem_for(m, d, Loss::cross_entropy, idx);
  Hyper h;
  h.lr = 0.05;
  h.batch_size = 16;
  h.steps = 5;
  SimOptions so;
  so.runs = 1;
  Curves pred = simulate(p, h, so);
  FinetuneResult real = finetune(m, d, idx, p.loss, p.y, h, FinetuneOptions{});
  CHECK(pred.loss.back() == doctest::Approx(real.loss.back()).epsilon(0.02));
}

TEST_CASE("linear-in-parameters model with a cosine schedule and warm-up: predicted = real SGD") {
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/vec_train.pt");
  Model m(dir + "/linear_rf.pt", "cpu");
  const std::vector<int64_t> idx = all_samples(d);
  Problem p = problem_for(m, d, Loss::cross_entropy, idx);
  Hyper h;
  h.lr = 0.3;
  h.momentum = 0.9;
  h.batch_size = 8;
  h.steps = 48;
  h.schedule.type = "cosine";
  h.schedule.warmup_steps = 8;
  SimOptions so;
  so.runs = 1;
  so.seed = 5;
  Curves pred = simulate(p, h, so);
  FinetuneOptions fo;
  fo.seed = 5;
  FinetuneResult real = finetune(m, d, idx, p.loss, p.y, h, fo);
  REQUIRE(real.loss.size() == pred.loss.size());
  for (size_t t = 0; t < real.loss.size(); ++t) CHECK(pred.loss[t] == doctest::Approx(real.loss[t]).epsilon(2e-3));
  // The schedule matters: a constant rate gives another curve.
  h.schedule = Schedule{};
  CHECK(simulate(p, h, so).loss.back() != doctest::Approx(pred.loss.back()).epsilon(1e-3));
}
