// The job spec: what fine-tuning run to predict (YAML, see docs/spec.md).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ttpred {

enum class Loss { cross_entropy, mse };
enum class TargetKind { epsilon, loss, accuracy };
// torch.optim.SGD / Adam / AdamW.
enum class Optimizer { sgd, adam, adamw };

const char* to_string(Loss l);
const char* to_string(Optimizer o);
const char* to_string(TargetKind k);

// Learning-rate schedule, stepped after every optimizer step (PyTorch schedulers
// called once per iteration). lr_t for t = 0 .. T-1, with base rate lr:
//   constant: lr
//   step:     lr * gamma^floor(t / step_size)                  (StepLR)
//   cosine:   min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2    (CosineAnnealingLR, T_max = T)
//   linear:   lr + (min_lr - lr) t / T                          (LinearLR to min_lr)
//   table:    lr * factors[min(t, size - 1)]   (any scheduler, replayed by ttpred-export)
// then a linear warm-up multiplies by (t + 1) / warmup_steps for t < warmup_steps.
struct Schedule {
  std::string type = "constant";
  int64_t warmup_steps = 0;
  int64_t step_size = 0;
  double gamma = 0.1;
  double min_lr = 0.0;
  std::vector<double> factors;  // table: lr_t / lr, one per step from t = 0
  double at(double lr, int64_t t, int64_t horizon) const;
};

struct DataSpec {
  std::string path;                  // torch.save'd file, .npy, .npz, .csv or an ImageFolder directory
  std::string images, labels;        // or a pair of IDX files (.gz or raw); labels also: y of an x .npy
  std::string label;                 // CSV: the label column ("" = "label")
  std::vector<int64_t> classes;      // keep these labels, remapped to 0..K-1
  std::string layout = "auto";       // auto | nchw | nhwc (of [N, ., ., .] x)
  int64_t channels = 0;              // 1 | 3: convert images to this many channels (0 = as read; ImageFolder: 3)
  int64_t resize_h = 0, resize_w = 0;  // > 0: bilinear resize of images to [resize_h, resize_w]
  bool normalize = false;            // (x - mean[c]) / std[c] after scaling uint8 / images to [0,1]
  std::vector<double> mean, std;     // one value, or one per channel
  bool draw_first = false;           // data.draw: first (the file's first N) instead of stratified
  int64_t size = 0;                  // N; 0 = all samples in the file
  int64_t subset = 0;                // N0; 0 = default (min(N, 500))
};

struct Spec {
  std::string file;                  // absolute path of the spec ("" when built in code)
  std::string dir;                   // directory that relative paths are resolved against
  std::string model;
  bool batchnorm_train = false;      // model.batchnorm: train (module.train() while training) | eval
  DataSpec data;
  Loss loss = Loss::cross_entropy;
  double label_smoothing = 0.0;      // loss.label_smoothing (nn.CrossEntropyLoss(label_smoothing=))
  Optimizer optimizer = Optimizer::sgd;  // optimizer.name
  double lr = 0.0;
  Schedule schedule;
  double momentum = 0.0;             // SGD
  bool nesterov = false;             // SGD
  double beta1 = 0.9, beta2 = 0.999; // Adam/AdamW betas
  double eps = 1e-8;                 // Adam/AdamW eps
  double weight_decay = 0.0;         // SGD/Adam: L2 added to the gradient; AdamW: decoupled
  // optimizer.clip_grad_norm: torch.nn.utils.clip_grad_norm_(params, max_norm) before
  // every step (the 2-norm of the whole batch gradient, before weight decay); 0 = off.
  double clip_grad_norm = 0.0;
  int64_t batch_size = 0;            // per GPU and micro-batch
  int64_t accumulation_steps = 1;    // micro-batches per optimizer step
  // Samples per optimizer step: batch_size × max(1, gpus) × accumulation_steps.
  int64_t global_batch() const { return batch_size * (gpus > 1 ? gpus : 1) * accumulation_steps; }
  int64_t steps = 0;                 // horizon T in steps ...
  double epochs = 0.0;               // ... or in epochs
  TargetKind target = TargetKind::epsilon;
  double target_value = 0.0;
  // engine
  std::string device = "auto";       // auto | cpu | cuda
  std::string projection = "auto";   // auto | exact | countsketch
  int64_t projection_dim = 0;        // D0 for countsketch (0 = default)
  double max_seconds = 0;            // > 0: fit the whole prediction in this many seconds (engine.max_seconds)
  int64_t trace_ntk = 0;             // > 0: trace-NTK Θ ≈ K ⊗ I_C from this many output projections
  int runs = 0;                      // simulated SGD runs (0 = default)
  bool extrapolate = true;           // N0 < N: extrapolate Θ to N (engine.extrapolate; extrapolate.hpp)
  int64_t relinearize = -1;          // K real steps, then Θ again at w_K (-1 = auto: clamp(round(f T), 1, cap); 0 = off)
  double relinearize_fraction = 0.5;  // engine.relinearize_fraction: f of the automatic K (0 < f <= 1)
  int64_t relinearize_cap = 500;      // engine.relinearize_cap: the automatic K's cap (>= 1)
  int64_t diagnose_steps = -1;       // real steps compared with the linearized run (-1 = auto, 0 = off)
  bool extrapolation_correction = false;  // stretch the extrapolated curve by its self-check (engine.extrapolation_correction; off since session 12)
  bool kernel_growth = false;        // after re-linearizing, the kernel keeps changing with the progress (engine.kernel_growth)
  // engine.tail_subset: after re-linearizing at w_K with N0 < N, the tail is simulated on N0
  // samples of the wide sample drawn stratified by class and by their loss at w_K
  // (true, "stratified"), or on the tracked N0 drawn at w0 ("tracked").
  bool tail_stratified = true;
  int tail_parts = 1;                // engine.tail_parts: disjoint draws of N0 for the tail, averaged (1..4)
  // engine.prefix_runs: re-linearized, the real prefix is run this many times with
  // different batches and its curve averaged (1..4; Θ at w_K from the first run).
  int prefix_runs = 1;
  // engine.relinearize_with: Θ at w_K from K real steps with these optimizer
  // values instead of the job's own (the job's own K steps still give the
  // outputs the rest is simulated from). A sweep sets it to the spec's own
  // values in every row (engine.sweep_kernel: shared), so one Θ at w_K prices
  // all rows.
  struct Anchor {
    bool set = false;
    double lr = 0, momentum = 0, weight_decay = 0;
    int64_t batch_size = 0;
    bool same_values(const Anchor& o) const {
      return lr == o.lr && momentum == o.momentum && weight_decay == o.weight_decay && batch_size == o.batch_size;
    }
  } relinearize_with;
  Anchor optimizer_values() const { return {true, lr, momentum, weight_decay, batch_size}; }  // the job's own
  bool sweep_kernel_shared = true;   // engine.sweep_kernel: shared (true) | each
  uint64_t seed = 0;
  // hardware
  double step_seconds = 0.0;         // > 0: take it instead of timing real steps
  int64_t gpus = 1;                  // data-parallel replicas (DDP), each with batch_size samples per
                                     // micro-batch; also the devices of gpu_hours (0: a CPU job, one replica)
  int calibrate_steps = 0;           // 0 = default

  // sweep: key -> values, in spec order (lr, batch_size, momentum, weight_decay,
  // data.size, training.epochs, training.steps).
  std::vector<std::pair<std::string, std::vector<double>>> sweep;

  // YAML line of each key that was read ("optimizer.lr" -> 12), for messages.
  std::map<std::string, int> lines;

  std::string resolve(const std::string& path) const;  // relative to `dir`
  int line_of(const std::string& key) const;
  // Error(Exit::spec) naming file, line and key.
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
};

// Parse and check a spec file. Throws Error(spec|input).
Spec load_spec(const std::string& path);
// Parse from a string (for tests); `file` names it in messages, `dir` resolves paths.
Spec parse_spec(const std::string& yaml, const std::string& file, const std::string& dir);
// Check values that do not need the data (lr > 0, ...). Called by load_spec and again
// after command-line overrides.
void validate(const Spec& spec);
// One spec per combination of the sweep's values (cartesian product, the first
// key varying slowest); a spec without a sweep gives itself. Each is validated.
std::vector<Spec> expand_sweep(const Spec& spec);

// "32", or "32 x 4 gpus x 2 accumulation_steps = 256" (the global batch, for messages).
std::string batch_text(const Spec& spec);

// The embedded default spec shipped with ttpred (source tree or installed copy).
std::string default_spec_path();

}  // namespace ttpred
