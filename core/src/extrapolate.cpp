#include "ttpred/extrapolate.hpp"

#include "stages.hpp"

#include <algorithm>
#include <memory>
#include <cmath>
#include <random>
#include <stdexcept>

namespace ttpred {

Eigen::VectorXd shared_fraction(const Eigen::MatrixXd& V, const Eigen::VectorXd& g, int64_t classes, uint64_t seed,
                                int splits, double window) {
  const int64_t m = V.rows();
  if (classes <= 0 || m % classes != 0 || g.size() != m || V.cols() != m)
    throw std::invalid_argument("shared_fraction: shapes do not match");
  const int64_t n0 = m / classes;
  splits = std::max(1, splits);
  // One column per split: g restricted to half a of the samples.
  Eigen::MatrixXd half = Eigen::MatrixXd::Zero(m, splits);
  std::mt19937_64 rng(seed ^ 0x5eed5a4f1e5ULL);
  for (int s = 0; s < splits; ++s)
    for (int64_t i = 0; i < n0; ++i)
      if (rng() & 1)
        for (int64_t c = 0; c < classes; ++c) half(i * classes + c, s) = g(i * classes + c);
  const Eigen::VectorXd p = V.transpose() * g;
  const Eigen::MatrixXd pa = V.transpose() * half;  // m × splits
  Eigen::VectorXd num(m), den(m);
  for (int64_t k = 0; k < m; ++k) {
    double acc = 0;
    for (int s = 0; s < splits; ++s) acc += 4.0 * pa(k, s) * (p(k) - pa(k, s));
    num(k) = acc / splits;
    den(k) = p(k) * p(k);
  }
  // Smooth over a window of ranks (per-mode products are noisy): ratio of sums.
  std::vector<double> cn(size_t(m + 1), 0.0), cd(size_t(m + 1), 0.0);
  for (int64_t k = 0; k < m; ++k) cn[size_t(k + 1)] = cn[size_t(k)] + num(k), cd[size_t(k + 1)] = cd[size_t(k)] + den(k);
  Eigen::VectorXd out(m);
  for (int64_t k = 0; k < m; ++k) {
    const int64_t lo = std::clamp<int64_t>(int64_t(std::floor(double(k) / window)), 0, k);
    const int64_t hi = std::clamp<int64_t>(int64_t(std::ceil(double(k + 1) * window)), k + 1, m);
    const double d = cd[size_t(hi)] - cd[size_t(lo)];
    out(k) = d > 0 ? std::clamp((cn[size_t(hi)] - cn[size_t(lo)]) / d, 0.0, 1.0) : 0.0;
  }
  return out;
}

Extrapolated extrapolate_kernel(const Eigen::MatrixXd& theta, int64_t classes, int64_t n, const Eigen::VectorXd& g,
                                uint64_t seed) {
  const int64_t m = theta.rows(), n0 = classes > 0 ? m / classes : 0;
  if (n0 <= 0 || n < n0) throw std::invalid_argument("extrapolate_kernel: need N >= N0 > 0");
  Extrapolated out;
  if (n == n0) {
    out.theta = theta;
    out.shared_modes = double(m);
    return out;
  }
  // float32 is much faster, but LAPACK's float workspace query (1 + 6m + 2m²,
  // returned as a float) is exact only below 2^24: about m <= 2800.
  const Eigensystem es = eigh_descending(theta, /*single=*/m <= 2800);
  const Eigen::VectorXd s = shared_fraction(es.vectors, g, classes, seed);
  const double r = double(n0) / double(n);
  // Θ' = r Θ_S + (1 - r) Σ_k w_k s_k v_k v_kᵀ over the shared modes; s_k < 1 %
  // counts as sample-specific (keeps the sum short: the tail of s is noise).
  std::vector<int64_t> shared;
  for (int64_t k = 0; k < m; ++k)
    if (s(k) >= 0.01 && es.values(k) > 0) shared.push_back(k);
  Eigen::MatrixXd Vs(m, int64_t(shared.size()));
  for (size_t j = 0; j < shared.size(); ++j)
    Vs.col(int64_t(j)) = es.vectors.col(shared[j]) * std::sqrt(es.values(shared[j]) * s(shared[j]));
  out.theta = r * theta;
  out.theta.selfadjointView<Eigen::Lower>().rankUpdate(Vs, 1.0 - r);
  out.theta.triangularView<Eigen::StrictlyUpper>() = out.theta.transpose();
  for (int64_t k : shared) out.shared_modes += s(k);
  return out;
}

// ---- The stage around it (stages.hpp): N0 -> N for a prediction -----------------

Problem restrict_problem(const Problem& p, const std::vector<int64_t>& pos) {
  const int64_t C = p.classes(), m = int64_t(pos.size());
  std::vector<int64_t> rows;
  for (int64_t i : pos)
    for (int64_t c = 0; c < C; ++c) rows.push_back(i * C + c);
  Problem q;
  q.loss = p.loss;
  // The kernel's block of the kept samples' rows and columns.
  auto block = [&](const Eigen::MatrixXd& t) {
    Eigen::MatrixXd out(m * C, m * C);
    for (int64_t b = 0; b < m * C; ++b)
      for (int64_t a = 0; a < m * C; ++a) out(a, b) = t(rows[size_t(a)], rows[size_t(b)]);
    return out;
  };
  q.theta = block(p.theta);
  if (p.theta_norm) q.theta_norm = std::make_shared<const Eigen::MatrixXd>(block(*p.theta_norm));
  auto take = [&](const Eigen::MatrixXd& x) {
    if (x.size() == 0) return Eigen::MatrixXd();
    Eigen::MatrixXd y(m, x.cols());
    for (int64_t r = 0; r < m; ++r) y.row(r) = x.row(pos[size_t(r)]);
    return y;
  };
  q.f0 = take(p.f0);
  q.jw0 = take(p.jw0);
  q.u0 = take(p.u0);
  q.y = take(p.y);
  for (int64_t i : pos) q.labels.push_back(p.labels[size_t(i)]);
  return q;
}

namespace {

// p with Θ extrapolated from its N0 samples to a training set of N, from the
// residual at p's starting outputs.
Problem extrapolated_problem(const Problem& p, int64_t N, uint64_t seed, double* shared_modes) {
  Problem q;
  Extrapolated x = extrapolate_kernel(p.theta, p.classes(), N, loss_gradient(p, p.f0), seed);
  q.theta = std::move(x.theta);
  // Gradient clipping reads the measured kernel of these samples (Problem::theta_norm).
  q.theta_norm = p.theta_norm ? p.theta_norm : std::make_shared<const Eigen::MatrixXd>(p.theta);
  q.f0 = p.f0;
  q.jw0 = p.jw0;
  q.u0 = p.u0;
  q.y = p.y;
  q.labels = p.labels;
  q.loss = p.loss;
  if (shared_modes) *shared_modes = x.shared_modes;
  return q;
}

}  // namespace

const std::pair<Problem, double>& extrapolated_at(ExtrapolatedByN& cache, const Problem& raw, int64_t N, uint64_t seed) {
  auto it = cache.find(N);
  if (it == cache.end()) {
    double shared = 0;
    Problem q = extrapolated_problem(raw, N, seed, &shared);
    it = cache.emplace(N, std::make_pair(std::move(q), shared)).first;
  }
  return it->second;
}

double extrapolation_correction(const Check& c, int64_t t0, int64_t n, int64_t n0, int64_t horizon) {
  if (c.from <= 0 || c.steps >= horizon || c.direct >= horizon || n <= n0) return 1;
  const double a = double(c.direct - t0), b = double(c.steps - t0);
  if (a <= 0 || b <= 0) return 1;
  const double e = std::log(double(n) / double(n0)) / std::log(double(n0) / double(c.from));
  return std::clamp(std::pow(a / b, e), 0.5, 2.0);
}

Curves time_warp(const Curves& cv, int64_t t0, double c) {
  if (c == 1 || cv.step.size() < 2) return cv;
  Curves w = cv;
  // Position of time x on cv's (ascending) step grid, for linear interpolation.
  auto value = [&](const std::vector<double>& ys, double x) {
    if (x >= double(cv.step.back())) return ys.back();
    const auto it = std::upper_bound(cv.step.begin(), cv.step.end(), int64_t(std::floor(x)));
    const size_t j = size_t(std::max<std::ptrdiff_t>(1, it - cv.step.begin()));
    const double x0 = double(cv.step[j - 1]), x1 = double(cv.step[j]);
    const double a = std::clamp((x - x0) / (x1 - x0), 0.0, 1.0);
    return ys[j - 1] + a * (ys[j] - ys[j - 1]);
  };
  for (size_t k = 0; k < cv.step.size(); ++k) {
    if (cv.step[k] <= t0) continue;
    const double x = double(t0) + double(cv.step[k] - t0) / c;
    w.loss[k] = value(cv.loss, x);
    w.acc[k] = value(cv.acc, x);
    for (size_t r = 0; r < cv.run_loss.size(); ++r) {
      w.run_loss[r][k] = value(cv.run_loss[r], x);
      w.run_acc[r][k] = value(cv.run_acc[r], x);
    }
  }
  return w;
}

Check extrapolation_check(const Problem& raw, const Hyper& h, const SimOptions& so, const Spec& s) {
  const int64_t n0 = raw.n();
  const int64_t least = std::max<int64_t>(32, 2 * std::min(h.batch_size, n0));
  int64_t n1 = n0 / 4;
  if (n1 < least) n1 = n0 / 2;
  if (n1 < least) return {};
  std::mt19937_64 rng = run_rng(s.seed, -2);
  std::vector<int64_t> pos = epoch_permutation(rng, n0);
  pos.resize(size_t(n1));
  std::sort(pos.begin(), pos.end());
  const Problem sub = extrapolated_problem(restrict_problem(raw, pos), n0, s.seed, nullptr);
  SimOptions o = so;
  o.runs = std::min(so.runs, 8);
  // so.progress sees both simulations as one: the runs on N0/4 -> N0, then those on N0.
  const auto report = so.progress;
  if (report) o.progress = [&report](int64_t done, int64_t total) { report(done, 2 * total); };
  const Curves a = simulate(sub, h, o);
  if (report) o.progress = [&report](int64_t done, int64_t total) { report(total + done, 2 * total); };
  const Curves b = simulate(raw, h, o);
  Check c;
  c.from = n1;
  c.steps = a.step[size_t(target_index(a.loss, a.acc, s.target, s.target_value))];
  c.direct = b.step[size_t(target_index(b.loss, b.acc, s.target, s.target_value))];
  if (!std::isfinite(a.loss.back()) || !std::isfinite(b.loss.back())) return {};
  c.error = std::fabs(double(c.steps - c.direct)) / double(std::max<int64_t>(1, c.direct));
  return c;
}

}  // namespace ttpred
