// Extrapolation from N0 to N (extrapolate.hpp) on a synthetic kernel whose
// structure is known: a few directions shared by the whole population plus a
// sample-specific part, as in the empirical NTK of a pre-trained network.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "ttpred/dynamics.hpp"
#include "ttpred/extrapolate.hpp"

#include "stages.hpp"

using namespace ttpred;

namespace {

constexpr int64_t kC = 2;      // classes
constexpr int64_t kShared = 6; // shared directions per class

// A population of n samples: latent z_i (kShared), labels from a linear rule on z
// with 15% flipped, Θ = K ⊗ I_C with K = U Uᵀ (shared, decaying scales) + E Eᵀ
// (sample-specific, nearly orthogonal rows), outputs f0 = 0.
Problem population(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> gauss;
  std::uniform_real_distribution<double> unif;
  const int64_t dn = 4 * n;  // sample-specific feature dimensions
  Eigen::MatrixXd U(n, kShared), E(n, dn);
  Problem p;
  p.loss = Loss::cross_entropy;
  p.y = Eigen::MatrixXd::Zero(n, kC);
  for (int64_t i = 0; i < n; ++i) {
    double score = 0;
    for (int64_t q = 0; q < kShared; ++q) {
      const double z = gauss(rng);
      U(i, q) = z * 3.0 / std::sqrt(double(q + 1));
      score += z / double(q + 1);
    }
    int64_t label = score > 0 ? 1 : 0;
    if (unif(rng) < 0.15) label = 1 - label;
    p.y(i, label) = 1;
    p.labels.push_back(label);
    for (int64_t k = 0; k < dn; ++k) E(i, k) = gauss(rng) * std::sqrt(24.0 / double(dn));
  }
  const Eigen::MatrixXd K = U * U.transpose() + E * E.transpose();
  p.theta = Eigen::MatrixXd::Zero(n * kC, n * kC);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < kC; ++c) p.theta(i * kC + c, j * kC + c) = K(i, j);
  p.f0 = Eigen::MatrixXd::Zero(n, kC);
  p.jw0 = Eigen::MatrixXd::Zero(n, kC);
  return p;
}

Problem first_samples(const Problem& p, int64_t n0) {
  Problem q;
  q.loss = p.loss;
  q.theta = p.theta.topLeftCorner(n0 * kC, n0 * kC);
  q.f0 = p.f0.topRows(n0);
  q.jw0 = p.jw0.topRows(n0);
  q.y = p.y.topRows(n0);
  q.labels.assign(p.labels.begin(), p.labels.begin() + n0);
  return q;
}

Eigen::VectorXd residual(const Problem& p) { return loss_gradient(p, p.f0); }  // softmax(0) - y

struct Outcome {
  int64_t steps;
  double final_loss;
  std::vector<double> loss;
};

Outcome run(const Problem& p, int64_t horizon) {
  Hyper h;
  h.lr = 0.02;
  h.momentum = 0.9;
  h.batch_size = 16;
  h.steps = horizon;
  SimOptions so;
  so.runs = 8;
  so.seed = 3;
  Curves cv = simulate(p, h, so);
  return {cv.step[size_t(time_to_epsilon(cv.loss, 0.02 * cv.loss.front()))], cv.loss.back(), cv.loss};
}

}  // namespace

TEST_CASE("extrapolating Θ from N0 = N/8 reproduces the loss curve of all N samples") {
  const int64_t N = 960, n0 = 120;
  const int64_t horizon = 4 * N / 16;  // 4 epochs of N
  const Problem full = population(N, 11);
  const Outcome truth = run(full, horizon);
  const Problem sub = first_samples(full, n0);
  const Outcome raw = run(sub, horizon);
  Problem ext = sub;
  const Extrapolated x = extrapolate_kernel(sub.theta, kC, N, residual(sub), 5);
  ext.theta = x.theta;
  const Outcome pred = run(ext, horizon);
  const double err_raw = std::fabs(double(raw.steps - truth.steps)) / double(truth.steps);
  const double err = std::fabs(double(pred.steps - truth.steps)) / double(truth.steps);
  MESSAGE("T(eps): all N " << truth.steps << ", N0 alone " << raw.steps << ", extrapolated " << pred.steps
                           << "; final loss " << truth.final_loss << " / " << raw.final_loss << " / "
                           << pred.final_loss << "; shared modes " << x.shared_modes);
  // Mean relative distance between loss curves.
  auto distance = [&](const std::vector<double>& a) {
    double d = 0;
    for (size_t t = 1; t < a.size(); ++t) d += std::fabs(a[t] - truth.loss[t]) / truth.loss[t];
    return d / double(a.size() - 1);
  };
  MESSAGE("curve distance: N0 alone " << distance(raw.loss) << ", extrapolated " << distance(pred.loss)
                                      << "; |T error| alone " << err_raw << ", extrapolated " << err);
  // The subset alone memorises its samples N/N0 times too often: its loss falls far too low.
  CHECK(raw.final_loss < 0.3 * truth.final_loss);
  CHECK(distance(raw.loss) > 0.5);
  // Extrapolated: T(ε), the final loss and the whole curve of the full set.
  CHECK(err < 0.15);
  CHECK(pred.final_loss == doctest::Approx(truth.final_loss).epsilon(0.3));
  CHECK(distance(pred.loss) < 0.25);
  // Some of the shared directions (kShared per class; how many carry the
  // residual varies from draw to draw at N0 = 120) and none of the N0·C - kShared·C
  // sample-specific ones.
  CHECK(x.shared_modes >= 2.0);
  CHECK(x.shared_modes <= double(kShared * kC));
}

TEST_CASE("the extrapolated kernel is Θ itself at N = N0, and PSD with its top modes kept otherwise") {
  const Problem p = population(100, 2);
  const Extrapolated same = extrapolate_kernel(p.theta, kC, 100, residual(p), 1);
  CHECK((same.theta - p.theta).norm() == 0.0);
  const Extrapolated x = extrapolate_kernel(p.theta, kC, 1000, residual(p), 1);
  const Eigensystem a = eigh_descending(p.theta), b = eigh_descending(x.theta);
  CHECK(b.values.minCoeff() > -1e-8 * a.values(0));
  CHECK(b.values(0) == doctest::Approx(a.values(0)).epsilon(0.05));
  // Total weight shrinks towards N0/N of the trace (the sample-specific part).
  CHECK(x.theta.trace() < 0.8 * p.theta.trace());
  CHECK(x.theta.trace() > 0.1 * p.theta.trace());
  CHECK_THROWS(extrapolate_kernel(p.theta, kC, 50, residual(p), 1));
}

TEST_CASE("split halves: a residual shared by the population scores near 1, sample-specific noise near 0") {
  const Problem p = population(200, 4);
  const Eigensystem es = eigh_descending(p.theta);
  // Noise: independent per sample, unrelated to Θ.
  std::mt19937_64 rng(9);
  std::normal_distribution<double> gauss;
  Eigen::VectorXd noise(p.theta.rows());
  for (Eigen::Index i = 0; i < noise.size(); ++i) noise(i) = gauss(rng);
  const Eigen::VectorXd s_noise = shared_fraction(es.vectors, noise, kC, 1);
  // The top eigenvector itself (a population direction): the residual lies on it.
  const Eigen::VectorXd s_top = shared_fraction(es.vectors, es.vectors.col(0), kC, 1);
  CHECK(s_noise.mean() < 0.15);
  CHECK(s_top(0) > 0.9);
  CHECK_THROWS(shared_fraction(es.vectors, noise.head(10), kC, 1));
}

TEST_CASE("eigh_descending: descending values, orthonormal vectors, V diag(w) Vᵀ = A") {
  Eigen::MatrixXd r = Eigen::MatrixXd::Random(30, 30);
  const Eigen::MatrixXd a = r * r.transpose();
  const Eigensystem es = eigh_descending(a);
  for (Eigen::Index k = 1; k < es.values.size(); ++k) CHECK(es.values(k) <= es.values(k - 1));
  CHECK((es.vectors.transpose() * es.vectors - Eigen::MatrixXd::Identity(30, 30)).norm() < 1e-10);
  CHECK((es.vectors * es.values.asDiagonal() * es.vectors.transpose() - a).norm() < 1e-9 * a.norm());
  const Eigensystem f = eigh_descending(a, /*single=*/true);
  CHECK((f.values - es.values).norm() < 1e-5 * es.values(0));
  CHECK((f.vectors * f.values.asDiagonal() * f.vectors.transpose() - a).norm() < 1e-5 * a.norm());
}

TEST_CASE("gradient clipping on an extrapolated kernel reads the batch's norm from the measured Θ") {
  const int64_t N = 960, n0 = 120;
  const Problem full = population(N, 11);
  const Problem sub = first_samples(full, n0);
  ExtrapolatedByN cache;
  const Problem& ext = extrapolated_at(cache, sub, N, 5).first;
  REQUIRE(ext.theta_norm);
  CHECK((*ext.theta_norm - sub.theta).norm() == 0.0);  // the measured kernel, not Θ'
  CHECK((ext.theta - sub.theta).norm() > 0.0);
  // A restriction of it restricts both kernels.
  std::vector<int64_t> pos;
  for (int64_t i = 0; i < n0; i += 2) pos.push_back(i);
  const Problem half = restrict_problem(ext, pos);
  REQUIRE(half.theta_norm);
  CHECK((*half.theta_norm)(2, 4) == (*ext.theta_norm)(4, 8));
  // Clipped at a tenth of the starting gradient norm: extrapolated, T(ε) of all N
  // samples, as unclipped (the test above).
  const Eigen::VectorXd g = residual(full);
  Hyper h;
  h.lr = 0.02;
  h.momentum = 0.9;
  h.batch_size = 16;
  h.steps = 4 * N / 16;
  h.clip_norm = 0.1 * std::sqrt(g.dot(full.theta * g)) / double(N);
  SimOptions so;
  so.runs = 8;
  so.seed = 3;
  auto T = [&](const Problem& p, const Hyper& hh) {
    const Curves cv = simulate(p, hh, so);
    return double(cv.step[size_t(time_to_epsilon(cv.loss, 0.02 * cv.loss.front()))]);
  };
  Hyper plain = h;
  plain.clip_norm = 0;
  Problem wrong = ext;  // the norm from Θ' instead: what the measured kernel is kept for
  wrong.theta_norm = nullptr;
  const double truth = T(full, h), pred = T(ext, h), unclipped = T(full, plain), from_ext = T(wrong, h);
  MESSAGE("clipped T(eps): all N " << truth << ", extrapolated " << pred << " (norm from Θ': " << from_ext
                                   << "); unclipped all N " << unclipped);
  CHECK(std::fabs(truth - unclipped) > 0.1 * unclipped);  // clipping is active: it changes T
  CHECK(std::fabs(pred - truth) / truth < 0.15);
  CHECK(std::fabs(pred - truth) < std::fabs(from_ext - truth));
}

TEST_CASE("the self-check's correction: the log-ratio rule, its clamp, and the stretched curve") {
  // N1 = 125 -> N0 = 500 -> N = 2000: the same ratio twice, so the exponent is 1.
  Check c;
  c.from = 125;
  c.direct = 130;  // 30 steps after t0 = 100 on all N0
  c.steps = 120;   // 20 after t0 extrapolated from N1: too fast by 1.5
  CHECK(extrapolation_correction(c, 100, 2000, 500, 400) == doctest::Approx(1.5));
  CHECK(extrapolation_correction(c, 100, 8000, 500, 400) == doctest::Approx(2.0));  // 1.5^2 = 2.25, clamped
  c.steps = 101;  // one step after t0: the ratio 30 is clamped too
  CHECK(extrapolation_correction(c, 100, 2000, 500, 400) == doctest::Approx(2.0));
  CHECK(extrapolation_correction(Check{}, 100, 2000, 500, 400) == 1.0);  // no check
  c.direct = 400;                                                         // not reached within the horizon
  CHECK(extrapolation_correction(c, 100, 2000, 500, 400) == 1.0);
  // time_warp: after t0 the curve is L(t0 + (t - t0)/c), the last value held past the horizon.
  Curves cv;
  for (int64_t t = 0; t <= 10; ++t) cv.step.push_back(t), cv.loss.push_back(double(10 - t)), cv.acc.push_back(0.1 * double(t));
  const Curves w = time_warp(cv, 4, 2.0);
  CHECK(w.loss[4] == doctest::Approx(6.0));
  CHECK(w.loss[8] == doctest::Approx(4.0));   // t0 + 4/2 = 6
  CHECK(w.loss[10] == doctest::Approx(3.0));  // t0 + 6/2 = 7: a stretch raises the final value
  CHECK(w.acc[10] == doctest::Approx(0.7));
  CHECK(time_warp(cv, 4, 1.0).loss == cv.loss);
}
