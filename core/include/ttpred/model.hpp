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
};

struct Gram {
  Eigen::MatrixXd theta;  // (n·C) × (n·C), row/column i·C + c
  Eigen::MatrixXd f0;     // n × C logits at the pre-trained weights
  Eigen::MatrixXd jw0;    // n × C: J·w0 (the weight-decay pull in function space)
  int64_t n = 0, classes = 0, params = 0;
  std::string method;     // exact | countsketch
  int64_t dim = 0;        // D0 (countsketch) or D (exact)
  double seconds_jacobian = 0, seconds_gram = 0;
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
