// The whole prediction: spec -> model + data -> Θ -> linearized dynamics -> T(ε), seconds.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ttpred/model.hpp"
#include "ttpred/spec.hpp"

namespace ttpred {

// engine.max_seconds: what the estimator chose to fit the budget (budget_choice.cpp).
struct BudgetChoice {
  double max_seconds = 0;       // 0: no budget
  bool fits = false;
  int64_t requested = 0;        // N0 asked for (data.subset or its default)
  int64_t subset = 0;           // N0 chosen
  double predicted = 0;         // predicted seconds of the whole prediction at that N0
  double smallest_seconds = 0;  // predicted at the smallest N0
  double probe_seconds = 0;     // spent measuring the cost model
  // How Θ is computed at that N0: the spec's own engine.projection / trace_ntk, or,
  // when the spec leaves them to ttpred (projection auto, no trace-NTK) and a cheaper
  // Θ fits a clearly larger N0, the CountSketch or the trace-NTK (kTraceK projections).
  std::string projection;       // auto | exact | countsketch
  int64_t trace_ntk = 0;
  bool kernel_changed = false;  // projection or trace_ntk differ from the spec's
};

struct Prediction {
  Spec spec;
  std::string device;
  int64_t params = 0, classes = 0;
  int64_t size = 0, available = 0, subset = 0;  // N, samples in the file, N0
  int64_t steps_per_epoch = 0, horizon = 0;
  int64_t steps = 0;          // T(ε) (or the loss/accuracy target)
  bool reached = true;
  bool diverged = false;      // the linearized dynamics blow up: no prediction
  int64_t steps_lo = 0, steps_hi = 0;
  double method_lo = 1, method_hi = 1;  // the method's measured error factors in the band (band.cpp)
  double initial_loss = 0, final_loss = 0, final_lo = 0, final_hi = 0, final_accuracy = 0;
  double step_seconds = 0, step_lo = 0, step_hi = 0;
  std::string step_source;    // measured | spec
  double drift = 0;           // max |L_real - L_lin| over the first drift_steps, / the loss decrease
  int64_t drift_steps = 0;    // real SGD steps compared (0: no diagnosis)
  int64_t relinearized_at = 0;  // > 0: Θ recomputed at the weights after this many real steps
  int prefix_runs = 0;          // re-linearized: real prefixes averaged (engine.prefix_runs); 0: none
  double kernel_growth = 0;     // engine.kernel_growth: gᵀΘ_K g / gᵀΘ_0 g - 1 over the prefix
  // The tail's samples after w_K (engine.tail_subset / tail_parts): "stratified" (drawn at
  // w_K by class and loss from the wide sample), "tracked" (the N0 drawn at w0); empty:
  // not re-linearized with N0 < N. tail_parts: disjoint draws simulated and averaged.
  std::string tail_subset;
  int tail_parts = 0;
  // > 0: that Θ came from this many real steps with spec.relinearize_with's
  // optimizer values (a sweep's shared kernel), not the job's own.
  int64_t relinearized_with_steps = 0;
  // N0 < N: simulated on the kernel extrapolated to N (extrapolate.hpp).
  bool extrapolated = false;
  double shared_modes = 0;      // Σ s_k of the (last) extrapolated kernel
  // Self-check of the extrapolation on this job: from check_from samples of the
  // N0 to all N0, T predicted by extrapolation vs simulated on the N0 directly.
  int64_t check_from = 0, check_steps = 0, check_direct = 0;
  double check_error = 0;       // |check_steps - check_direct| / check_direct
  double extrapolation_factor = 1;  // the self-check's signed error carried to N: time after K stretched by it
  double extrapolation_width = 0;  // relative band half-width it adds: check_error · ln(N/N0)/ln(N0/check_from)
  double lr_stability = 0;    // η_eff·λ_max / 2 of the linearized full-batch map (> 1: unstable)
  std::vector<int64_t> curve_step;
  std::vector<double> curve_loss, curve_lo, curve_hi, curve_acc;
  std::string gram_method;
  std::string gram_engine;
  bool gram_cached = false;
  int gram_threads = 1;
  int64_t gram_trace_k = 0;
  int64_t gram_dim = 0, gram_rows = 0;
  BudgetChoice budget;        // engine.max_seconds (max_seconds = 0: none)
  std::vector<std::pair<std::string, double>> timing;  // phase -> seconds, in order
  std::vector<std::string> warnings;
};

struct EstimateOptions {
  Progress progress;   // may be empty
  int curve_points = 200;
  bool use_cache = false;  // load/store Θ at w0 in the cache (ttpred/cache.hpp); the CLI turns it on
};

// Default number of samples for Θ: min(N, max(16, 2500 / C)).
int64_t default_subset(int64_t n, int64_t classes);

Prediction estimate(const Spec& spec, const EstimateOptions& opt = {});
// Many configurations of one model and data (a sweep): Θ is computed once per
// distinct (N, N0), Θ at w_K once per engine.relinearize_with (expand_sweep
// sets it: the shared kernel) and the step time once per batch size; each
// result equals what estimate() gives for that configuration alone. Timings of
// shared phases are charged to the first prediction that uses them.
std::vector<Prediction> estimate_all(const std::vector<Spec>& specs, const EstimateOptions& opt = {});

std::string to_json(const Prediction& p);   // docs/json.md
std::string to_table(const Prediction& p);  // the human summary
// A sweep: {"runs": [...], "total_gpu_hours", ...} / a table / CSV / an SVG plot.
std::string sweep_json(const std::vector<Prediction>& ps, double seconds);
std::string sweep_table(const std::vector<Prediction>& ps, double seconds);
std::string sweep_csv(const std::vector<Prediction>& ps);
std::string curves_svg(const std::vector<Prediction>& ps);

}  // namespace ttpred
