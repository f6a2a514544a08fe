// Real fine-tuning with LibTorch (the ground truth) and step-time calibration.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/model.hpp"
#include "ttpred/spec.hpp"

namespace ttpred {

struct FinetuneOptions {
  uint64_t seed = 0;
  int64_t log_every = 1;     // evaluate the whole-training-set loss every k steps
  int64_t log_from = 0;      // ... counted from this step (none before it but step 0)
  // > 1: log at geometrically spaced steps instead (1, 2, ..., each next one at
  // least log_ratio times the last): the start of a curve at a resolution
  // relative to the step, in few evaluations.
  double log_ratio = 0;
  bool train_mode = false;   // module.train() (BatchNorm batch stats, Dropout on); default eval()
  bool keep_outputs = false; // fill FinetuneResult::f_prev / f_last
  // Adam/AdamW: keep the second moment of the gradient (FinetuneResult::adam_v),
  // accumulated as torch.optim.Adam does (exp_avg_sq, not bias-corrected).
  bool keep_adam_moments = false;
  // Positions in idx on which the loss, accuracy and outputs are evaluated
  // (training still draws its batches among all of idx); empty = all of idx.
  std::vector<int64_t> track;
  // Positions in idx evaluated too at the steps `wide_at` (ascending; 0 allowed):
  // a larger sample of the training set than `track`, which the curve on the
  // tracked samples is corrected by (FinetuneResult::wide_*). Empty: none; the
  // steps of wide_at are then still logged (another run's wide steps, to average with).
  std::vector<int64_t> wide;
  std::vector<int64_t> wide_at;
  // keep_outputs with `wide`: f_prev / f_last hold the tracked samples' outputs,
  // then the wide ones' (in `wide`'s order).
  bool wide_outputs = false;
  // Intra-op threads while training (0: leave LibTorch's setting). The prediction's
  // own real steps use all cores; the ground truth and the step timing keep the
  // default, which is what the user's job gets.
  int threads = 0;
  Progress progress;
};

struct FinetuneResult {
  std::vector<int64_t> step;
  std::vector<double> loss, acc;  // whole training set (or the tracked samples), at `step`
  // FinetuneOptions::wide: the loss and accuracy on the tracked samples and on
  // tracked + wide together, at the steps of wide_at (each also in `step`).
  std::vector<int64_t> wide_step;
  std::vector<double> wide_tracked_loss, wide_tracked_acc, wide_loss, wide_acc;
  double seconds_total = 0, seconds_train = 0;  // all / SGD steps only (no evaluation)
  int64_t steps = 0;
  Eigen::MatrixXd f_prev, f_last;  // outputs on the (tracked [+ wide]) samples at steps T-1 and T (keep_outputs)
  // keep_adam_moments: exp_avg_sq after the last step, one entry per trainable
  // weight (flattened in parameter order), the gradient as Adam saw it (clipped,
  // with Adam's L2 term); and the squared norm of that gradient at each step.
  std::vector<float> adam_v;
  std::vector<double> grad_sq;
};

// The trainable weights of a model, to restore after training it in place.
struct Weights {
  std::shared_ptr<void> data;
};
Weights save_weights(const Model& model);
void restore_weights(Model& model, const Weights& w);

// Trains `model` (in place) on samples idx of d for h.steps optimizer steps with
// PyTorch semantics: torch.optim.SGD(lr, momentum, weight_decay, nesterov),
// Adam or AdamW(lr, betas, eps, weight_decay) as h.optimizer says, batches of
// B = h.batch_size drawn without replacement, reshuffled each epoch, drop_last;
// mean CE (label_smoothing) or MSE loss; the passes in chunks of h.micro_batch.
// The batch order for a seed equals the simulator's run 0 (epoch_permutation).
FinetuneResult finetune(Model& model, const Dataset& d, const std::vector<int64_t>& idx, Loss loss,
                        const Eigen::MatrixXd& targets, const Hyper& h, const FinetuneOptions& opt);

// Seconds per real optimizer step of h (its optimizer, h.batch_size samples in
// chunks of h.micro_batch) on the model's device: k timed steps after one
// warm-up; the weights are restored afterwards.
std::vector<double> time_train_steps(Model& model, const Dataset& d, Loss loss, const Eigen::MatrixXd& targets,
                                     const Hyper& h, bool train_mode, int k, uint64_t seed);

}  // namespace ttpred
