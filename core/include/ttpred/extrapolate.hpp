// Extrapolation from N0 samples to N through the spectrum of Θ (docs/method.md §5).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <vector>

namespace ttpred {

// Eigenvalues of Θ/n (descending) and the fraction of a residual's energy along
// each eigenvector (sums to 1).
struct Spectrum {
  Eigen::VectorXd lambda;
  Eigen::VectorXd energy;
  double alpha = 0, gamma = 0;  // fitted decays: λ_k ~ k^-alpha, energy tail ~ k^-gamma
};

// From Θ (n·C square) and a residual r (n·C): eigendecomposition through LAPACK.
Spectrum subset_spectrum(const Eigen::MatrixXd& theta, int64_t n, const Eigen::VectorXd& r);

// The spectrum of Θ/N for `rows` = N·C: the subset's own modes up to rank M0/4
// (where eigenvalues of Θ/N0 have converged), then power laws fitted on ranks
// M0/16 .. M0/4 for the eigenvalues and for the energy not yet explained.
// `from` and `keep` (default M0/16, M0/4) set the fit window; other windows
// measure how sensitive the extrapolation is (the band).
Spectrum extrapolate_spectrum(const Spectrum& s, int64_t rows, int64_t from = 0, int64_t keep = 0);

// A proxy loss decay, Σ_k e_k (1 - a λ_k)^(2t), t = 0..T (a = η_eff·κ): how fast
// gradient descent removes the residual's energy on that spectrum.
std::vector<double> proxy_curve(const Spectrum& s, double a, int64_t steps);

// For each t, the (fractional) t' <= t with sub(t') = full(t): the time on the
// subset's clock at which it has made the progress the full set makes by t.
std::vector<double> time_warp(const std::vector<double>& sub, const std::vector<double>& full);

}  // namespace ttpred
