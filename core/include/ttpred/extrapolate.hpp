// Extrapolation from N0 samples to N (docs/method.md §5).
//
// Training on N samples, a tracked sample i is pushed by its own gradient once
// per epoch (when it is in a batch) and, at every step, by the others through
// Θ[i, j]. Simulating SGD on the N0 samples alone visits each one N/N0 times
// too often: the subset is memorised too fast. The N - N0 unseen samples act on
// the tracked ones only through what the two groups share: the components of
// the residual that are the same in every sample of the population (along the
// leading eigenvectors of Θ), not the sample-specific ones. So the kernel
// simulated on the N0 samples (batches drawn among them, as before) becomes
//
//   Θ' = V diag(w_k (N0/N + (1 - N0/N) s_k)) Vᵀ,   Θ_S = V diag(w_k) Vᵀ,
//
// where s_k ∈ [0, 1] is the fraction of the residual's projection on mode k
// that is shared by the population, measured by split halves: for random
// halves a, b of the samples, p_k = p_k^a + p_k^b and E[4 p_k^a p_k^b] is the
// squared shared part (sample-specific parts are independent across halves),
// averaged over splits and smoothed over neighbouring ranks. Mean dynamics:
// shared modes are learnt at the per-step rate of Θ_S/N0, the rest at N0/N of
// it (once per epoch of N). Θ' is positive semi-definite, equals Θ_S when
// N0 = N, and is simulated by the same exact SGD code (CE, momentum, schedules).
#pragma once
#include <Eigen/Dense>
#include <cstdint>

namespace ttpred {

// Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix
// (LAPACK through LibTorch); `single`: computed in float32 (5-8x faster at
// 2500 rows; relative accuracy ~1e-6, enough for the extrapolation). LAPACK's
// float workspace size is exact only for m <= ~2800: use it below that.
struct Eigensystem {
  Eigen::VectorXd values;
  Eigen::MatrixXd vectors;
};
Eigensystem eigh_descending(const Eigen::MatrixXd& a, bool single = false);

// s_k for each eigenvector (columns of V, rows grouped by sample: `classes`
// consecutive rows per sample) and residual g: the split-half shared fraction,
// averaged over `splits` seeded splits and smoothed over ranks [k/window, (k+1)·window).
Eigen::VectorXd shared_fraction(const Eigen::MatrixXd& V, const Eigen::VectorXd& g, int64_t classes,
                                uint64_t seed, int splits = 32, double window = 1.5);

struct Extrapolated {
  Eigen::MatrixXd theta;       // Θ' (n0·C square)
  double shared_modes = 0;     // Σ s_k: how many modes the population shares, as resolved by N0
};

// Θ' for N0 = theta.rows()/classes tracked samples of a training set of n (>= N0),
// from the residual g = ∂ℓ/∂f at the current outputs (n0·C, row i·C + c).
Extrapolated extrapolate_kernel(const Eigen::MatrixXd& theta, int64_t classes, int64_t n, const Eigen::VectorXd& g,
                                uint64_t seed);

}  // namespace ttpred
