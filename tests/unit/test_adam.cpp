// Adam and AdamW on the linearized model (ttpred/adam.hpp). On a model linear
// in its parameters the linearization is exact, so (a) the weight-space
// simulation (the oracle) must reproduce real LibTorch Adam/AdamW step by step,
// and (b) the function-space method on the preconditioned kernel is measured
// against both.
#include <doctest/doctest.h>

#include <cmath>

#include "ttpred/adam.hpp"
#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"

using namespace ttpred;

namespace {

struct Fixture {
  Dataset d;
  Model m;
  std::vector<int64_t> idx;
  Problem p;
  Linearization lin;
  Fixture(const char* data, Loss loss)
      : d(read_torch_dict(std::string(TEST_MODELS) + "/" + data)),
        m(std::string(TEST_MODELS) + "/linear_rf.pt", "cpu") {
    for (int64_t i = 0; i < d.n; ++i) idx.push_back(i);
    const int64_t C = m.num_classes(d);
    p.loss = loss;
    p.y = target_matrix(d, idx, C, &p.labels);
    GramOptions go;
    go.projection = "exact";
    Gram g = compute_gram(m, d, idx, go);
    p.theta = g.theta;
    p.f0 = g.f0;
    p.jw0 = g.jw0;
    lin = explicit_linearization(m, d, idx);
  }
};

Hyper adam(Optimizer o, double lr, double wd, int64_t batch, int64_t steps) {
  Hyper h;
  h.optimizer = o;
  h.lr = lr;
  h.weight_decay = wd;
  h.batch_size = batch;
  h.steps = steps;
  return h;
}

void oracle_equals_real(const char* data, Loss loss, const Hyper& h) {
  CAPTURE(data);
  CAPTURE(int(h.optimizer));
  CAPTURE(h.weight_decay);
  Fixture f(data, loss);
  SimOptions so;
  so.runs = 1;
  so.seed = 4;
  const Curves oracle = simulate_adam_weights(f.p, f.lin, h, so);
  FinetuneOptions fo;
  fo.seed = 4;
  const FinetuneResult real = finetune(f.m, f.d, f.idx, loss, f.p.y, h, fo);
  REQUIRE(real.loss.size() == oracle.loss.size());
  for (size_t t = 0; t < real.loss.size(); ++t) {
    CAPTURE(t);
    CHECK(oracle.loss[t] == doctest::Approx(real.loss[t]).epsilon(2e-3));
  }
  CHECK(real.loss.back() < real.loss.front());
}

// Mean relative distance of two loss curves of equal length.
double curve_distance(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t t = 0; t < a.size(); ++t) s += std::fabs(a[t] - b[t]) / std::max(b[t], 1e-12);
  return s / double(a.size());
}

}  // namespace

TEST_CASE("weight-space Adam/AdamW on the linearized model = real LibTorch training") {
  oracle_equals_real("vec_train.pt", Loss::cross_entropy, adam(Optimizer::adam, 0.02, 0.0, 8, 40));
  oracle_equals_real("vec_train.pt", Loss::cross_entropy, adam(Optimizer::adam, 0.02, 0.01, 16, 40));
  oracle_equals_real("vec_train.pt", Loss::cross_entropy, adam(Optimizer::adamw, 0.02, 0.05, 8, 40));
  oracle_equals_real("vec_mse.pt", Loss::mse, adam(Optimizer::adamw, 0.01, 0.01, 16, 40));
  Hyper h = adam(Optimizer::adamw, 0.03, 0.01, 8, 40);
  h.label_smoothing = 0.1;
  h.beta1 = 0.8;
  h.beta2 = 0.99;
  h.schedule.type = "cosine";
  h.schedule.warmup_steps = 5;
  oracle_equals_real("vec_train.pt", Loss::cross_entropy, h);
}
