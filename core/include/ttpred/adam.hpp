// Adam and AdamW on the linearized model (docs/method.md §3b).
//
// Two simulations of torch.optim.Adam / AdamW on f_lin(w) = f0 + J (w − w0):
//
//  - simulate_adam_weights: exact, in weight space, with J held explicitly
//    (M × D). The reference and the tests' oracle on small models.
//  - simulate_adam: the scalable one, in function space. Adam's step
//    −η m̂ / (√v̂ + ε) is taken as −η P_t m̂ with a diagonal preconditioner whose
//    shape P0 = 1 / (√v̄ + ε) comes from the second moments v̄ of the mini-batch
//    gradient at w0 (adam_kernel) and whose scale follows the simulated
//    gradient: P_t = P0 · sqrt(v_ref / v̂_t), v̂_t the bias-corrected EMA (β2) of
//    ‖∇L_B‖² = g_Bᵀ Θ_BB g_B and v_ref its expectation at the start. The first
//    moment is carried in function space, μ ← β1 μ + (1 − β1) Θ_P g_B, with
//    Θ_P = J P0 Jᵀ, so the step costs what an SGD step costs.
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <string>
#include <vector>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/model.hpp"

namespace ttpred {

// Adam's kernel at w0 on n samples.
struct Preconditioned {
  Eigen::MatrixXd theta;   // Θ_P = J P0 Jᵀ, (n·C) × (n·C), rows i·C + c
  Eigen::MatrixXd jpw0;    // n × C: J P0 w0 (Adam's L2 term)
  double p_ratio = 1;      // tr(Θ_P) / tr(Θ): P0's mean weighted by the Jacobian's columns
  std::string method;      // exact | countsketch
  int64_t dim = 0;
  double seconds = 0;
  // The optimizer's state where the simulation starts. At w0 (a fresh start) all
  // are empty. Re-linearized at w_K after K real steps (Hyper::t0 = K), carried
  // from them, and the bias corrections count from step 0. Levels are relative to
  // E‖∇L_B‖² at w_K, so the simulation carries them in its own units:
  Eigen::MatrixXd mu0;     // n × C: J P m, the first moment in function space
  double v_start = 0;      // Σ v̂_K: the second moment's memory of earlier (larger) gradients
  double v_level = 0;      // Σ of the v that P (theta's) is built from
};

// P0 = diag(1 / (√v̄ + ε)) with v̄ = mean² + (N − B) / (N − 1) · var / B of the
// per-sample loss gradients at w0 over samples idx (targets y: n × C, already
// smoothed), the per-coordinate second moment of a mini-batch gradient of B
// samples drawn from N; then Θ_P, exactly or with a seeded CountSketch of the
// P0^½-scaled Jacobian rows (GramOptions: projection, dim, seed).
Preconditioned adam_kernel(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
                           const Eigen::MatrixXd& y, Loss loss, int64_t batch, int64_t population, double eps,
                           const GramOptions& go);

// Adam's kernel at the model's current weights w_K after K real steps whose
// second moment is v (exp_avg_sq, FinetuneResult::adam_v), for a horizon of T.
// Adam's v̂ keeps averaging the gradients after K: at step t it is
// a(t) v̂_K + b(t) v̄ with a = β2^(t−K) bc2(K) / bc2(t), b = (1 − β2^(t−K)) / bc2(t)
// (bc2(t) = 1 − β2^t), v̄ the mini-batch gradient's second moment at w_K (as
// adam_kernel's). P is built from that mix at the middle of the rest, t = (K + T) / 2:
// a weight that no batch has moved yet (v̂_K = 0) gets the preconditioner its
// gradients will give it, not 1/ε. Sets v_start and v_level (mu0 is the caller's).
Preconditioned adam_kernel_after(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
                                 const Eigen::MatrixXd& y, Loss loss, int64_t batch, int64_t population, const Hyper& h,
                                 const std::vector<float>& v, int64_t K, int64_t T, const GramOptions& go);

// The explicit linearization of a small model on samples idx: J (n·C × D,
// rows i·C + c) and the trainable weights w0 (the oracle's inputs).
struct Linearization {
  Eigen::MatrixXd J;
  Eigen::VectorXd w0;
};
Linearization explicit_linearization(const Model& model, const Dataset& d, const std::vector<int64_t>& idx);

// Exact Adam/AdamW (h.optimizer) on the linearized model in weight space, with
// the simulator's batches (run r draws what simulate()'s run r draws).
Curves simulate_adam_weights(const Problem& p, const Linearization& lin, const Hyper& h, const SimOptions& opt);

// Adam/AdamW in function space (see above). p.theta is Θ (for ‖∇L_B‖²), k Adam's kernel.
Curves simulate_adam(const Problem& p, const Preconditioned& k, const Hyper& h, const SimOptions& opt);

}  // namespace ttpred
