// Linearized training dynamics in function space (pure Eigen, no LibTorch).
//
// With f_lin(x; w) = f(x; w0) + J(x)(w - w0), PyTorch's SGD
//   v <- m v + (∇L_B(w) + λ w),   w <- w - η v
// maps, on the n simulated samples, to the exact recurrence
//   u <- m u + Σ_{i∈B} Θ[:, i] g_i + λ (J w0 + F - F0),   F <- F - η u
// where F are the n·C outputs, u = J v, g_i = ∂L_B/∂f_i and Θ = J Jᵀ.
// This is SGD on the linearized model itself (no diffusion approximation);
// it costs O(M·B·C) per step with M = n·C.
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "ttpred/spec.hpp"

namespace ttpred {

struct Problem {
  Eigen::MatrixXd theta;        // M × M, index i·C + c
  // The measured Θ of these samples when `theta` is a kernel extrapolated to a larger
  // training set (extrapolate.hpp): a batch's gradient norm is that of its own
  // samples, so gradient clipping reads it here. Null: `theta` itself.
  std::shared_ptr<const Eigen::MatrixXd> theta_norm;
  Eigen::MatrixXd f0;           // n × C outputs at w0
  Eigen::MatrixXd jw0;          // n × C, J·w0 (used when weight decay > 0)
  Eigen::MatrixXd u0;           // n × C initial velocity J·v (empty: zero, a fresh optimizer)
  Eigen::MatrixXd y;            // n × C targets: one-hot labels, or float targets (mse)
  std::vector<int64_t> labels;  // n class ids (argmax of y for float targets)
  Loss loss = Loss::cross_entropy;
  int64_t n() const { return f0.rows(); }
  int64_t classes() const { return f0.cols(); }
};

struct Hyper {
  double lr = 0.01, momentum = 0.0, weight_decay = 0.0;
  bool nesterov = false;    // SGD: the step is η (G + m u) instead of η u
  Optimizer optimizer = Optimizer::sgd;  // finetune() runs all three; simulate() SGD only (adam.hpp: Adam)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam/AdamW
  // nn.CrossEntropyLoss(label_smoothing=α): the targets become (1 − α) y + α / C.
  double label_smoothing = 0;
  // torch.nn.utils.clip_grad_norm_(params, clip_norm) before each step: the batch
  // gradient ∇L_B (before weight decay) scaled by min(1, clip_norm / (‖∇L_B‖ + 1e-6)).
  // On the linearized model ‖∇L_B‖² = gᵀ Θ_BB g with g = ∂L_B/∂f, so the function-space
  // simulation clips exactly (Problem::theta_norm). 0: off.
  double clip_norm = 0;
  int64_t batch_size = 32;  // samples per optimizer step (the global batch), drawn among the n simulated
                            // samples; >= n means full batch
  // finetune(): the forward/backward passes of a step go in chunks of this many
  // samples (the per-GPU micro-batch: data-parallel replicas and gradient
  // accumulation run one after the other), each loss scaled by chunk / batch_size,
  // then one optimizer step. 0: one pass. simulate() needs no chunks: the mean
  // gradient over the step's samples is the same.
  int64_t micro_batch = 0;
  int64_t steps = 100;      // horizon T
  int64_t t0 = 0;           // steps already taken: simulate t0 .. T (re-linearization)
  int64_t horizon = 0;      // the schedule's horizon when it differs from `steps` (0: steps)
  double lr_at(int64_t t) const { return schedule.at(lr, t, horizon > 0 ? horizon : steps); }
  Schedule schedule;        // lr_t = schedule.at(lr, t, steps)
  // The kernel keeps changing as training progresses (docs/method.md §7): the
  // step uses Θ·s(t), s(t) = clamp(1 + growth·a(t), min_scale, max_scale),
  // a(t) = (progress_from - L_t) / progress_per ≥ 0 the progress since t0 in
  // units of the progress that produced `growth`. growth = 0: a fixed kernel.
  double growth = 0, progress_from = 0, progress_per = 1, min_scale = 0.25, max_scale = 4;
};

// The spec's optimizer and loss options for a horizon of `steps`: batch_size is the
// global batch (Spec::global_batch), micro_batch the per-GPU batch when they differ.
Hyper hyper_of_spec(const Spec& s, int64_t steps);

struct SimOptions {
  int runs = 16;           // independent SGD runs (1 for full batch)
  uint64_t seed = 0;
  int threads = 0;         // 0 = hardware concurrency
  std::function<void(int64_t done, int64_t total)> progress;  // runs finished
};

struct Curves {
  std::vector<int64_t> step;                 // recorded steps (t0..T, every `stride`)
  std::vector<double> loss, acc;             // mean over runs
  std::vector<std::vector<double>> run_loss, run_acc;
  int64_t stride = 1;
};
// Sets loss and acc to the mean of run_loss and run_acc at each recorded step.
void average_runs(Curves& cv);

// Targets of nn.CrossEntropyLoss(label_smoothing=α): (1 − α) y + α / C (y itself when α = 0).
Eigen::MatrixXd smoothed_targets(const Eigen::MatrixXd& y, double alpha);

// Loss and accuracy of outputs F (n × C) against the problem's targets, with
// nn.CrossEntropyLoss / nn.MSELoss (mean) semantics.
double loss_of(const Problem& p, const Eigen::MatrixXd& F);
double accuracy_of(const Problem& p, const Eigen::MatrixXd& F);
// ∂ℓ_i/∂f_i of every sample at outputs F (n × C), flattened (row i·C + c), per sample
// (not divided by the batch): softmax - y for cross-entropy, 2 (f - y) / C for MSE.
Eigen::VectorXd loss_gradient(const Problem& p, const Eigen::MatrixXd& F);

Curves simulate(const Problem& p, const Hyper& h, const SimOptions& opt);

// The shuffled order of one epoch (DataLoader(shuffle=True)); shared with the
// reference fine-tuner so both draw the same batches for the same seed.
std::vector<int64_t> epoch_permutation(std::mt19937_64& rng, int64_t n);
std::mt19937_64 run_rng(uint64_t seed, int run);

// T(ε) = min{t : |L_t - L_T| < ε}, as an index into `loss` (always found: t = T).
int64_t time_to_epsilon(const std::vector<double>& loss, double eps);
// First index with value <= v (`below`) or >= v; -1 when never.
int64_t first_reaching(const std::vector<double>& values, double v, bool below);

// The index at which a target is met: T(ε) for epsilon, else the first step
// with loss <= value / accuracy >= value. Not met: the last index, and
// *reached (when given) is set false.
int64_t target_index(const std::vector<double>& loss, const std::vector<double>& acc, TargetKind kind, double value,
                     bool* reached = nullptr);

// p-th percentile (0..100) with linear interpolation.
double percentile(std::vector<double> v, double p);

}  // namespace ttpred
