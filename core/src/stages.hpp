// The stages of one prediction (docs/method.md), each in its own file; estimate.cpp runs them:
//
//   kernel.cpp       Θ at w0 on the N0 samples: subset, Jacobians, Gram matrix, cache    (§2)
//   relinearize.cpp  K real steps from w0: the drift diagnosis and Θ at w_K             (§7)
//   extrapolate.cpp  Θ extrapolated from N0 to N, and its self-check on the job         (§5)
//   dynamics.cpp     the linearized SGD simulation in function space                    (§3)
//   band.cpp         T from the predicted curve, its band, the warnings on it           (§4, §8)
//   seconds.cpp      seconds per step                                                   (§4)
//
// Internal to ttpred_core (not installed): the public entry points are in ttpred/estimate.hpp.
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ttpred/adam.hpp"
#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/estimate.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"
#include "ttpred/spec.hpp"

namespace ttpred {

// What one prediction works on: the model, the data, and the pool of samples it may use.
struct Job {
  const Spec& spec;
  Model& model;
  const Dataset& data;
  int64_t pool = 0;                    // samples at hand (the first `pool` of the file)
  const Eigen::MatrixXd& pool_targets;  // their target matrix (pool × C)
  const EstimateOptions& opt;
};

// ---- extrapolate.cpp: N0 -> N -------------------------------------------------
// N -> (a problem with Θ extrapolated to N, its shared modes), computed once per N.
using ExtrapolatedByN = std::map<int64_t, std::pair<Problem, double>>;
// The problem restricted to samples at positions `pos` (ascending).
Problem restrict_problem(const Problem& p, const std::vector<int64_t>& pos);
// p with Θ extrapolated from its N0 samples to a training set of N, from the
// residual at p's starting outputs; from `cache` when it was computed before.
const std::pair<Problem, double>& extrapolated_at(ExtrapolatedByN& cache, const Problem& raw, int64_t N, uint64_t seed);
// The extrapolation checked on the job itself: from N1 = N0/4 (or N0/2) of the
// N0 samples, extrapolated to N0, against the simulation on all N0.
struct Check {
  int64_t from = 0, steps = 0, direct = 0;
  double error = 0;
};
Check extrapolation_check(const Problem& raw, const Hyper& h, const SimOptions& so, const Spec& s);
// The check's signed error carried from N1 -> N0 over to N0 -> N: the time
// after t0 of the target on all N0 over the one extrapolated from N1, to the
// power ln(N/N0) / ln(N0/N1) (the error grows with the log of the ratio), in
// [0.5, 2]; 1 when the check has no answer (no check, a target not reached).
double extrapolation_correction(const Check& c, int64_t t0, int64_t n, int64_t n0, int64_t horizon);
// cv with its time after t0 stretched by c: L'(t) = L(t0 + (t - t0)/c), the
// last value held beyond the horizon.
Curves time_warp(const Curves& cv, int64_t t0, double c);

// ---- kernel.cpp: Θ at w0 --------------------------------------------------------
// What depends on the model and the data subset only: shared by every
// hyper-parameter combination of a sweep.
struct Kernel {
  Problem prob;
  std::vector<int64_t> idx;  // the N0 samples
  std::string method;
  int64_t dim = 0, rows = 0;
  double lambda_max = 0;  // of Θ
  double seconds_jacobian = 0, seconds_gram = 0;
  bool used = false;      // the first prediction using it carries its cost
  bool cached = false;
  ExtrapolatedByN extrapolated;  // Θ at w0 extrapolated
  std::string engine;
  int threads = 1;
  int64_t trace_k = 0;
  bool jw0 = true;        // J·w0 computed (some prediction has weight decay); else zero
};
// The seeded uniform subset of N0 among the first `pool` samples (all when N0 = pool).
std::vector<int64_t> choose_subset(int64_t pool, int64_t n0, uint64_t seed);
// The N0 samples of a spec among the first `pool`: its first n0 (the data are a
// stratified random draw, load_dataset), or with data.draw: first (the file's
// order) choose_subset's. Nested: the draw of n contains the draw of any n0 < n.
std::vector<int64_t> draw_subset(int64_t pool, int64_t n0, const Spec& s);
GramOptions gram_options(const Spec& s, int64_t rows, const EstimateOptions& opt, bool jw0);
double top_eigenvalue(const Eigen::MatrixXd& a);  // of a symmetric PSD matrix (power iteration)
Kernel make_kernel(const Model& model, const Dataset& d, const std::vector<int64_t>& idx, const Spec& s, int64_t C,
                   const EstimateOptions& opt, bool jw0);

// ---- relinearize.cpp: the real prefix -----------------------------------------
// Θ at w_K after K real steps with given optimizer values: the job's own, or
// engine.relinearize_with's (a sweep's shared re-linearization). Computed once
// per distinct values, used by every row that re-linearizes with them.
// Its extrapolation's self-check too (from the residual at that w_K, with
// those values): a property of the kernel, shared like it.
struct AnchorKernel {
  Problem raw;      // Θ at w_K on the N0 samples, J·w0, the outputs f_K and velocity u_K there
  Hyper after;      // the rest of the horizon with those values (t0 = K)
  int64_t steps = 0;
  ExtrapolatedByN extrapolated;  // Θ at w_K extrapolated
  bool checked = false;
  Check check;
  bool failed = false;  // its real steps diverged: no re-linearization with these values
  // How the kernel changed over its K real steps, along the residual at w_K:
  // growth = gᵀ Θ_K g / gᵀ Θ_0 g - 1, per `progress` = L_0 - L_K of those steps.
  double growth = 0, progress = 0;
  double lambda_max = 0;  // of Θ_K
  // Adam/AdamW: Θ_P at w_K with the real second moment, and the optimizer's state there.
  std::shared_ptr<Preconditioned> adam;
  // The tail's samples: rows of the prefix's outputs (FinetuneResult::f_last, the
  // tracked N0 then the wide sample) that `raw` holds, and their sample ids. The
  // tracked N0 themselves (0 … N0 − 1), or N0 drawn from the wide sample stratified
  // by class and by their loss at w_K (tail_subset).
  std::vector<int64_t> rows, idx;
  bool stratified = false;  // other samples than the tracked N0
  // More tail parts: disjoint draws of N0 from the wide sample, simulated too and averaged.
  std::vector<std::unique_ptr<AnchorKernel>> more;
};
Eigen::MatrixXd select_rows(const Eigen::MatrixXd& f, const std::vector<int64_t>& rows);
// `parts` disjoint draws of n0 rows of f (outputs at w_K of the samples `ids`,
// targets pool_targets.row(id)), each stratified: every class its share of n0
// (largest remainders), drawn systematically along the class's losses sorted from
// a seeded offset, the parts interleaved. Rows ascending. Needs n0 × parts ≤ rows.
// A part holds fewer than n0 rows when no class can give every part one more
// (e.g. 4 parts of 500 from classes of 401, 399 and 3 × 400: 499 each).
std::vector<std::vector<int64_t>> stratified_rows(const Eigen::MatrixXd& f, const std::vector<int64_t>& ids,
                                                  const Eigen::MatrixXd& pool_targets, Loss loss, int64_t n0,
                                                  uint64_t seed, int parts = 1);
// pool, N0, extrapolating, lr, momentum, weight decay, batch, K, horizon
using AnchorKey = std::tuple<int64_t, int64_t, bool, double, double, double, int64_t, int64_t, int64_t>;
using Anchors = std::map<AnchorKey, std::unique_ptr<AnchorKernel>>;

// K = clamp(round(0.5 T), 1, 500) unless the spec sets engine.relinearize (docs/method.md §7).
int64_t relinearize_steps(const Spec& s, int64_t horizon);

// The real prefix: its curve on the N0 and the drift against linearized run 0.
struct Prefix {
  FinetuneResult real;          // the K real steps (the model is back at w0 afterwards)
  AnchorKernel* anchor = nullptr;  // Θ at w_K to simulate the rest from (null: none)
  double drift = 0;
  int64_t steps = 0;            // K
  int runs = 1;                 // real prefixes averaged into `real` (engine.prefix_runs)
  double seconds = 0;           // wall-clock, extrapolation excluded
  // Whether the tail simulated on `part` starts from another level than the corrected
  // prefix ends at (splice's level_at_k): other samples, or an averaged prefix.
  bool tail_level_differs(const AnchorKernel& part) const { return part.stratified || runs > 1; }
};
// The batch seed of real prefix q (0: the spec's seed, the simulation's run 0).
uint64_t prefix_seed(uint64_t seed, int q);
// Averages the curves of other real prefixes into `real` (the same steps logged):
// the tracked samples' loss and accuracy at every step; the wide sample's at the
// wide steps keeps `real`'s ratio to its tracked samples (the N0's sampling error).
// `real`'s outputs and weights are unchanged. Runs that diverged or logged other
// steps are left out; returns the number averaged.
int average_prefixes(FinetuneResult& real, const std::vector<FinetuneResult>& others);
// Runs k real SGD steps from w0 with the batches of simulated run 0 (`lin`: the
// linearized run 0 over them), measures the drift and, when relinearizing,
// provides Θ at w_K (from `anchors` when another prediction computed it). The
// model is back at w0 afterwards.
Prefix real_prefix(const Job& job, const Kernel& K, Prediction& P, const Hyper& h, int64_t k, bool relinearize,
                   bool extrap, const Curves& lin, Anchors& anchors);
// The N0 tracked samples' sampling error, measured in the prefix against a wider
// sample of the pool (FinetuneResult::wide_*): the wide sample's loss over the
// N0's, and its error rate (1 − accuracy) over theirs, at those steps, linear in
// log(1 + t) between them and constant after the last (K). None measured: 1.
struct SampleCorrection {
  explicit SampleCorrection(const FinetuneResult& real);
  double loss_factor(double t) const;         // the wide sample's loss over the N0's at step t
  double error_factor(double t) const;        // the same for the error rate 1 − accuracy
  double loss(double l, double t) const;      // l × loss_factor(t)
  double accuracy(double a, double t) const;  // scaled_accuracy(a, error_factor(t))
  // 1 − (1 − a) × factor, in [0, 1]; a itself when nothing was measured.
  double scaled_accuracy(double a, double factor) const;
  std::vector<double> x, loss_ratio, err_ratio;  // x = log(1 + step)
};
// The predicted curve: the real prefix up to K, then the simulation from w_K,
// both corrected from the N0 to the wide sample (SampleCorrection).
// With `level_at_k`, the tail starts from another level than its own first point:
// it simulates other samples than the tracked N0 (stratified), or the prefix is the
// mean of several runs and the tail continues the first; it is scaled to start
// where the corrected prefix ends (the wide sample's loss at K, else the prefix's).
Curves splice(const FinetuneResult& real, const Curves& tail, int64_t k, bool level_at_k = false);
// Curves of the same steps, their runs pooled: the mean over all runs.
Curves merge_tails(const std::vector<Curves>& parts);

// ---- band.cpp: T and its band -------------------------------------------------
// Sets P.steps, reached, the band, the final loss, the warnings on them and the
// decimated curves from the predicted curves cv and the extrapolation check.
void target_and_band(Prediction& P, const Curves& cv, const Check& chk, const Spec& s, int curve_points);

// ---- budget_choice.cpp: engine.max_seconds --------------------------------------
// The measured cost model of one prediction (or a sweep's) as a function of N0.
struct CostModel {
  double elapsed = 0;              // seconds already spent (loading, the probe itself)
  double probe_seconds = 0;        // of which the probe
  double jacobian_per_sample = 0;  // per-sample Jacobian (all its rows, sketched or not)
  double gram_per_flop = 0;        // of the product J·Jᵀ
  double step = 0;                 // one real SGD step on step_batch samples
  int64_t step_batch = 1;
  double sim_per_unit = 0;         // simulation, per step · Θ row · batch row
  double eig_per_flop = 0;         // symmetric eigen-decomposition, per M³
  int64_t params = 0, classes = 1;
};
// Whole-prediction seconds at N0 = n (safety margin included) for the specs
// of one run (a sweep's rows share Θ at w0); `available` = samples in the file.
double predicted_seconds(const CostModel& cm, const std::vector<Spec>& specs, int64_t available, int64_t n);
// The largest N0 in [smallest, requested] whose predicted seconds fit
// specs.front().max_seconds; fits = false when even `smallest` does not.
BudgetChoice choose_n0(const CostModel& cm, const std::vector<Spec>& specs, int64_t available, int64_t requested,
                       int64_t smallest);
CostModel measure_costs(Model& model, const Dataset& d, const std::vector<Spec>& specs, int64_t C, int64_t pool,
                        double elapsed);
// choose_n0 with the spec's own Θ method, and, when the spec leaves it to ttpred
// (projection auto, no projection_dim, no trace-NTK) and the N0 asked for does not
// fit, with the CountSketch and the trace-NTK (their Jacobian priced on the probe's
// samples of `pool`): the one that fits the largest N0, a cheaper Θ only for a
// clearly larger one (BudgetChoice::projection, trace_ntk, kernel_changed).
BudgetChoice choose_kernel(const CostModel& cm, const std::vector<Spec>& specs, Model& model, const Dataset& d,
                           int64_t pool, int64_t requested, int64_t smallest);
// Its choice from the cost models (trace_cm: the trace-NTK's, or null: not a candidate).
BudgetChoice pick_kernel(const CostModel& cm, const CostModel* trace_cm, const std::vector<Spec>& specs,
                         int64_t available, int64_t requested, int64_t smallest);
// The specs with data.subset set to the N0 that fits engine.max_seconds (unchanged
// without one); throws Error(Exit::budget) when even N0 = 16 cannot fit.
std::vector<Spec> fit_budget(const std::vector<Spec>& specs, Model& model, const Dataset& d, int64_t C,
                             int64_t max_pool, double elapsed, BudgetChoice* out);

// ---- seconds.cpp: seconds per step ----------------------------------------------
struct StepTime {
  double median = 0, lo = 0, hi = 0, seconds = 0;
  bool used = false;
};
StepTime time_steps(Model& model, const Dataset& d, const Spec& s, int64_t C);

std::string fmt_num(double v);

}  // namespace ttpred
