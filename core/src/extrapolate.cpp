#include "ttpred/extrapolate.hpp"

#include <algorithm>
#include <cmath>

namespace ttpred {

namespace {

// Least-squares slope and intercept of log y against log x over ranks [a, b) (1-based x).
std::pair<double, double> loglog_fit(const std::vector<double>& y, int64_t a, int64_t b) {
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int64_t n = 0;
  for (int64_t k = a; k < b; ++k) {
    if (!(y[size_t(k)] > 0)) continue;
    const double x = std::log(double(k + 1)), v = std::log(y[size_t(k)]);
    sx += x, sy += v, sxx += x * x, sxy += x * v;
    ++n;
  }
  if (n < 2) return {0.0, n ? sy / double(n) : 0.0};
  const double slope = (double(n) * sxy - sx * sy) / std::max(1e-300, double(n) * sxx - sx * sx);
  return {slope, (sy - slope * sx) / double(n)};
}

}  // namespace

Spectrum extrapolate_spectrum(const Spectrum& s, int64_t rows, int64_t from, int64_t keep) {
  const int64_t m0 = s.lambda.size();
  if (rows <= m0 || m0 < 32) return s;
  if (keep <= 0) keep = m0 / 4;
  if (from <= 0) from = m0 / 16;
  keep = std::clamp<int64_t>(keep, 2, m0);
  from = std::clamp<int64_t>(from, 0, keep - 2);
  std::vector<double> lam(s.lambda.data(), s.lambda.data() + m0);
  // Energy not yet explained after rank k: tail_k = Σ_{j>k} e_j.
  std::vector<double> tail(static_cast<size_t>(m0));
  double acc = 0;
  for (int64_t k = m0 - 1; k >= 0; --k) {
    tail[size_t(k)] = acc;
    acc += s.energy(k);
  }
  auto [la, lb] = loglog_fit(lam, from, keep);
  auto [ta, tb] = loglog_fit(tail, from, keep);
  Spectrum out;
  out.alpha = -la;
  out.gamma = -ta;
  out.lambda.resize(rows);
  out.energy.resize(rows);
  for (int64_t k = 0; k < keep; ++k) out.lambda(k) = s.lambda(k), out.energy(k) = s.energy(k);
  // Beyond `keep`: λ_k = exp(lb) (k+1)^la, and the remaining energy tail_keep
  // spread as the fitted tail decays (its differences), renormalised to sum to it.
  const double rest = tail[size_t(keep - 1)];
  auto fitted_tail = [&](int64_t k) { return std::exp(tb) * std::pow(double(k + 1), ta); };
  double sum = 0;
  for (int64_t k = keep; k < rows; ++k) {
    out.lambda(k) = std::exp(lb) * std::pow(double(k + 1), la);
    out.energy(k) = std::max(0.0, fitted_tail(k - 1) - fitted_tail(k));
    sum += out.energy(k);
  }
  // The residual of N samples lies entirely in the N·C modes of their kernel:
  // the remaining energy is spread over ranks keep .. N·C in the fitted shape.
  if (sum > 0)
    for (int64_t k = keep; k < rows; ++k) out.energy(k) *= rest / sum;
  return out;
}

std::vector<double> proxy_curve(const Spectrum& s, double a, int64_t steps) {
  std::vector<double> L(static_cast<size_t>(steps + 1), 0.0);
  for (Eigen::Index k = 0; k < s.lambda.size(); ++k) {
    const double e = s.energy(k);
    if (e <= 0) continue;
    // |1 - aλ| capped below 1 keeps the proxy a decay (unstable modes: see lr_stability).
    const double q = std::min(0.999999, std::fabs(1.0 - a * std::max(0.0, s.lambda(k))));
    const double q2 = q * q;
    double v = e;
    for (int64_t t = 0; t <= steps; ++t) {
      L[size_t(t)] += v;
      v *= q2;
      if (v < 1e-300) break;
    }
  }
  return L;
}

std::vector<double> time_warp(const std::vector<double>& sub, const std::vector<double>& full) {
  std::vector<double> w(full.size(), 0.0);
  size_t j = 0;
  for (size_t t = 0; t < full.size(); ++t) {
    // Both decrease; find j with sub[j] >= full[t] >= sub[j+1], never beyond t.
    while (j + 1 <= t && j + 1 < sub.size() && sub[j + 1] >= full[t]) ++j;
    double tp = double(j);
    if (j + 1 < sub.size() && j + 1 <= t && sub[j] > sub[j + 1]) {
      const double f = (sub[j] - full[t]) / (sub[j] - sub[j + 1]);
      tp += std::clamp(f, 0.0, 1.0);
    }
    w[t] = std::min(double(t), tp);
  }
  return w;
}

}  // namespace ttpred
