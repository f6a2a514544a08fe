// A TorchScript model, evaluated in eval mode (BatchNorm uses its running
// statistics, Dropout is off). LibTorch stays behind the pimpl.
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ttpred/data.hpp"

namespace ttpred {

// Called as work advances: phase name, units done, units in all.
using Progress = std::function<void(const char* phase, int64_t done, int64_t total)>;

// "auto" picks cuda when a CUDA device is usable, else cpu. Throws Error(device)
// when "cuda" is asked for and none is usable.
std::string resolve_device(const std::string& requested);

class Model {
 public:
  Model(const std::string& path, const std::string& device);
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  const std::string& path() const;
  const std::string& device() const;
  int64_t num_params() const;  // trainable parameters (requires_grad)
  // Logits of samples `idx` (rows) as doubles; checks the output is [B, C].
  Eigen::MatrixXd forward(const Dataset& d, const std::vector<int64_t>& idx) const;
  // C, from a forward pass on the first sample(s). Throws Error(invalid).
  int64_t num_classes(const Dataset& d) const;

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

struct GramOptions {
  std::string projection = "auto";  // auto | exact | countsketch
  int64_t dim = 0;                  // D0 for countsketch; 0 = default
  uint64_t seed = 0;
  double max_exact_flops = 2e11;    // "auto" goes exact below this J·Jᵀ cost
  double max_jacobian_bytes = 4e9;  // and only when J fits in this
  Progress progress;
  // How the per-sample Jacobians are computed (docs/performance.md):
  //   loop  — the reference: one batch-1 forward and C autograd::grad calls per
  //           sample, each gradient concatenated, then copied/sketched (serial);
  //   fast  — the same passes, gradients written straight into J (no concat;
  //           CountSketch by a raw loop), samples spread over `threads` workers
  //           (each with one intra-op thread); equals loop to float rounding;
  //   vmap  — fast, with the C backward passes of a sample batched into one
  //           (LibTorch's legacy vmap, as torch.autograd.grad(is_grads_batched));
  //   auto  — fast. trace_k > 0 always runs the fast engine (loop has no trace mode).
  std::string method = "auto";
  int threads = 0;                  // workers for fast/vmap; 0 = hardware threads (max 8), 1 on CUDA
  // Trace-NTK (engine.trace_ntk: K): Θ ≈ K ⊗ I_C, K[i,l] = tr(J_i J_lᵀ)/C estimated
  // from trace_k Rademacher projections vᵀ f of the outputs (shared by all samples):
  // n·trace_k backward passes instead of n·C. Exact when Θ has that form. J·w0
  // then comes from a central difference along w0 (relative error ~1e-5 to 1e-4). 0 = off.
  int64_t trace_k = 0;
  bool symmetric_product = true;    // Θ = J Jᵀ by upper block products (≈ half the flops)
  // J·w0 (Gram::jw0). Only weight decay uses it; false leaves it zero, which saves
  // the trace-NTK's central difference (two forward passes over the N0 samples).
  bool jw0 = true;
  // Scale every Jacobian column d by param_scale[d] (D values; empty: none): Θ = J S² Jᵀ
  // and jw0 = J S² w0 for S = diag(param_scale). Adam's preconditioned kernel
  // (adam_kernel.cpp) runs the fast engine this way with S = P0^½. Not with trace_k.
  std::vector<float> param_scale;
};

struct Gram {
  Eigen::MatrixXd theta;  // (n·C) × (n·C), row/column i·C + c
  Eigen::MatrixXd f0;     // n × C logits at the pre-trained weights
  Eigen::MatrixXd jw0;    // n × C: J·w0 (the weight-decay pull in function space)
  int64_t n = 0, classes = 0, params = 0;
  std::string method;     // exact | countsketch
  int64_t dim = 0;        // D0 (countsketch) or D (exact)
  double seconds_jacobian = 0, seconds_gram = 0;
  std::string engine;     // loop | fast | vmap (GramOptions::method as resolved)
  int threads = 1;        // workers used
  int64_t trace_k = 0;    // > 0: Θ = kernel ⊗ I_C from trace_k output projections
  Eigen::MatrixXd kernel; // n × n K of the trace-NTK (empty otherwise)
  bool cached = false;    // loaded from the Θ cache (ttpred/cache.hpp)
  double trace_unscaled = 0;  // with param_scale: Σ ‖J row‖² before the scale (tr Θ of the unscaled J)
};

// Per-sample output Jacobians J_i = ∂f(x_i)/∂w (C × D) of samples `idx`, and
// Θ = J Jᵀ, exactly or through a seeded CountSketch of the gradients (an
// unbiased estimate that never forms a D0 × D matrix).
Gram compute_gram(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
                  const GramOptions& opt);

// Which method "auto" chooses for n·C rows and D parameters.
std::string choose_projection(const GramOptions& opt, int64_t rows, int64_t params);

// True when the BLAS behind LibTorch looks like the slow reference one.
bool reference_blas_suspected();

}  // namespace ttpred
