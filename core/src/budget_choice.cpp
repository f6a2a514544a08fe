// engine.max_seconds (docs/spec.md): before the Gram stage, a cheap measured
// cost model of this prediction (a Θ on a few samples, a few real steps, a short
// simulation, one eigen-decomposition) prices each N0, and the largest N0 that
// fits the budget, never above the one asked for, is taken. When the spec leaves
// the Θ method to ttpred (projection auto, no trace-NTK) and the N0 asked for does
// not fit, a cheaper Θ (the CountSketch, then the trace-NTK) is priced too and taken
// when it fits a clearly larger N0. The stages themselves are untouched: only
// data.subset, engine.projection and engine.trace_ntk change.
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <thread>

#include "stages.hpp"
#include "ttpred/clock.hpp"
#include "ttpred/error.hpp"

namespace ttpred {

namespace {

constexpr double kSafety = 1.25;  // the model is coarse: keep a margin for what it leaves out
constexpr int64_t kProbe = 8;     // samples of the probe Θ
constexpr int64_t kTraceK = 2;    // output projections of a budget-chosen trace-NTK
// A cheaper Θ is taken only for at least this much more N0: the cost model's own
// margin (kSafety), so that a choice inside its error keeps the more exact Θ.
constexpr double kCheaperGain = kSafety;

// The simulated batch (in samples) at N0 = n: full batch in the real run is full batch on the N0.
int64_t sim_batch(const Spec& s, int64_t size, int64_t n) { return s.batch_size >= size ? n : std::min(s.batch_size, n); }

// Seconds of one real step on b samples, from the one measured on cm.step_batch.
double step_at(const CostModel& cm, int64_t b) {
  return cm.step * std::max(1.0, double(b) / double(std::max<int64_t>(1, cm.step_batch)));
}

}  // namespace

double predicted_seconds(const CostModel& cm, const std::vector<Spec>& specs, int64_t available, int64_t n) {
  const Spec& s0 = specs.front();
  const int64_t C = cm.classes;
  const bool trace = s0.trace_ntk > 0;
  const int64_t grows = trace ? n : n * C;  // rows of the Gram product
  GramOptions go = gram_options(s0, n * C, {}, false);
  const double deff = choose_projection(go, n * C, cm.params) == "exact" ? double(cm.params) : double(go.dim);
  const double theta = double(n) * cm.jacobian_per_sample + cm.gram_per_flop * 2.0 * double(grows) * grows * deff;
  const double M = double(n * C);
  double total = cm.elapsed + theta;  // Θ at w0 once (shared by a sweep's rows)
  for (const Spec& s : specs) {
    const int64_t size = s.data.size > 0 ? s.data.size : available;
    const int64_t horizon = s.steps > 0 ? s.steps
                                        : int64_t(std::ceil(s.epochs * double(size / std::max<int64_t>(1, s.batch_size)) - 1e-9));
    const int64_t b = sim_batch(s, size, n);
    const int runs = b >= n ? 1 : (s.runs > 0 ? s.runs : 16);
    const double par = std::max(1u, std::min<unsigned>(unsigned(runs), std::thread::hardware_concurrency()));
    // The simulation; with N0 < N, the extrapolation's self-check simulates twice more.
    const double sims = n < size && s.extrapolate ? 3.0 : 1.0;
    total += sims * cm.sim_per_unit * double(runs) / par * double(horizon) * M * double(b * C);
    const int64_t relin = relinearize_steps(s, horizon);
    int64_t k = relin > 0 ? relin : s.diagnose_steps >= 0 ? s.diagnose_steps : std::clamp<int64_t>(horizon / 10, 10, 50);
    k = std::min(k, horizon - 1);
    if (k > 0 && horizon <= 20000) {
      // The step and the N0's outputs after it; re-linearized, engine.prefix_runs runs of them.
      const double runs_k = relin > 0 ? double(std::max(1, s.prefix_runs)) : 1.0;
      total += runs_k * double(k) * (step_at(cm, b) + 0.5 * step_at(cm, n));
      if (relin > 0) total += theta;  // Θ again at w_K
    }
    if (n < size && s.extrapolate) total += 4.0 * cm.eig_per_flop * M * M * M;  // extrapolations and their check
    if (s.step_seconds <= 0) total += double((s.calibrate_steps > 0 ? s.calibrate_steps : 5) + 1) * step_at(cm, s.batch_size);
  }
  return kSafety * total;
}

BudgetChoice choose_n0(const CostModel& cm, const std::vector<Spec>& specs, int64_t available, int64_t requested,
                       int64_t smallest) {
  BudgetChoice c;
  c.max_seconds = specs.front().max_seconds;
  c.requested = requested;
  smallest = std::min(smallest, requested);
  c.smallest_seconds = predicted_seconds(cm, specs, available, smallest);
  if (c.smallest_seconds > c.max_seconds) return c;  // fits = false
  // The cost grows with N0: the largest N0 in [smallest, requested] that fits.
  int64_t lo = smallest, hi = requested;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (predicted_seconds(cm, specs, available, mid) <= c.max_seconds) lo = mid;
    else hi = mid - 1;
  }
  c.fits = true;
  c.subset = lo;
  c.predicted = predicted_seconds(cm, specs, available, lo);
  return c;
}

CostModel measure_costs(Model& model, const Dataset& d, const std::vector<Spec>& specs, int64_t C, int64_t pool,
                        double elapsed) {
  const double t0 = now();
  const Spec& s = specs.front();
  CostModel cm;
  cm.classes = C;
  cm.params = model.num_params();
  // Θ on a few samples, with the spec's Gram options (engine, trace-NTK) at their size.
  const std::vector<int64_t> idx = choose_subset(pool, std::min(kProbe, pool), s.seed);
  const int64_t m = int64_t(idx.size());
  GramOptions go = gram_options(s, m * C, {}, false);
  const Gram g = compute_gram(model, d, idx, go);
  cm.jacobian_per_sample = g.seconds_jacobian / double(m);
  const double grows = s.trace_ntk > 0 ? double(m) : double(m * C);
  cm.gram_per_flop = g.seconds_gram / (2.0 * grows * grows * double(std::max<int64_t>(1, g.dim)));
  // A few real steps (the first warms caches) at the job's batch, at most 32.
  cm.step_batch = std::min<int64_t>({s.batch_size, 32, pool});
  Hyper hs = hyper_of_spec(s, 1);
  hs.batch_size = cm.step_batch;
  hs.micro_batch = 0;
  auto secs = time_train_steps(model, d, s.loss, target_matrix(d, pool, C), hs, s.batchnorm_train, 2, s.seed);
  cm.step = *std::max_element(secs.begin(), secs.end());
  // A short linearized simulation on the probe Θ.
  Problem p;
  p.loss = s.loss;
  p.y = target_matrix(d, idx, C, &p.labels);
  p.theta = g.theta;
  p.f0 = g.f0;
  p.jw0 = Eigen::MatrixXd::Zero(g.f0.rows(), g.f0.cols());
  Hyper h = hyper_of_spec(s, 50);
  h.batch_size = std::min<int64_t>(s.batch_size, m);
  h.steps = 50;
  SimOptions so;
  so.runs = 1;
  so.threads = 1;
  double ts = now();
  simulate(p, h, so);
  cm.sim_per_unit = (now() - ts) / (50.0 * double(m * C) * double(h.batch_size * C));
  // One symmetric eigen-decomposition (what the extrapolation costs, ∝ M³).
  const int e = 200;
  Eigen::MatrixXd a = Eigen::MatrixXd::Random(e, e);
  a = a * a.transpose();
  ts = now();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(a);
  cm.eig_per_flop = (now() - ts) / (double(e) * e * e);
  cm.probe_seconds = now() - t0;
  cm.elapsed = elapsed + cm.probe_seconds;
  return cm;
}

static std::vector<Spec> with_kernel(std::vector<Spec> specs, const std::string& projection, int64_t trace) {
  for (Spec& f : specs) {
    f.projection = projection;
    f.trace_ntk = trace;
  }
  return specs;
}

// The spec leaves the Θ method to ttpred: projection auto, no sketch size, no trace-NTK.
static bool kernel_is_ours(const Spec& s) { return s.projection == "auto" && s.projection_dim <= 0 && s.trace_ntk <= 0; }

BudgetChoice pick_kernel(const CostModel& cm, const CostModel* trace_cm, const std::vector<Spec>& specs,
                         int64_t available, int64_t requested, int64_t smallest) {
  const Spec& s = specs.front();
  BudgetChoice best = choose_n0(cm, specs, available, requested, smallest);
  best.projection = s.projection;
  best.trace_ntk = s.trace_ntk;
  if ((best.fits && best.subset >= requested) || !kernel_is_ours(s)) return best;
  auto consider = [&](const CostModel& m, const std::string& projection, int64_t trace) {
    BudgetChoice c = choose_n0(m, with_kernel(specs, projection, trace), available, requested, smallest);
    const bool better = c.fits && (!best.fits || double(c.subset) >= kCheaperGain * double(best.subset));
    if (!better) return;
    c.projection = projection;
    c.trace_ntk = trace;
    c.kernel_changed = true;
    best = c;
  };
  // The CountSketch, where `auto` would take the exact Θ at the N0 asked for and the
  // model has more parameters than the sketch has dimensions.
  const GramOptions go = gram_options(s, requested * cm.classes, {}, false);
  if (choose_projection(go, requested * cm.classes, cm.params) == "exact" && cm.params > go.dim)
    consider(cm, "countsketch", 0);
  // The trace-NTK: kTraceK backward passes per sample instead of C and a Gram product
  // C² smaller (trace_cm: its Jacobian and product priced on the probe).
  if (trace_cm && cm.classes > kTraceK && !(best.fits && best.subset >= requested))
    consider(*trace_cm, best.kernel_changed ? best.projection : s.projection, kTraceK);
  return best;
}

BudgetChoice choose_kernel(const CostModel& cm, const std::vector<Spec>& specs, Model& model, const Dataset& d,
                           int64_t pool, int64_t requested, int64_t smallest) {
  const Spec& s = specs.front();
  BudgetChoice c = pick_kernel(cm, nullptr, specs, d.n, requested, smallest);
  c.probe_seconds = cm.probe_seconds;
  // The spec's own Θ or the CountSketch fits the N0 asked for, or no trace-NTK applies.
  if ((c.fits && c.subset >= requested) || !kernel_is_ours(s) || cm.classes <= kTraceK) return c;
  // Price the trace-NTK's Jacobian and product on the probe's samples.
  const double t0 = now();
  Spec probe = s;
  probe.trace_ntk = kTraceK;
  const std::vector<int64_t> idx = choose_subset(pool, std::min(kProbe, pool), s.seed);
  const int64_t m = int64_t(idx.size());
  const Gram g = compute_gram(model, d, idx, gram_options(probe, m * cm.classes, {}, false));
  CostModel base = cm;  // every candidate pays for the time this probe took
  base.elapsed += now() - t0;
  base.probe_seconds += now() - t0;
  CostModel ct = base;
  ct.jacobian_per_sample = g.seconds_jacobian / double(m);
  ct.gram_per_flop = g.seconds_gram / (2.0 * double(m) * double(m) * double(std::max<int64_t>(1, g.dim)));
  c = pick_kernel(base, &ct, specs, d.n, requested, smallest);
  c.probe_seconds = base.probe_seconds;
  return c;
}

std::vector<Spec> fit_budget(const std::vector<Spec>& specs, Model& model, const Dataset& d, int64_t C,
                             int64_t max_pool, double elapsed, BudgetChoice* out) {
  const Spec& s = specs.front();
  if (!(s.max_seconds > 0)) return specs;
  if (s.data.subset > max_pool) return specs;  // describe() reports it
  const int64_t requested = s.data.subset > 0 ? s.data.subset : default_subset(max_pool, C);
  const int64_t smallest = std::min<int64_t>(16, requested);
  const CostModel cm = measure_costs(model, d, specs, C, max_pool, elapsed);
  BudgetChoice c = choose_kernel(cm, specs, model, d, max_pool, std::min(requested, max_pool), smallest);
  c.requested = requested;
  if (!c.fits)
    throw Error(Exit::budget,
                located(s.file, s.line_of("engine.max_seconds"), "engine.max_seconds",
                        "the prediction cannot fit in " + fmt_num(s.max_seconds) + " s: even data.subset = " +
                            std::to_string(smallest) + " needs ~" + fmt_num(c.smallest_seconds) +
                            " s (loading and measuring took " + fmt_num(cm.elapsed) + " s); raise it or drop it"));
  std::vector<Spec> fitted = c.kernel_changed ? with_kernel(specs, c.projection, c.trace_ntk) : specs;
  for (Spec& f : fitted) {
    const int64_t pool = f.data.size > 0 ? std::min(f.data.size, d.n) : d.n;
    f.data.subset = std::min(c.subset, f.data.subset > 0 ? f.data.subset : default_subset(pool, C));
  }
  if (out) *out = c;
  return fitted;
}

}  // namespace ttpred
