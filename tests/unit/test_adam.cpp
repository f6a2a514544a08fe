// Adam and AdamW on the linearized model (ttpred/adam.hpp). On a model linear
// in its parameters the linearization is exact, so (a) the weight-space
// simulation (the oracle) must reproduce real LibTorch Adam/AdamW step by step,
// and (b) the function-space method on the preconditioned kernel is measured
// against both.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "ttpred/adam.hpp"
#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/estimate.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"

#include "linear_problem.hpp"

// stages.hpp (internal; its Job would clash with this file's): the batch seed of prefix run q.
namespace ttpred {
uint64_t prefix_seed(uint64_t seed, int q);
}

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
    idx = testing::all_samples(d);
    p = testing::linear_problem(m, d, loss, idx);
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

namespace {

struct Compared {
  int64_t t_fn, t_oracle, t_real;
  double distance;  // function space vs oracle, mean relative distance of the curves
};

// The function-space method on Θ_P against the oracle and one real run, all
// with the batches of run 0 (seed 4).
Compared compare(const char* data, Loss loss, const Hyper& h) {
  Fixture f(data, loss);
  const Preconditioned pk = adam_kernel(f.m, f.d, f.idx, smoothed_targets(f.p.y, h.label_smoothing), loss, h.batch_size,
                                        f.d.n, h.eps, GramOptions{});
  SimOptions so;
  so.runs = 1;
  so.seed = 4;
  const Curves fn = simulate_adam(f.p, pk, h, so);
  const Curves oracle = simulate_adam_weights(f.p, f.lin, h, so);
  FinetuneOptions fo;
  fo.seed = 4;
  const FinetuneResult real = finetune(f.m, f.d, f.idx, loss, f.p.y, h, fo);
  // T: the first step with the loss 90 % of the way from L0 to the oracle's L_T.
  const double target = oracle.loss.front() - 0.9 * (oracle.loss.front() - oracle.loss.back());
  auto T = [&](const std::vector<double>& l) { return first_reaching(l, target, true); };
  return {T(fn.loss), T(oracle.loss), T(real.loss), curve_distance(fn.loss, oracle.loss)};
}

}  // namespace

TEST_CASE("function-space Adam on the preconditioned kernel vs the weight-space oracle and real Adam") {
  // T = first step 90 % of the way down. Measured (seed 4, run 0's batches):
  // within 2 % of the oracle except full batch (−14 %) and lr 0.1 (+34 %: at
  // large steps the profile of v moves away from w0's, docs/method.md §3b).
  struct Row {
    const char* data;
    Loss loss;
    Hyper h;
    double tol;  // |T_fn / T_oracle − 1|
  };
  std::vector<Row> rows = {
      {"vec_train.pt", Loss::cross_entropy, adam(Optimizer::adam, 0.01, 0.0, 8, 120), 0.1},
      {"vec_train.pt", Loss::cross_entropy, adam(Optimizer::adam, 0.03, 0.0, 16, 120), 0.1},
      {"vec_train.pt", Loss::cross_entropy, adam(Optimizer::adamw, 0.01, 0.05, 8, 120), 0.1},
      {"vec_train.pt", Loss::cross_entropy, adam(Optimizer::adam, 0.01, 0.05, 8, 120), 0.1},  // L2: approximate term
      {"vec_train.pt", Loss::cross_entropy, adam(Optimizer::adamw, 0.003, 0.01, 64, 120), 0.2},  // full batch
      {"vec_mse.pt", Loss::mse, adam(Optimizer::adamw, 0.01, 0.01, 16, 120), 0.1},
      {"vec_mse.pt", Loss::mse, adam(Optimizer::adam, 0.003, 0.0, 8, 120), 0.1},
      {"vec_train.pt", Loss::cross_entropy, adam(Optimizer::adam, 0.1, 0.0, 8, 120), 0.4},  // the method's limit
  };
  for (const Row& r : rows) {
    const Compared c = compare(r.data, r.loss, r.h);
    INFO(r.data << " optimizer " << to_string(r.h.optimizer) << " lr " << r.h.lr << " wd " << r.h.weight_decay << " B "
                << r.h.batch_size << ": T function space " << c.t_fn << ", oracle " << c.t_oracle << ", real "
                << c.t_real << ", curve distance " << c.distance);
    REQUIRE(c.t_oracle > 0);
    CHECK(std::abs(c.t_real - c.t_oracle) <= 1);  // the oracle is exact
    CHECK(std::fabs(double(c.t_fn) / double(c.t_oracle) - 1) <= r.tol);
    CHECK(c.distance < (r.tol > 0.2 ? 0.25 : 0.08));
  }
}

TEST_CASE("Adam's kernel: P0 from the mini-batch gradient's second moments") {
  Fixture f("vec_train.pt", Loss::cross_entropy);
  const Preconditioned full = adam_kernel(f.m, f.d, f.idx, f.p.y, Loss::cross_entropy, 64, 64, 1e-8, GramOptions{});
  const Preconditioned small = adam_kernel(f.m, f.d, f.idx, f.p.y, Loss::cross_entropy, 8, 64, 1e-8, GramOptions{});
  CHECK(full.method == "exact");
  CHECK(full.theta.rows() == 64 * 3);
  CHECK((full.theta - full.theta.transpose()).norm() < 1e-9 * full.theta.norm());
  // Smaller batches: noisier gradients, larger v̄, a smaller preconditioner.
  CHECK(small.p_ratio < full.p_ratio);
  CHECK(small.p_ratio > 0);
  // A larger eps shrinks P0 everywhere.
  const Preconditioned damped = adam_kernel(f.m, f.d, f.idx, f.p.y, Loss::cross_entropy, 8, 64, 1.0, GramOptions{});
  CHECK(damped.theta.trace() < small.theta.trace());
}

TEST_CASE("gradient clipping with Adam/AdamW: the oracle = real training, function space follows") {
  Fixture f("vec_train.pt", Loss::cross_entropy);
  const Eigen::VectorXd g = loss_gradient(f.p, f.p.f0);
  const double g0 = std::sqrt(g.dot(f.p.theta * g)) / double(f.p.n());  // ‖∇_w L‖ at w0
  REQUIRE(g0 > 0);
  Hyper h = adam(Optimizer::adamw, 0.02, 0.01, 8, 40);
  h.clip_norm = 0.3 * g0;
  oracle_equals_real("vec_train.pt", Loss::cross_entropy, h);
  Hyper a = adam(Optimizer::adam, 0.01, 0.01, 16, 40);
  a.clip_norm = 0.3 * g0;
  oracle_equals_real("vec_train.pt", Loss::cross_entropy, a);
  // Adam divides by the gradient's own scale: clipping changes it only through
  // eps and the varying factor. The function-space method keeps that property.
  Hyper loose = adam(Optimizer::adam, 0.01, 0.0, 8, 120), tight = loose;
  tight.clip_norm = 0.3 * g0;
  const Compared c = compare("vec_train.pt", Loss::cross_entropy, tight);
  INFO("clipped: T function space " << c.t_fn << ", oracle " << c.t_oracle << ", real " << c.t_real);
  CHECK(std::abs(c.t_real - c.t_oracle) <= 1);
  CHECK(std::fabs(double(c.t_fn) / double(c.t_oracle) - 1) <= 0.15);
}

TEST_CASE("Adam's kernel on the threaded Gram engine = the serial reference, exactly and sketched") {
  Fixture f("vec_train.pt", Loss::cross_entropy);
  for (const char* projection : {"exact", "countsketch"}) {
    CAPTURE(projection);
    GramOptions ref, fast;
    ref.method = "loop";
    ref.projection = fast.projection = projection;
    ref.dim = fast.dim = 64;  // the sketch (smaller than the model's parameters)
    fast.threads = 2;
    const Preconditioned a = adam_kernel(f.m, f.d, f.idx, f.p.y, Loss::cross_entropy, 8, 64, 1e-8, ref);
    const Preconditioned b = adam_kernel(f.m, f.d, f.idx, f.p.y, Loss::cross_entropy, 8, 64, 1e-8, fast);
    CHECK(a.method == b.method);
    CHECK(a.method == projection);
    CHECK((b.jpw0 - a.jpw0).norm() <= 1e-4 * a.jpw0.norm());  // from the unsketched rows in both
    if (std::string(projection) == "exact") {
      CHECK(b.p_ratio == doctest::Approx(a.p_ratio).epsilon(1e-4));
      CHECK((b.theta - a.theta).norm() <= 1e-4 * a.theta.norm());
    } else {
      // Other buckets and signs (each engine's own seed): the same Θ_P in expectation, and
      // both close to the exact one in trace.
      const Preconditioned e = adam_kernel(f.m, f.d, f.idx, f.p.y, Loss::cross_entropy, 8, 64, 1e-8, GramOptions{});
      CHECK(b.theta.trace() == doctest::Approx(e.theta.trace()).epsilon(0.3));
      CHECK(b.p_ratio == doctest::Approx(a.p_ratio).epsilon(0.3));
    }
  }
}

namespace {

// A job on a test model: Adam/AdamW, 15 epochs of batch 8, target: 90 % of the way
// from L0 to L_T of real training's mean curve over 4 seeds.
struct Job {
  Spec spec;
  int64_t t_real = 0;
  std::vector<double> mean;  // real training's mean loss curve, every step
};

// Mean |L_pred / L_real − 1| over the predicted curve's points from step `from` on.
double tail_distance(const Prediction& p, const std::vector<double>& real, int64_t from) {
  double s = 0;
  int k = 0;
  for (size_t i = 0; i < p.curve_step.size(); ++i)
    if (p.curve_step[i] >= from && size_t(p.curve_step[i]) < real.size()) {
      s += std::fabs(p.curve_loss[i] / real[size_t(p.curve_step[i])] - 1);
      ++k;
    }
  return k ? s / k : 0;
}

Job adam_job(const std::string& model, const std::string& optimizer) {
  const std::string base = "model: " + model + "\ndata:\n  path: vec_train.pt\nloss: cross_entropy\noptimizer:\n" +
                           optimizer + "  batch_size: 8\ntraining:\n  epochs: 15\n";
  const std::string tail = "engine:\n  runs: 8\n  seed: 1\nhardware:\n  step_seconds: 0.5\n";
  Spec s = parse_spec(base + "target:\n  epsilon: 0.01\n" + tail, "adam.yaml", TEST_MODELS);
  Model m(s.model, "cpu");
  const Dataset d = load_dataset(s);
  const std::vector<int64_t> idx = testing::all_samples(d);
  const int64_t C = m.num_classes(d);
  Hyper h = hyper_of_spec(s, 15 * (d.n / 8));
  std::vector<double> mean;
  const int seeds = 4;
  for (int seed = 0; seed < seeds; ++seed) {
    Model fresh(s.model, "cpu");
    FinetuneOptions fo;
    fo.seed = uint64_t(seed);
    const FinetuneResult r = finetune(fresh, d, idx, s.loss, target_matrix(d, idx, C), h, fo);
    mean.resize(r.loss.size(), 0.0);
    for (size_t t = 0; t < r.loss.size(); ++t) mean[t] += r.loss[t] / seeds;
  }
  const double target = mean.front() - 0.9 * (mean.front() - mean.back());
  Job j{parse_spec(base + "target:\n  loss: " + std::to_string(target) + "\n" + tail, "adam.yaml", TEST_MODELS), 0, mean};
  j.t_real = first_reaching(mean, target, true);
  return j;
}

}  // namespace

TEST_CASE("Adam re-linearized after real steps: the optimizer's state carried, closer to real training") {
  // T: 90 % of the way down real training's mean curve (4 seeds); K = 0.5 T = 60.
  // Measured: the MLP (nonlinear) +6 % re-linearized against +76 % training-free,
  // its curve after K 0.11 from the real one against 1.15 (with K = 0.3 T = 36 until
  // session 14: +25 %, 0.27 against 0.95). On the linear model the training-free
  // prediction is already exact up to the diagonal preconditioner (+4 %, +1 %);
  // re-linearized +9 %, +5 %, its curve after K 2-4 % from the real mean: the prefix
  // is one real run (64 samples, batches of 8), the truth a mean of 4.
  struct Row {
    const char* model;
    const char* optimizer;
    bool nonlinear;
  };
  const std::vector<Row> rows = {
      {"linear_rf.pt", "  name: adam\n  lr: 0.03\n", false},
      {"linear_rf.pt", "  name: adamw\n  lr: 0.01\n  weight_decay: 0.05\n", false},
      {"mlp.pt", "  name: adamw\n  lr: 0.01\n  weight_decay: 0.01\n", true},
  };
  for (const Row& r : rows) {
    Job j = adam_job(r.model, r.optimizer);
    const Prediction relin = estimate(j.spec);
    Spec free_spec = j.spec;
    free_spec.relinearize = 0;
    const Prediction fresh = estimate(free_spec);
    const double e_relin = double(relin.steps) / double(j.t_real) - 1, e_free = double(fresh.steps) / double(j.t_real) - 1;
    const double d_relin = tail_distance(relin, j.mean, relin.relinearized_at);
    const double d_free = tail_distance(fresh, j.mean, relin.relinearized_at);
    INFO(std::string(r.model) << " " << std::string(r.optimizer) << ": T real " << j.t_real << ", re-linearized at " << relin.relinearized_at << " "
                 << relin.steps << " (" << 100 * e_relin << " %), training-free " << fresh.steps << " (" << 100 * e_free
                 << " %); curve after K " << d_relin << " vs " << d_free);
    CHECK(relin.relinearized_at == 60);
    CHECK(fresh.relinearized_at == 0);
    CHECK(relin.drift_steps == 60);
    CHECK(std::fabs(e_relin) <= 0.3);
    if (r.nonlinear) {
      CHECK(std::fabs(e_relin) < std::fabs(e_free));
      CHECK(d_relin < 0.5 * d_free);
    } else {
      CHECK(d_relin < 0.06);
    }
    bool said = false;
    for (const auto& w : relin.warnings) said |= w.find("re-linearized after 60 real steps") != std::string::npos;
    CHECK(said);
    // The prefix is real Adam training with the spec's seed (every step evaluated up to 6);
    // with engine.prefix_runs: 2, the mean of two runs, the second with other batches.
    CHECK(relin.prefix_runs == 1);
    Spec two_spec = j.spec;
    two_spec.prefix_runs = 2;
    const Prediction two = estimate(two_spec);
    CHECK(two.prefix_runs == 2);
    Model m(j.spec.model, "cpu");
    const Dataset d = load_dataset(j.spec);  // in the order the prediction draws them
    const std::vector<int64_t> idx = testing::all_samples(d);
    Hyper h = hyper_of_spec(j.spec, relin.horizon);
    h.steps = 6;
    std::vector<FinetuneResult> real;
    const Weights w0 = save_weights(m);
    for (int q = 0; q < 2; ++q) {
      FinetuneOptions fo;
      fo.seed = prefix_seed(j.spec.seed, q);
      restore_weights(m, w0);
      real.push_back(finetune(m, d, idx, j.spec.loss, target_matrix(d, idx, m.num_classes(d)), h, fo));
    }
    for (size_t k = 0; k < relin.curve_step.size() && relin.curve_step[k] <= 6; ++k) {
      CAPTURE(k);
      const size_t t = size_t(relin.curve_step[k]);
      CHECK(relin.curve_loss[k] == doctest::Approx(real[0].loss[t]).epsilon(1e-4));
      CHECK(two.curve_loss[k] == doctest::Approx((real[0].loss[t] + real[1].loss[t]) / 2).epsilon(1e-4));
    }
  }
}
