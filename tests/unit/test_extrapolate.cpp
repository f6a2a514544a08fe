// Spectral extrapolation from N0 to N on synthetic spectra with a known law.
#include <doctest/doctest.h>

#include <cmath>

#include "ttpred/extrapolate.hpp"

using namespace ttpred;

namespace {

// λ_k = k^-a, residual energy e_k ∝ k^-b (normalised), over m modes.
Spectrum power_law(int64_t m, double a, double b) {
  Spectrum s;
  s.lambda.resize(m);
  s.energy.resize(m);
  for (int64_t k = 0; k < m; ++k) {
    s.lambda(k) = std::pow(double(k + 1), -a);
    s.energy(k) = std::pow(double(k + 1), -b);
  }
  s.energy /= s.energy.sum();
  return s;
}

}  // namespace

TEST_CASE("a power-law spectrum extrapolates to its own continuation") {
  const int64_t full = 4000, sub = 1000;
  Spectrum truth = power_law(full, 1.2, 1.5);
  // What a subset sees: the first modes, with the energy of the rest piled on its
  // last mode (the subset must still fit everything).
  Spectrum s;
  s.lambda = truth.lambda.head(sub);
  s.energy = truth.energy.head(sub);
  s.energy(sub - 1) += truth.energy.tail(full - sub).sum();
  Spectrum x = extrapolate_spectrum(s, full);
  REQUIRE(x.lambda.size() == full);
  CHECK(x.alpha == doctest::Approx(1.2).epsilon(0.02));
  CHECK(x.energy.sum() == doctest::Approx(1.0).epsilon(1e-9));
  for (int64_t k : {300, 1000, 2500, 3999}) {
    CAPTURE(k);
    CHECK(x.lambda(k) == doctest::Approx(truth.lambda(k)).epsilon(0.05));
  }
  // The loss decay on the extrapolated spectrum follows the full one, and the
  // subset's (which trains its piled-up tail too fast) does not, once the horizon
  // reaches the time scale of the subset's slowest mode, 1 / (a λ_N0).
  const double a = 0.5;
  const int64_t T = 8000;
  auto Lf = proxy_curve(truth, a, T), Lx = proxy_curve(x, a, T), Ls = proxy_curve(s, a, T);
  for (int64_t t : {50, 400, 2000, 8000}) {
    CAPTURE(t);
    CHECK(Lx[size_t(t)] == doctest::Approx(Lf[size_t(t)]).epsilon(0.1));
  }
  CHECK(std::fabs(Ls[T] - Lf[T]) > 3 * std::fabs(Lx[T] - Lf[T]));
  // Warping the subset's clock onto the full one: t' <= t, monotone.
  auto w = time_warp(Ls, Lx);
  for (size_t t = 1; t < w.size(); ++t) {
    CHECK(w[t] <= double(t));
    CHECK(w[t] >= w[t - 1]);
  }
  CHECK(w[T] < double(T));
}

TEST_CASE("no extrapolation when N0 covers N") {
  Spectrum s = power_law(100, 1.0, 1.0);
  Spectrum x = extrapolate_spectrum(s, 100);
  CHECK(x.lambda.size() == 100);
  CHECK(x.lambda.isApprox(s.lambda));
}
