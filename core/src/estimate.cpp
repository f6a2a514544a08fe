#include "ttpred/estimate.hpp"
#include "ttpred/clock.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/cache.hpp"
#include "ttpred/error.hpp"
#include "ttpred/extrapolate.hpp"
#include "ttpred/finetune.hpp"

namespace ttpred {

namespace {

std::string fmt_num(double v) {
  std::ostringstream o;
  o.precision(4);
  o << v;
  return o.str();
}

// Largest eigenvalue of a symmetric PSD matrix by power iteration.
double top_eigenvalue(const Eigen::MatrixXd& a) {
  Eigen::VectorXd v = Eigen::VectorXd::Ones(a.rows()).normalized();
  double lambda = 0;
  for (int it = 0; it < 100; ++it) {
    Eigen::VectorXd w = a * v;
    double l = v.dot(w), nw = w.norm();
    if (nw == 0) return 0;
    v = w / nw;
    if (std::fabs(l - lambda) <= 1e-6 * std::fabs(l)) return l;
    lambda = l;
  }
  return lambda;
}

// N -> (a problem with Θ extrapolated to N, its shared modes), computed once per N.
using ExtrapolatedByN = std::map<int64_t, std::pair<Problem, double>>;

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

struct StepTime {
  double median = 0, lo = 0, hi = 0, seconds = 0;
  bool used = false;
};

// The seeded uniform subset of N0 among the first `pool` samples (all when N0 = pool).
std::vector<int64_t> choose_subset(int64_t pool, int64_t n0, uint64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(pool));
  for (int64_t i = 0; i < pool; ++i) idx[size_t(i)] = i;
  if (n0 < pool) {
    std::mt19937_64 rng = run_rng(seed, -1);
    for (int64_t i = 0; i < n0; ++i) {
      int64_t j = i + int64_t(rng() % uint64_t(pool - i));
      std::swap(idx[size_t(i)], idx[size_t(j)]);
    }
    idx.resize(size_t(n0));
    std::sort(idx.begin(), idx.end());
  }
  return idx;
}

// jw0: J·w0 is needed (some prediction has weight decay).
GramOptions gram_options(const Spec& s, int64_t rows, const EstimateOptions& opt, bool jw0) {
  GramOptions go;
  go.jw0 = jw0;
  go.projection = s.projection;
  // Default sketch: at least 4 dimensions per row of Θ (its noise falls as rows / D0).
  go.dim = s.projection_dim > 0 ? s.projection_dim : std::max<int64_t>(8192, 4 * rows);
  go.seed = s.seed;
  go.trace_k = s.trace_ntk;
  go.progress = opt.progress;
  return go;
}

// Value of a piecewise-linear curve (xs ascending) at x.
double interpolate(const std::vector<int64_t>& xs, const std::vector<double>& ys, double x) {
  if (x <= double(xs.front())) return ys.front();
  for (size_t i = 1; i < xs.size(); ++i)
    if (x <= double(xs[i])) {
      const double a = (x - double(xs[i - 1])) / double(xs[i] - xs[i - 1]);
      return ys[i - 1] + a * (ys[i] - ys[i - 1]);
    }
  return ys.back();
}

// The problem restricted to samples at positions `pos` (ascending).
Problem restrict_problem(const Problem& p, const std::vector<int64_t>& pos) {
  const int64_t C = p.classes(), m = int64_t(pos.size());
  std::vector<int64_t> rows;
  for (int64_t i : pos)
    for (int64_t c = 0; c < C; ++c) rows.push_back(i * C + c);
  Problem q;
  q.loss = p.loss;
  q.theta.resize(m * C, m * C);
  for (int64_t b = 0; b < m * C; ++b)
    for (int64_t a = 0; a < m * C; ++a) q.theta(a, b) = p.theta(rows[size_t(a)], rows[size_t(b)]);
  auto take = [&](const Eigen::MatrixXd& x) {
    if (x.size() == 0) return Eigen::MatrixXd();
    Eigen::MatrixXd y(m, x.cols());
    for (int64_t r = 0; r < m; ++r) y.row(r) = x.row(pos[size_t(r)]);
    return y;
  };
  q.f0 = take(p.f0);
  q.jw0 = take(p.jw0);
  q.u0 = take(p.u0);
  q.y = take(p.y);
  for (int64_t i : pos) q.labels.push_back(p.labels[size_t(i)]);
  return q;
}

// p with Θ extrapolated from its N0 samples to a training set of N (extrapolate.hpp),
// from the residual at p's starting outputs.
Problem extrapolated_problem(const Problem& p, int64_t N, uint64_t seed, double* shared_modes) {
  Problem q;
  Extrapolated x = extrapolate_kernel(p.theta, p.classes(), N, loss_gradient(p, p.f0), seed);
  q.theta = std::move(x.theta);
  q.f0 = p.f0;
  q.jw0 = p.jw0;
  q.u0 = p.u0;
  q.y = p.y;
  q.labels = p.labels;
  q.loss = p.loss;
  if (shared_modes) *shared_modes = x.shared_modes;
  return q;
}

// raw extrapolated to N (from the residual at raw's outputs), from `cache` when it was before.
const std::pair<Problem, double>& extrapolated_at(ExtrapolatedByN& cache, const Problem& raw, int64_t N, uint64_t seed) {
  auto it = cache.find(N);
  if (it == cache.end()) {
    double shared = 0;
    Problem q = extrapolated_problem(raw, N, seed, &shared);
    it = cache.emplace(N, std::make_pair(std::move(q), shared)).first;
  }
  return it->second;
}

// The extrapolation checked on the job itself: from N1 = N0/4 (or N0/2) of the
// N0 samples, extrapolated to N0, against the simulation on all N0.
struct Check {
  int64_t from = 0, steps = 0, direct = 0;
  double error = 0;
};
Check extrapolation_check(const Problem& raw, const Hyper& h, const SimOptions& so, const Spec& s) {
  const int64_t n0 = raw.n();
  const int64_t least = std::max<int64_t>(32, 2 * std::min(h.batch_size, n0));
  int64_t n1 = n0 / 4;
  if (n1 < least) n1 = n0 / 2;
  if (n1 < least) return {};
  std::mt19937_64 rng = run_rng(s.seed, -2);
  std::vector<int64_t> pos = epoch_permutation(rng, n0);
  pos.resize(size_t(n1));
  std::sort(pos.begin(), pos.end());
  const Problem sub = extrapolated_problem(restrict_problem(raw, pos), n0, s.seed, nullptr);
  SimOptions o = so;
  o.runs = std::min(so.runs, 8);
  o.progress = nullptr;
  const Curves a = simulate(sub, h, o), b = simulate(raw, h, o);
  Check c;
  c.from = n1;
  c.steps = a.step[size_t(target_index(a.loss, a.acc, s.target, s.target_value))];
  c.direct = b.step[size_t(target_index(b.loss, b.acc, s.target, s.target_value))];
  if (!std::isfinite(a.loss.back()) || !std::isfinite(b.loss.back())) return {};
  c.error = std::fabs(double(c.steps - c.direct)) / double(std::max<int64_t>(1, c.direct));
  return c;
}

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
};
// pool, N0, extrapolating, lr, momentum, weight decay, batch, K, horizon
using AnchorKey = std::tuple<int64_t, int64_t, bool, double, double, double, int64_t, int64_t, int64_t>;

Kernel make_kernel(const Model& model, const Dataset& d, const std::vector<int64_t>& idx, const Spec& s,
                   int64_t C, const EstimateOptions& opt, bool jw0) {
  Kernel k;
  k.jw0 = jw0;
  k.idx = idx;
  Problem& prob = k.prob;
  const int64_t n = int64_t(idx.size());
  prob.loss = s.loss;
  prob.y = target_matrix(d, idx, C, &prob.labels);
  // Θ at the pre-trained weights depends only on the model, the samples and the
  // projection: a resubmission or another hyper-parameter set reuses it (cache.hpp).
  const GramOptions go = gram_options(s, n * C, opt, jw0);
  const std::string key = opt.use_cache ? gram_cache_key(s.model, d, idx, go, model.device()) : std::string();
  std::optional<Gram> hit = key.empty() ? std::nullopt : cache_load(key);
  Gram g = hit ? std::move(*hit) : compute_gram(model, d, idx, go);
  if (!hit && !key.empty()) cache_store(key, g);
  k.cached = bool(hit);
  k.engine = g.engine;
  k.threads = g.threads;
  k.trace_k = g.trace_k;
  k.method = g.method;
  k.dim = g.dim;
  k.rows = g.n * g.classes;
  k.seconds_jacobian = g.seconds_jacobian;
  k.seconds_gram = g.seconds_gram;
  prob.theta = std::move(g.theta);
  prob.f0 = std::move(g.f0);
  prob.jw0 = std::move(g.jw0);
  k.lambda_max = top_eigenvalue(prob.theta);
  return k;
}

StepTime time_steps(Model& model, const Dataset& d, const Spec& s, int64_t C) {
  StepTime st;
  const double t0 = now();
  if (s.step_seconds > 0) {
    st.median = st.lo = st.hi = s.step_seconds;
  } else {
    auto secs = time_sgd_steps(model, d, s.loss, target_matrix(d, d.n, C), s.lr, s.momentum, s.weight_decay, s.batch_size,
                               s.calibrate_steps > 0 ? s.calibrate_steps : 5, s.seed);
    st.median = percentile(secs, 50);
    st.lo = percentile(secs, 10);
    st.hi = percentile(secs, 90);
  }
  st.seconds = now() - t0;
  return st;
}

}  // namespace

int64_t default_subset(int64_t n, int64_t classes) {
  return std::min<int64_t>(n, std::max<int64_t>(16, 2500 / std::max<int64_t>(1, classes)));
}

std::vector<Prediction> estimate_all(const std::vector<Spec>& specs, const EstimateOptions& opt) {
  if (specs.empty()) return {};
  const double t_begin = now();
  const Spec& first = specs.front();
  double t0 = now();
  Model model(first.model, first.device);
  // Load once, as many samples as the largest N asks for: each combination takes its first N.
  Spec load = first;
  for (const Spec& s : specs) load.data.size = s.data.size > 0 && load.data.size > 0 ? std::max(load.data.size, s.data.size) : 0;
  int64_t max_pool = 0;
  Dataset d = load_dataset(load);
  for (const Spec& s : specs) max_pool = std::max(max_pool, s.data.size > 0 ? std::min(s.data.size, d.n) : d.n);
  const int64_t C = model.num_classes(d);
  if (!d.has_labels() && first.loss == Loss::cross_entropy)
    first.fail("loss", "cross_entropy needs int64 class ids in y; " + d.source + " holds float targets (use mse)");
  const Eigen::MatrixXd pool_targets = target_matrix(d, max_pool, C);  // also validates every label
  const double load_seconds = now() - t0;

  // J·w0 only matters with weight decay (the trace-NTK pays two forward passes for it).
  bool any_weight_decay = false;
  for (const Spec& s : specs) any_weight_decay |= s.weight_decay > 0;
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Kernel>> kernels;  // (pool, N0) -> Θ
  std::map<int64_t, StepTime> step_times;                                  // batch size -> s/step
  std::map<AnchorKey, std::unique_ptr<AnchorKernel>> anchors;               // shared re-linearizations
  std::vector<Prediction> out;
  for (size_t si = 0; si < specs.size(); ++si) {
    const Spec& s = specs[si];
    const double t_spec = now();
    Prediction P;
    P.spec = s;
    P.device = model.device();
    P.params = model.num_params();
    P.classes = C;
    P.available = d.n;
    const int64_t pool = s.data.size > 0 ? std::min(s.data.size, d.n) : d.n;
    P.size = s.data.size > 0 ? s.data.size : d.n;
    if (P.size > d.n)
      P.warnings.push_back("data.size (" + std::to_string(P.size) + ") exceeds the " + std::to_string(d.n) +
                           " samples in " + d.source + ": predicting for a larger dataset than the one at hand");
    if (s.batch_size > P.size)
      s.fail("optimizer.batch_size", "(" + std::to_string(s.batch_size) + ") exceeds the " +
                                         std::to_string(P.size) + " training samples");
    P.subset = s.data.subset > 0 ? s.data.subset : default_subset(pool, C);
    if (P.subset > pool)
      s.fail("data.subset", "(" + std::to_string(P.subset) + ") exceeds the " + std::to_string(pool) +
                                " samples available in " + d.source);
    P.steps_per_epoch = P.size / s.batch_size;
    P.horizon = s.steps > 0 ? s.steps : int64_t(std::ceil(s.epochs * double(P.steps_per_epoch) - 1e-9));
    if (P.horizon <= 0) s.fail("training.epochs", "gives a horizon of 0 steps");
    if (si == 0) P.timing.emplace_back("load", load_seconds);

    auto& kp = kernels[{pool, P.subset}];
    if (!kp) kp = std::make_unique<Kernel>(make_kernel(model, d, choose_subset(pool, P.subset, s.seed), s, C, opt, any_weight_decay));
    Kernel& K = *kp;
    P.timing.emplace_back("jacobian", K.used ? 0.0 : K.seconds_jacobian);
    P.timing.emplace_back("gram", K.used ? 0.0 : K.seconds_gram);
    K.used = true;
    P.gram_method = K.method;
    P.gram_cached = K.cached;
    P.gram_engine = K.engine;
    P.gram_threads = K.threads;
    P.gram_trace_k = K.trace_k;
    P.gram_dim = K.dim;
    P.gram_rows = K.rows;
    if (K.method == "countsketch" && K.dim < 4 * K.rows)
      P.warnings.push_back("Gram matrix estimated with a CountSketch of dimension " + std::to_string(K.dim) +
                           " < 4 x its " + std::to_string(K.rows) + " rows: raise engine.projection_dim " +
                           "for less noise");

    t0 = now();
    const Problem& prob = K.prob;
    // N0 < N: simulate on the kernel extrapolated to N (extrapolate.hpp); it
    // depends on N, not on the optimizer, so a sweep shares it.
    const bool extrap = P.subset < P.size && s.extrapolate;
    double extrapolate_seconds = 0;  // also inside "diagnose" when re-linearizing: not counted twice
    // The problem simulated from w0: Θ at w0, extrapolated when N0 < N (computed
    // on first use: with re-linearization only the Θ at w_K is extrapolated).
    auto sim_w0 = [&]() -> const Problem& {
      if (!extrap) return prob;
      const double t_ex = now();
      const auto& [q, shared] = extrapolated_at(K.extrapolated, prob, P.size, s.seed);
      extrapolate_seconds += now() - t_ex;
      P.extrapolated = true;
      P.shared_modes = shared;
      return q;
    };
    AnchorKernel* A = nullptr;  // Θ at w_K when re-linearizing
    Hyper h;
    h.lr = s.lr;
    h.schedule = s.schedule;
    h.momentum = s.momentum;
    h.weight_decay = s.weight_decay;
    // Full batch in the real run is full batch on the subset; otherwise the
    // mini-batch is drawn among the N0 simulated samples (mean-field: the expected
    // step Θ_S g_S / N0 estimates Θ g / N).
    h.batch_size = s.batch_size >= P.size ? P.subset : s.batch_size;
    h.steps = P.horizon;
    SimOptions so;
    so.runs = s.runs > 0 ? s.runs : 16;
    so.seed = s.seed;
    if (opt.progress) so.progress = [&](int64_t done, int64_t total) { opt.progress("simulate", done, total); };
    // Default (measured in docs/accuracy.md): re-linearize after K = round(T/10)
    // real steps, at most 50 so the cost stays bounded on long horizons.
    const int64_t relin = s.relinearize >= 0 ? s.relinearize
                                             : std::clamp<int64_t>(int64_t(std::llround(0.1 * double(P.horizon))), 1, 50);
    int64_t kdiag = relin > 0 ? relin
                    : s.diagnose_steps >= 0 ? s.diagnose_steps
                                            : std::clamp<int64_t>(P.horizon / 10, 10, 50);
    kdiag = std::min(kdiag, P.horizon - 1);
    const bool every_step = P.horizon <= 20000;  // simulate() records every step (stride 1)
    const bool diagnose = kdiag > 0 && every_step;
    // When re-linearizing, the pure simulation only serves the diagnosis: run 0
    // up to K. The whole pure prediction is simulated only if re-linearization
    // cannot be used (below).
    Curves cv;
    if (diagnose && relin > 0) {
      Hyper hk = h;
      hk.steps = kdiag;
      hk.horizon = P.horizon;
      SimOptions one = so;
      one.runs = 1;
      cv = simulate(prob, hk, one);  // the N0 alone: only the diagnosis's first K steps
    } else {
      cv = simulate(sim_w0(), h, so);
    }

    // Diagnosis: k real SGD steps on the N0 samples with run 0's batches, against
    // the linearized run 0 (same batches: the gap is the network's nonlinearity).
    // When extrapolating to N, the real steps draw their batches among all the
    // samples at hand (the real training's first steps) and track the N0: the
    // gap then also holds SGD noise.
    // With engine.relinearize = k, Θ is then recomputed at the weights w_k and the
    // rest of the horizon simulated from the real outputs (docs/method.md §7).
    double diagnose_seconds = 0;
    // engine.relinearize_with (a sweep's shared kernel): Θ at w_K comes from K
    // real steps with those optimizer values; the job's own K steps give the
    // outputs the rest is simulated from.
    const Spec::Anchor& an = s.relinearize_with;
    const bool anchored = relin > 0 && an.set && !an.same_values(s.optimizer_values());
    if (diagnose) {
      const double t_diag = now(), ex_before = extrapolate_seconds;
      const Weights w0 = save_weights(model);
      struct Restore {
        Model& m;
        const Weights& w;
        ~Restore() { restore_weights(m, w); }
      } restore{model, w0};
      // K real steps from w0 with hyper-parameters hk (the model is left at w_K).
      // When extrapolating to N they draw their batches among all samples at hand
      // and track the N0; otherwise they train on the N0 alone.
      auto real_steps = [&](const Hyper& hk, int64_t log_every) {
        FinetuneOptions fo;
        fo.seed = s.seed;
        fo.threads = std::clamp(int(std::thread::hardware_concurrency()), 1, 8);
        fo.log_every = log_every;
        fo.keep_outputs = relin > 0;
        if (!extrap) return finetune(model, d, K.idx, s.loss, prob.y, hk, fo);
        std::vector<int64_t> all(static_cast<size_t>(pool));
        for (int64_t i = 0; i < pool; ++i) all[size_t(i)] = i;
        fo.track = K.idx;  // idx holds sample ids < pool, which are their positions in `all`
        return finetune(model, d, all, s.loss, pool_targets, hk, fo);
      };
      Hyper hk = h;
      hk.steps = kdiag;
      hk.horizon = P.horizon;
      // The real prefix becomes part of the predicted curve (interpolated between
      // about 8 evaluations of the N0 samples: each costs a forward pass over them).
      const FinetuneResult real = real_steps(hk, std::max<int64_t>(1, relin > 0 ? kdiag / 8 : kdiag / 10));
      double worst = 0, lowest = real.loss.front();
      for (size_t j = 0; j < real.step.size(); ++j) {
        const double lin = cv.run_loss[0][size_t(real.step[j])];
        if (std::isfinite(lin) && std::isfinite(real.loss[j])) worst = std::max(worst, std::fabs(real.loss[j] - lin));
        if (std::isfinite(real.loss[j])) lowest = std::min(lowest, real.loss[j]);
      }
      P.drift = worst / std::max(real.loss.front() - lowest, 1e-12);
      P.drift_steps = kdiag;
      // Θ at w_K: after the job's own K steps (the model is there now), or after
      // K_a real steps with engine.relinearize_with's values (K_a by the same
      // rule, on their own horizon). Once per distinct values: a sweep's rows
      // share it, and the row of the spec's own values shares it with them.
      if (relin > 0 && std::isfinite(real.loss.back())) {
        Hyper ha = hk;
        if (anchored) {
          ha.lr = an.lr;
          ha.momentum = an.momentum;
          ha.weight_decay = an.weight_decay;
          ha.batch_size = an.batch_size >= P.size ? P.subset : an.batch_size;
          ha.horizon = s.steps > 0 ? s.steps
                                   : int64_t(std::ceil(s.epochs * double(P.size / std::min(an.batch_size, P.size)) - 1e-9));
          ha.steps = std::min(s.relinearize >= 0 ? s.relinearize
                                                 : std::clamp<int64_t>(int64_t(std::llround(0.1 * double(ha.horizon))), 1, 50),
                              ha.horizon - 1);
        }
        auto& slot = anchors[AnchorKey{pool, P.subset, extrap, ha.lr, ha.momentum, ha.weight_decay, ha.batch_size,
                                       ha.steps, ha.horizon}];
        if (!slot && ha.steps > 0) {
          slot = std::make_unique<AnchorKernel>();
          FinetuneResult ra;
          if (anchored) {
            restore_weights(model, w0);
            ra = real_steps(ha, ha.steps);  // only w_K, f_K and f_{K-1} are used
          }
          const FinetuneResult& at = anchored ? ra : real;
          AnchorKernel* a = slot.get();
          a->failed = !std::isfinite(at.loss.back());
          if (!a->failed) {
            Gram ga = compute_gram(model, d, K.idx, gram_options(s, K.rows, opt, K.jw0));
            a->raw = prob;
            a->raw.theta = std::move(ga.theta);
            a->raw.jw0 = std::move(ga.jw0);
            a->raw.f0 = at.f_last;
            // J v_K in function space, from the last real step: F_K = F_{K-1} - η J v_K.
            a->raw.u0 = (at.f_prev - at.f_last) / ha.lr_at(ha.steps - 1);
            a->after = h;
            a->after.lr = ha.lr;
            a->after.momentum = ha.momentum;
            a->after.weight_decay = ha.weight_decay;
            a->after.batch_size = ha.batch_size;
            a->after.steps = ha.horizon;
            a->after.t0 = ha.steps;
            a->steps = ha.steps;
          }
        }
        A = slot && !slot->failed ? slot.get() : nullptr;
        if (A && anchored) P.relinearized_with_steps = A->steps;
      }
      if (A) {
        // The N0 samples with Θ (extrapolated to N when N0 < N) and J·w0 at w_K,
        // from this job's own outputs and velocity there.
        const Problem* at_k = &A->raw;
        if (extrap) {
          const double t_ex = now();
          // Θ' from the residual at that w_K (the job's own when it is its own kernel).
          const auto& [q, shared] = extrapolated_at(A->extrapolated, A->raw, P.size, s.seed);
          at_k = &q;
          P.shared_modes = shared;
          P.extrapolated = true;
          extrapolate_seconds += now() - t_ex;
        }
        Problem p2 = *at_k;
        p2.f0 = real.f_last;
        // J v_k in function space, from the last real step: F_k = F_{k-1} - η J v_k.
        p2.u0 = (real.f_prev - real.f_last) / hk.lr_at(kdiag - 1);
        Hyper h2 = h;
        h2.t0 = kdiag;
        Curves tail = simulate(p2, h2, so);
        Curves both;
        both.stride = 1;
        for (int64_t t = 0; t < kdiag; ++t) {
          both.step.push_back(t);
          both.loss.push_back(interpolate(real.step, real.loss, double(t)));
          both.acc.push_back(interpolate(real.step, real.acc, double(t)));
        }
        both.run_loss.assign(tail.run_loss.size(), both.loss);
        both.run_acc.assign(tail.run_acc.size(), both.acc);
        both.step.insert(both.step.end(), tail.step.begin(), tail.step.end());
        both.loss.insert(both.loss.end(), tail.loss.begin(), tail.loss.end());
        both.acc.insert(both.acc.end(), tail.acc.begin(), tail.acc.end());
        for (size_t r = 0; r < tail.run_loss.size(); ++r) {
          both.run_loss[r].insert(both.run_loss[r].end(), tail.run_loss[r].begin(), tail.run_loss[r].end());
          both.run_acc[r].insert(both.run_acc[r].end(), tail.run_acc[r].begin(), tail.run_acc[r].end());
        }
        cv = std::move(both);
        P.relinearized_at = kdiag;
      }
      diagnose_seconds = now() - t_diag - (extrapolate_seconds - ex_before);
      P.timing.emplace_back("diagnose", diagnose_seconds);
    }
    if (cv.step.back() != P.horizon) cv = simulate(sim_w0(), h, so);  // re-linearization not used

    // Stability of the linearized full-batch map: η λ_max(H) < 2 (1 + m), with H
    // the loss Hessian in function space (2/C·Θ/N0 for MSE; ≤ ½·Θ/N0 for CE).
    double peak_lr = s.lr;
    for (int64_t t = 0; t < std::min<int64_t>(P.horizon, 1000000); t += std::max<int64_t>(1, P.horizon / 1000))
      peak_lr = std::max(peak_lr, s.schedule.at(s.lr, t, P.horizon));
    const double curv = s.loss == Loss::mse ? 2.0 / double(C) : 0.5;
    P.lr_stability = peak_lr * curv * K.lambda_max / double(P.subset) / (2.0 * (1.0 + s.momentum));
    P.timing.emplace_back("simulate", now() - t0 - diagnose_seconds - extrapolate_seconds);  // others on their own

    // The extrapolation's own error on this job (N0/4 -> N0), for the band.
    Check chk;
    if (extrap && std::isfinite(cv.loss.back())) {
      const double t_ex = now();
      if (P.relinearized_at > 0 && A) {
        if (!A->checked) A->check = extrapolation_check(A->raw, A->after, so, s), A->checked = true;
        chk = A->check;
      } else {
        chk = extrapolation_check(prob, h, so, s);
      }
      extrapolate_seconds += now() - t_ex;
    }
    if (extrap) P.timing.emplace_back("extrapolate", extrapolate_seconds);

    // T on the mean curve; its band from the runs.
    auto target_of = [&](const std::vector<double>& loss, const std::vector<double>& acc, bool* reached = nullptr) {
      return target_index(loss, acc, s.target, s.target_value, reached);
    };
    int64_t k = target_of(cv.loss, cv.acc, &P.reached);
    P.steps = cv.step[size_t(k)];
    std::vector<double> ts, finals;
    for (size_t r = 0; r < cv.run_loss.size(); ++r) {
      ts.push_back(double(cv.step[size_t(target_of(cv.run_loss[r], cv.run_acc[r]))]));
      finals.push_back(cv.run_loss[r].back());
    }
    P.steps_lo = std::min<int64_t>(P.steps, int64_t(std::floor(percentile(ts, 5))));
    P.steps_hi = std::max<int64_t>(P.steps, int64_t(std::ceil(percentile(ts, 95))));
    // Extrapolation error: the self-check's relative error, grown with the
    // ratio to cover (log N/N0 over log N0/N1), at most 100%.
    if (chk.from > 0) {
      P.check_from = chk.from;
      P.check_steps = chk.steps;
      P.check_direct = chk.direct;
      P.check_error = chk.error;
      const double w = std::min(1.0, chk.error * std::log(double(P.size) / double(P.subset)) /
                                         std::log(double(P.subset) / double(chk.from)));
      P.extrapolation_width = w;
      P.steps_lo = std::min(P.steps_lo, int64_t(std::floor(double(P.steps) * (1 - w))));
      P.steps_hi = std::max(P.steps_hi, std::min(P.horizon, int64_t(std::ceil(double(P.steps) * (1 + w)))));
    }
    // The linearization error is not in the SGD-noise band: widen it by the drift
    // measured against real steps (relative, capped at 100%).
    if (P.drift > 0.1 && std::isfinite(P.drift) && P.relinearized_at == 0 && !P.diverged) {
      const double w = std::min(1.0, P.drift);
      P.steps_lo = std::min(P.steps_lo, int64_t(std::floor(double(P.steps) * (1 - w))));
      P.steps_hi = std::min(P.horizon, std::max(P.steps_hi, int64_t(std::ceil(double(P.steps) * (1 + w)))));
      P.warnings.push_back("after " + std::to_string(P.drift_steps) + " real SGD steps the linearized loss is off by " +
                           fmt_num(100 * P.drift) + "% of the loss decrease: the network leaves the linear regime; " +
                           "band widened (engine.relinearize: K > 0 corrects for it)");
    }
    P.initial_loss = cv.loss.front();
    P.final_loss = cv.loss.back();
    P.final_accuracy = cv.acc.back();
    P.final_lo = percentile(finals, 5);
    P.final_hi = percentile(finals, 95);
    P.diverged = !std::isfinite(P.final_loss);
    if (P.diverged) {
      P.reached = false;
      P.steps = P.steps_lo = P.steps_hi = P.horizon;
      P.warnings.push_back("the linearized dynamics diverge at lr " + fmt_num(s.lr) + " (stability ratio " +
                           fmt_num(P.lr_stability) + "): no prediction; the real network leaves the linear " +
                           "regime at this rate (it may still train, e.g. by lowering its curvature, or diverge)");
    } else if (P.lr_stability > 1) {
      P.warnings.push_back("lr " + fmt_num(s.lr) + " is beyond the linearized model's stability limit (ratio " +
                           fmt_num(P.lr_stability) + "): expect the real run to leave the linear regime");
    }
    if (!P.reached)
      P.warnings.push_back(std::string("target ") + to_string(s.target) + " " + fmt_num(s.target_value) +
                           " is not reached within the horizon of " + std::to_string(P.horizon) + " steps");
    if (P.subset < P.size && !P.extrapolated)
      P.warnings.push_back("Theta computed on " + std::to_string(P.subset) + " of " + std::to_string(P.size) +
                           " samples and not extrapolated to N (engine.extrapolate: false): the prediction is for the subset (too fast)");

    // Curves, decimated to about curve_points points (0 and T always kept).
    const size_t m = cv.step.size();
    const size_t every = std::max<size_t>(1, (m + size_t(opt.curve_points) - 1) / size_t(opt.curve_points));
    for (size_t j = 0; j < m; ++j) {
      if (j % every != 0 && j + 1 != m) continue;
      std::vector<double> at;
      for (const auto& rl : cv.run_loss) at.push_back(rl[j]);
      P.curve_step.push_back(cv.step[j]);
      P.curve_loss.push_back(cv.loss[j]);
      P.curve_lo.push_back(percentile(at, 5));
      P.curve_hi.push_back(percentile(at, 95));
      P.curve_acc.push_back(cv.acc[j]);
    }

    // Seconds per step: timed once per batch size (the step time does not depend
    // on the learning rate or momentum).
    auto st = step_times.find(s.step_seconds > 0 ? -1 : s.batch_size);
    if (st == step_times.end())
      st = step_times.emplace(s.step_seconds > 0 ? -1 : s.batch_size, time_steps(model, d, s, C)).first;
    P.step_seconds = st->second.median;
    P.step_lo = st->second.lo;
    P.step_hi = st->second.hi;
    P.step_source = s.step_seconds > 0 ? "spec" : "measured";
    P.timing.emplace_back("calibrate", st->second.used ? 0.0 : st->second.seconds);
    st->second.used = true;
    if (reference_blas_suspected())
      P.warnings.push_back("LibTorch runs on the reference BLAS (20-50x slower): install libopenblas0-pthread");
    P.timing.emplace_back("total", si == 0 ? now() - t_begin : now() - t_spec);
    out.push_back(std::move(P));
  }
  return out;
}

Prediction estimate(const Spec& spec, const EstimateOptions& opt) {
  if (!spec.sweep.empty()) spec.fail("sweep", "estimate() predicts one configuration: use estimate_all(expand_sweep(spec))");
  return estimate_all({spec}, opt).front();
}

}  // namespace ttpred
