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
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"

#include "linear_problem.hpp"

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
