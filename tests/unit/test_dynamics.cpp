// The linearized dynamics: closed forms from the eigendecomposition of Θ,
// SGD's mean, weight decay, divergence, and T(ε) on constructed curves.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "ttpred/dynamics.hpp"

using namespace ttpred;

namespace {

// A random PSD Θ with a spread spectrum, outputs and targets for n samples, C classes.
Problem random_problem(int64_t n, int64_t C, Loss loss, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N01;
  const int64_t M = n * C;
  Eigen::MatrixXd A(M, 3 * M);
  for (int64_t i = 0; i < A.rows(); ++i)
    for (int64_t j = 0; j < A.cols(); ++j) A(i, j) = N01(rng) / std::sqrt(double(j + 1));
  Problem p;
  p.loss = loss;
  p.theta = A * A.transpose();
  p.f0 = Eigen::MatrixXd(n, C);
  p.jw0 = Eigen::MatrixXd(n, C);
  p.y = Eigen::MatrixXd::Zero(n, C);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < C; ++c) p.f0(i, c) = 0.5 * N01(rng), p.jw0(i, c) = N01(rng);
    int64_t label = int64_t(rng() % uint64_t(C));
    p.y(i, label) = 1;
    p.labels.push_back(label);
  }
  return p;
}

Eigen::VectorXd flat(const Eigen::MatrixXd& m) {
  Eigen::VectorXd v(m.size());
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index c = 0; c < m.cols(); ++c) v(i * m.cols() + c) = m(i, c);
  return v;
}

// MSE full-batch GD with momentum, mode by mode: r_{t+1} = r_t - η u_{t+1},
// u_{t+1} = m u_t + κ λ r_t with κ = 2 / (n C), on the eigenbasis of Θ.
std::vector<double> closed_form_mse(const Problem& p, double lr, double mom, int64_t T) {
  const int64_t n = p.n(), C = p.classes();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(p.theta);
  const Eigen::VectorXd r0 = es.eigenvectors().transpose() * (flat(p.f0) - flat(p.y));
  const double kappa = 2.0 / double(n * C);
  std::vector<double> L(size_t(T + 1), 0.0);
  for (Eigen::Index k = 0; k < r0.size(); ++k) {
    const double a = kappa * es.eigenvalues()(k);
    // state (r, u): u' = m u + a r ; r' = r - η u' = (1 - η a) r - η m u
    Eigen::Matrix2d step;
    step << 1 - lr * a, -lr * mom, a, mom;
    Eigen::Vector2d s(r0(k), 0.0);
    Eigen::Matrix2d pw = Eigen::Matrix2d::Identity();
    for (int64_t t = 0; t <= T; ++t) {
      Eigen::Vector2d st = pw * s;  // closed form: step^t applied to the initial state
      L[size_t(t)] += st(0) * st(0) / double(n * C);
      pw = step * pw;
    }
  }
  return L;
}

}  // namespace

TEST_CASE("full-batch MSE equals the closed form from the eigendecomposition of Θ") {
  for (double mom : {0.0, 0.9}) {
    CAPTURE(mom);
    Problem p = random_problem(10, 3, Loss::mse, 1);
    Hyper h;
    h.lr = 0.5 / (2.0 / 30.0 * p.theta.diagonal().sum());  // well inside the stable range
    h.momentum = mom;
    h.batch_size = 10;  // = n: full batch
    h.steps = 60;
    Curves cv = simulate(p, h, SimOptions{});
    CHECK(cv.run_loss.size() == 1);  // deterministic: one run
    auto ref = closed_form_mse(p, h.lr, mom, h.steps);
    REQUIRE(cv.loss.size() == ref.size());
    for (size_t t = 0; t < ref.size(); ++t) CHECK(cv.loss[t] == doctest::Approx(ref[t]).epsilon(1e-9));
    CHECK(cv.loss.back() < 0.5 * cv.loss.front());
  }
}

TEST_CASE("mini-batch SGD averages to full-batch GD at a small learning rate") {
  Problem p = random_problem(40, 2, Loss::cross_entropy, 2);
  Hyper h;
  h.lr = 0.2 / (0.5 * p.theta.diagonal().maxCoeff());
  h.steps = 40;
  h.batch_size = 40;
  Curves gd = simulate(p, h, SimOptions{});
  h.batch_size = 8;
  SimOptions so;
  so.runs = 64;
  Curves sgd = simulate(p, h, so);
  CHECK(sgd.run_loss.size() == 64);
  for (size_t t = 0; t < gd.loss.size(); t += 5) {
    CAPTURE(t);
    CHECK(sgd.loss[t] == doctest::Approx(gd.loss[t]).epsilon(0.03));
  }
  // The runs really differ (noise), and the same seed repeats them exactly.
  CHECK(sgd.run_loss[0] != sgd.run_loss[1]);
  Curves again = simulate(p, h, so);
  CHECK(again.run_loss[5] == sgd.run_loss[5]);
}

TEST_CASE("weight decay alone pulls F towards F0 - J w0 geometrically") {
  Problem p = random_problem(5, 2, Loss::mse, 3);
  p.theta.setZero();  // no gradient: only the decay term acts
  Hyper h;
  h.lr = 0.1;
  h.weight_decay = 0.5;
  h.batch_size = 5;
  h.steps = 10;
  Curves cv = simulate(p, h, SimOptions{});
  // F_t = F0 - a + (1 - η λ)^t a with a = J w0; check the loss at t = 10.
  Eigen::MatrixXd F = p.f0 - p.jw0 + std::pow(1 - h.lr * h.weight_decay, 10) * p.jw0;
  CHECK(cv.loss.back() == doctest::Approx(loss_of(p, F)).epsilon(1e-10));
}

TEST_CASE("a divergent learning rate gives an infinite final loss, not NaN or a crash") {
  Problem p = random_problem(6, 2, Loss::mse, 4);
  Hyper h;
  h.lr = 100.0 / p.theta.diagonal().minCoeff();
  h.batch_size = 6;
  h.steps = 500;
  Curves cv = simulate(p, h, SimOptions{});
  CHECK(cv.loss.size() == 501);
  CHECK(std::isinf(cv.loss.back()));
}

TEST_CASE("cross-entropy and accuracy follow nn.CrossEntropyLoss") {
  Problem p;
  p.loss = Loss::cross_entropy;
  p.f0 = Eigen::MatrixXd(2, 3);
  p.f0 << 1, 2, 3, 0, 0, 0;
  p.y = Eigen::MatrixXd::Zero(2, 3);
  p.y(0, 2) = 1;
  p.y(1, 0) = 1;
  p.labels = {2, 0};
  const double l0 = std::log(std::exp(1) + std::exp(2) + std::exp(3)) - 3, l1 = std::log(3.0);
  CHECK(loss_of(p, p.f0) == doctest::Approx((l0 + l1) / 2));
  CHECK(accuracy_of(p, p.f0) == doctest::Approx(1.0));  // ties: the first maximum, as torch.argmax
  p.loss = Loss::mse;
  CHECK(loss_of(p, p.f0) == doctest::Approx((1 + 4 + 4 + 1 + 0 + 0) / 6.0));
}

TEST_CASE("T(epsilon) and thresholds on constructed curves") {
  std::vector<double> L{5, 4, 3, 2.5, 2.45, 2.44};
  CHECK(time_to_epsilon(L, 0.1) == 3);  // |2.5 - 2.44| < 0.1
  CHECK(time_to_epsilon(L, 0.05) == 4);
  CHECK(time_to_epsilon(L, 0.009) == 5);
  CHECK(time_to_epsilon(L, 100) == 0);
  CHECK(time_to_epsilon({3, 1, 2, 2}, 0.5) == 2);  // the dip to 1 is not "converged"
  CHECK(time_to_epsilon({2, 2, 2}, 1e-12) == 0);
  CHECK(first_reaching(L, 2.5, true) == 3);
  CHECK(first_reaching(L, 1.0, true) == -1);
  CHECK(first_reaching({0.1, 0.5, 0.9}, 0.5, false) == 1);
  CHECK(percentile({1, 2, 3, 4, 5}, 50) == 3);
  CHECK(percentile({1, 2}, 50) == doctest::Approx(1.5));
  CHECK(percentile({4, 1, 3, 2}, 100) == 4);
}

TEST_CASE("epoch permutations are permutations, reshuffled each epoch, seeded") {
  std::mt19937_64 a = run_rng(3, 0), b = run_rng(3, 0), c = run_rng(3, 1);
  auto p1 = epoch_permutation(a, 50), p2 = epoch_permutation(a, 50);
  CHECK(p1 == epoch_permutation(b, 50));
  CHECK(p1 != p2);
  CHECK(p1 != epoch_permutation(c, 50));
  std::sort(p2.begin(), p2.end());
  for (int64_t i = 0; i < 50; ++i) CHECK(p2[size_t(i)] == i);
}

TEST_CASE("full-batch MSE with a step schedule equals the product of per-step factors") {
  Problem p = random_problem(8, 2, Loss::mse, 9);
  Hyper h;
  h.lr = 0.3 / (2.0 / 16.0 * p.theta.diagonal().sum());
  h.batch_size = 8;
  h.steps = 30;
  h.schedule.type = "step";
  h.schedule.step_size = 10;
  h.schedule.gamma = 0.5;
  Curves cv = simulate(p, h, SimOptions{});
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(p.theta);
  Eigen::VectorXd r = es.eigenvectors().transpose() * (flat(p.f0) - flat(p.y));
  for (int64_t t = 0; t < h.steps; ++t) {
    const double lr = h.schedule.at(h.lr, t, h.steps);
    r = r.array() * (1 - lr * 2.0 / 16.0 * es.eigenvalues().array());
  }
  CHECK(cv.loss.back() == doctest::Approx(r.squaredNorm() / 16.0).epsilon(1e-9));
}

TEST_CASE("kernel growth: a saturated scale is the same run on a scaled kernel; none is the fixed kernel") {
  for (Loss loss : {Loss::mse, Loss::cross_entropy}) {
    const Problem p = random_problem(12, 3, loss, 7);
    Hyper h;
    h.lr = 0.2 / p.theta.norm() * 12;
    h.momentum = 0.5;
    h.batch_size = 4;
    h.steps = 60;
    SimOptions o;
    o.runs = 3;
    o.seed = 5;
    const Curves fixed = simulate(p, h, o);
    Hyper none = h;
    none.growth = 0;
    none.progress_from = 1e9;
    CHECK(simulate(p, none, o).loss == fixed.loss);
    for (double g : {1.0, -1.0}) {
      // progress_from far above every loss: a(t) is at its cap from the first
      // step, so Θ is scaled by max_scale (growth) or min_scale (shrink) throughout.
      Hyper grow = h;
      grow.growth = g;
      grow.progress_from = 1e9;
      grow.progress_per = 1;
      grow.max_scale = 2;
      grow.min_scale = 0.25;
      Problem scaled = p;
      scaled.theta *= g > 0 ? 2.0 : 0.25;
      const Curves a = simulate(p, grow, o), b = simulate(scaled, h, o);
      REQUIRE(a.loss.size() == b.loss.size());
      for (size_t t = 0; t < a.loss.size(); ++t) CHECK(a.loss[t] == doctest::Approx(b.loss[t]).epsilon(1e-9));
    }
    // Growth with the progress: never slower than the fixed kernel, and faster somewhere.
    Hyper grow = h;
    grow.growth = 0.5;
    grow.progress_from = fixed.loss.front();
    grow.progress_per = 0.1 * fixed.loss.front();
    const Curves g = simulate(p, grow, o);
    bool faster = false;
    for (size_t t = 0; t < g.loss.size(); ++t) {
      CHECK(g.loss[t] <= fixed.loss[t] * (1 + 1e-6) + 1e-12);
      faster |= g.loss[t] < fixed.loss[t] * (1 - 1e-3);
    }
    CHECK(faster);
  }
}
