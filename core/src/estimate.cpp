// The pipeline of one prediction: the stages of stages.hpp, in order. A sweep
// (estimate_all over many specs) shares what does not depend on the row.
#include "ttpred/estimate.hpp"

#include <algorithm>
#include <cmath>

#include "stages.hpp"
#include "ttpred/adam.hpp"
#include "ttpred/clock.hpp"
#include "ttpred/error.hpp"

namespace ttpred {

namespace {

// Adam's kernel depends on N, N0, the global batch, eps and the label smoothing.
using AdamKey = std::tuple<int64_t, int64_t, int64_t, double, double>;

// Sizes, subset and horizon of one configuration; fails on impossible ones.
void describe(Prediction& P, const Spec& s, const Model& model, const Dataset& d, int64_t C, int64_t pool) {
  P.spec = s;
  P.device = model.device();
  P.params = model.num_params();
  P.classes = C;
  P.available = d.available;
  P.size = s.data.size > 0 ? s.data.size : d.n;
  if (P.size > d.n)
    P.warnings.push_back("data.size (" + std::to_string(P.size) + ") exceeds the " + std::to_string(d.n) +
                         " samples in " + d.source + ": predicting for a larger dataset than the one at hand");
  if (s.global_batch() > P.size)
    s.fail("optimizer.batch_size", "(" + batch_text(s) + ") exceeds the " + std::to_string(P.size) +
                                       " training samples");
  P.subset = s.data.subset > 0 ? s.data.subset : default_subset(pool, C);
  if (P.subset > pool)
    s.fail("data.subset", "(" + std::to_string(P.subset) + ") exceeds the " + std::to_string(pool) +
                              " samples available in " + d.source);
  if (!s.data.draw_first) {
    for (const auto& [n, what] : {std::pair<int64_t, std::string>{std::min(P.size, pool), "the N = " + std::to_string(std::min(P.size, pool)) + " samples drawn"},
                                  {P.subset, "the N0 = " + std::to_string(P.subset) + " samples for the Gram matrix"}})
      if (std::string w = draw_warning(d, n, what); !w.empty()) {
        P.warnings.push_back(w);
        break;
      }
  }
  P.steps_per_epoch = P.size / s.global_batch();
  P.horizon = s.steps > 0 ? s.steps : int64_t(std::ceil(s.epochs * double(P.steps_per_epoch) - 1e-9));
  if (P.horizon <= 0) s.fail("training.epochs", "gives a horizon of 0 steps");
}

void record_kernel(Prediction& P, Kernel& K) {
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
    P.warnings.push_back("Gram matrix estimated with a CountSketch of dimension " + std::to_string(K.dim) + " < 4 x its " +
                         std::to_string(K.rows) + " rows: raise engine.projection_dim for less noise");
}

// The optimizer of the simulation. Full batch in the real run is full batch on
// the subset; otherwise the mini-batch is drawn among the N0 simulated samples
// (mean-field: the expected step Θ_S g_S / N0 estimates Θ g / N).
Hyper hyper_of(const Spec& s, const Prediction& P) {
  Hyper h = hyper_of_spec(s, P.horizon);
  if (h.batch_size >= P.size) h.batch_size = P.subset, h.micro_batch = 0;
  return h;
}

// Stability of the linearized full-batch map at learning rate lr: η λ_max(H) < 2 (1 + m),
// with H the loss Hessian in function space (2/C·Θ/N0 for MSE; ≤ ½·Θ/N0 for CE). > 1: unstable.
double stability_ratio(double lr, const Spec& s, const Prediction& P, double lambda_max) {
  const double curv = s.loss == Loss::mse ? 2.0 / double(P.classes) : 0.5;
  return lr * curv * lambda_max / double(P.subset) / (2.0 * (1.0 + s.momentum));
}

// The ratio at the schedule's peak learning rate, on Θ at w0.
double lr_stability(const Spec& s, const Prediction& P, const Kernel& K) {
  double peak_lr = s.lr;
  for (int64_t t = 0; t < std::min<int64_t>(P.horizon, 1000000); t += std::max<int64_t>(1, P.horizon / 1000))
    peak_lr = std::max(peak_lr, s.schedule.at(s.lr, t, P.horizon));
  return stability_ratio(peak_lr, s, P, K.lambda_max);
}

// Θ and Adam's kernel k extrapolated to N from the residual at p's outputs (§5);
// Θ's extrapolation from `cache` when another prediction computed it.
void extrapolate_both(Prediction& P, const Job& job, ExtrapolatedByN& cache, Problem& p, Preconditioned& k) {
  if (job.opt.progress) job.opt.progress("extrapolate", 0, 2);
  const Problem raw = p;
  p = extrapolated_at(cache, raw, P.size, job.spec.seed).first;
  if (job.opt.progress) job.opt.progress("extrapolate", 1, 2);
  ExtrapolatedByN once;
  Problem pp = raw;
  pp.theta = k.theta;
  const auto& [q, shared] = extrapolated_at(once, pp, P.size, job.spec.seed);
  if (job.opt.progress) job.opt.progress("extrapolate", 2, 2);
  k.theta = q.theta;
  P.extrapolated = true;
  P.shared_modes = shared;
}

// Adam/AdamW (docs/method.md §3b): Θ_P = J P0 Jᵀ at w0 (once per N, N0, global
// batch, eps and label smoothing) and the function-space Adam simulation on it.
// By default re-linearized as SGD is (§7): K real Adam steps from w0, then Θ and
// Θ_P at w_K, with the real second moment's preconditioner and the optimizer's
// state carried, both extrapolated to N. engine.relinearize: 0 (--no-training):
// training-free, from w0.
void adam_prediction(Prediction& P, const Job& job, Kernel& K, std::map<AdamKey, Preconditioned>& cache,
                     Anchors& anchors) {
  const Spec& s = job.spec;
  double t0 = now();
  const Hyper h = hyper_of(s, P);
  const AdamKey key{job.pool, P.subset, s.global_batch(), s.eps, s.label_smoothing};
  auto it = cache.find(key);
  if (it == cache.end()) {
    Preconditioned pk = adam_kernel(job.model, job.data, K.idx, smoothed_targets(K.prob.y, s.label_smoothing), s.loss,
                                    s.global_batch(), P.size, s.eps, gram_options(s, K.rows, job.opt, true));
    P.timing.emplace_back("adam_kernel", pk.seconds);
    it = cache.emplace(key, std::move(pk)).first;
  }
  t0 = now();
  const bool extrap = P.subset < P.size && s.extrapolate;
  double extrapolate_seconds = 0, diagnose_seconds = 0;
  SimOptions so;
  so.runs = s.runs > 0 ? s.runs : 16;
  so.seed = s.seed;
  if (job.opt.progress) so.progress = [&](int64_t done, int64_t total) { job.opt.progress("simulate", done, total); };
  const int64_t relin = std::min(relinearize_steps(s, P.horizon), P.horizon - 1);
  Curves cv;
  if (relin > 0 && P.horizon <= 20000) {
    // The real prefix; its drift against run 0 of the training-free simulation.
    Hyper hk = h;
    hk.steps = relin;
    hk.horizon = P.horizon;
    SimOptions one = so;
    one.runs = 1;
    one.progress = nullptr;
    const Curves lin = simulate_adam(K.prob, it->second, hk, one);
    Prefix pre = real_prefix(job, K, P, h, relin, true, extrap, lin, anchors);
    diagnose_seconds = pre.seconds;
    P.timing.emplace_back("diagnose", diagnose_seconds);
    P.drift = pre.drift;
    P.drift_steps = relin;
    if (pre.anchor && pre.anchor->adam) {
      Problem p2 = pre.anchor->raw;  // Θ_K, J·w_K, f_K
      Preconditioned k2 = *pre.anchor->adam;
      if (extrap) {
        const double t_ex = now();
        extrapolate_both(P, job, pre.anchor->extrapolated, p2, k2);
        extrapolate_seconds += now() - t_ex;
      }
      Hyper h2 = h;
      h2.t0 = relin;
      cv = splice(pre.real, simulate_adam(p2, k2, h2, so), relin, pre.tail_level_differs(*pre.anchor));
      if (extrap) {
        P.tail_subset = pre.anchor->stratified ? "stratified" : "tracked";
        P.tail_parts = 1;
      }
      P.relinearized_at = relin;
      P.prefix_runs = pre.runs;
    }
  }
  if (cv.step.empty()) {
    Problem prob = K.prob;
    Preconditioned pk = it->second;
    if (extrap) {
      const double t_ex = now();
      extrapolate_both(P, job, K.extrapolated, prob, pk);
      extrapolate_seconds += now() - t_ex;
    }
    cv = simulate_adam(prob, pk, h, so);
  }
  P.timing.emplace_back("simulate", now() - t0 - extrapolate_seconds - diagnose_seconds);
  if (P.extrapolated) P.timing.emplace_back("extrapolate", extrapolate_seconds);
  P.lr_stability = 0;  // the SGD stability ratio does not apply to Adam's normalized steps
  target_and_band(P, cv, Check{}, s, job.opt.curve_points);
  const std::string name = s.optimizer == Optimizer::adam ? "Adam" : "AdamW";
  if (s.relinearize == 0 && s.diagnose_steps > 0)
    P.warnings.push_back("engine.diagnose_steps is not applied to " + name + " without a re-linearization");
  if (s.batchnorm_train && P.relinearized_at == 0)
    P.warnings.push_back("model.batchnorm: train without a re-linearization (the horizon is too short or too long "
                         "for a real prefix): predicted with the pre-trained running statistics, as eval mode");
  if (s.relinearize_with.set && !s.relinearize_with.same_values(s.optimizer_values()) && P.relinearized_at > 0)
    P.warnings.push_back("engine.relinearize_with holds SGD values: " + name + " re-linearizes after its own " +
                         std::to_string(relin) + " real steps");
  P.warnings.push_back(name + (P.relinearized_at > 0
                                   ? ": re-linearized after " + std::to_string(relin) +
                                         " real steps (the optimizer's moments carried); the band's method factor "
                                         "was measured on SGD jobs"
                                   : std::string(": training-free prediction on the preconditioned kernel at w0; the "
                                                 "band's method factor was measured on SGD jobs")));
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
  if (opt.progress) opt.progress("load", 0, 1);
  Dataset d = load_dataset(load);
  if (opt.progress) opt.progress("load", 1, 1);
  for (const Spec& s : specs) max_pool = std::max(max_pool, s.data.size > 0 ? std::min(s.data.size, d.n) : d.n);
  const int64_t C = model.num_classes(d);
  if (!d.has_labels() && first.loss == Loss::cross_entropy)
    first.fail("loss", "cross_entropy needs int64 class ids in y; " + d.source + " holds float targets (use mse)");
  const Eigen::MatrixXd pool_targets = target_matrix(d, max_pool, C);  // also validates every label
  const double load_seconds = now() - t0;
  // engine.max_seconds: the N0 that fits (budget_choice.cpp); the specs as given without one.
  BudgetChoice budget;
  const std::vector<Spec> fitted = fit_budget(specs, model, d, C, max_pool, now() - t_begin, &budget);

  // J·w0 only matters with weight decay (the trace-NTK pays two forward passes for it).
  bool any_weight_decay = false;
  for (const Spec& s : specs) any_weight_decay |= s.weight_decay > 0;
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Kernel>> kernels;  // (pool, N0) -> Θ
  using StepKey = std::tuple<int64_t, int64_t, int, bool>;  // batch, accumulation, optimizer, BatchNorm train
  std::map<StepKey, StepTime> step_times;                                  // -> s/step
  Anchors anchors;                                                         // shared re-linearizations
  std::map<AdamKey, Preconditioned> adam_kernels;                           // Θ_P (Adam/AdamW)
  std::vector<Prediction> out;
  // Stage 6: seconds per step, timed once per batch size, optimizer, accumulation
  // and BatchNorm mode (the step time does not depend on the learning rate or momentum).
  auto seconds_and_total = [&](Prediction& P, const Spec& s, size_t si, double t_spec) {
    const StepKey key = s.step_seconds > 0 ? StepKey{-1, 0, 0, false}
                                           : StepKey{s.batch_size, s.accumulation_steps, int(s.optimizer), s.batchnorm_train};
    auto st = step_times.find(key);
    if (st == step_times.end()) st = step_times.emplace(key, time_steps(model, d, s, C)).first;
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
  };
  for (size_t si = 0; si < specs.size(); ++si) {
    const Spec& s = fitted[si];
    const double t_spec = now();
    const int64_t pool = s.data.size > 0 ? std::min(s.data.size, d.n) : d.n;
    const Job job{s, model, d, pool, pool_targets, opt};
    // model.batchnorm: train (docs/method.md §7): the real prefix runs train mode and
    // the rest is linearized at w_K with the statistics it reached.
    if (s.batchnorm_train && s.relinearize == 0)
      s.fail("model.batchnorm", "train needs the real prefix, which runs train mode: drop --no-training / "
                                "engine.relinearize: 0");
    Prediction P;
    describe(P, s, model, d, C, pool);
    P.budget = budget;
    if (budget.kernel_changed)
      P.warnings.push_back("engine.max_seconds " + fmt_num(budget.max_seconds) + " s: " +
                           (budget.trace_ntk > 0 ? "the trace-NTK (engine.trace_ntk: " + std::to_string(budget.trace_ntk) + ")"
                                                 : std::string("the CountSketch (engine.projection: countsketch)")) +
                           " instead of the exact Θ, to fit N0 = " + std::to_string(P.subset) +
                           " (set engine.projection or engine.trace_ntk to choose it yourself)");
    if (budget.max_seconds > 0 && P.subset < budget.requested)
      P.warnings.push_back("engine.max_seconds " + fmt_num(budget.max_seconds) + " s: data.subset lowered from " +
                           std::to_string(budget.requested) + " to " + std::to_string(P.subset) + " to fit (predicted " +
                           fmt_num(budget.predicted) + " s)");
    if (si == 0) P.timing.emplace_back("load", load_seconds);

    // Stage 1: Θ at w0 on the N0 samples (once per (N, N0)).
    auto& kp = kernels[{pool, P.subset}];
    if (!kp) {
      kp = std::make_unique<Kernel>(make_kernel(model, d, draw_subset(pool, P.subset, s), s, C, opt, any_weight_decay));
    }
    Kernel& K = *kp;
    record_kernel(P, K);
    if (s.optimizer != Optimizer::sgd) {
      // Adam/AdamW: training-free, in function space on Θ_P (docs/method.md §3b).
      adam_prediction(P, job, K, adam_kernels, anchors);
      seconds_and_total(P, s, si, t_spec);
      continue;
    }

    t0 = now();
    // N0 < N: simulate on the kernel extrapolated to N; it depends on N, not on
    // the optimizer, so a sweep shares it.
    const bool extrap = P.subset < P.size && s.extrapolate;
    double extrapolate_seconds = 0;
    auto extrapolated = [&](ExtrapolatedByN& cache, const Problem& raw) -> const Problem& {
      if (!extrap) return raw;
      const double t_ex = now();
      // One eigendecomposition of Θ (seconds at large N0·C): a phase of its own.
      const bool fresh = cache.find(P.size) == cache.end();
      if (fresh && opt.progress) opt.progress("extrapolate", 0, 1);
      const auto& [q, shared] = extrapolated_at(cache, raw, P.size, s.seed);
      if (fresh && opt.progress) opt.progress("extrapolate", 1, 1);
      extrapolate_seconds += now() - t_ex;
      P.extrapolated = true;
      P.shared_modes = shared;
      return q;
    };
    const Hyper h = hyper_of(s, P);
    SimOptions so;
    so.runs = s.runs > 0 ? s.runs : 16;
    so.seed = s.seed;
    if (opt.progress) so.progress = [&](int64_t done, int64_t total) { opt.progress("simulate", done, total); };
    const int64_t relin = relinearize_steps(s, P.horizon);
    int64_t kdiag = relin > 0 ? relin
                    : s.diagnose_steps >= 0 ? s.diagnose_steps
                                            : std::clamp<int64_t>(P.horizon / 10, 10, 50);
    kdiag = std::min(kdiag, P.horizon - 1);
    const bool diagnose = kdiag > 0 && P.horizon <= 20000;  // simulate() records every step up to 20000

    // Stage 2: the real prefix (drift, Θ at w_K), then the simulation from w_K;
    // or the pure linearized simulation from w0.
    Curves cv;
    double diagnose_seconds = 0;
    AnchorKernel* A = nullptr;
    if (diagnose) {
      Curves lin;  // linearized run 0 over the prefix: the diagnosis's reference
      if (relin > 0) {
        Hyper hk = h;
        hk.steps = kdiag;
        hk.horizon = P.horizon;
        SimOptions one = so;
        one.runs = 1;
        lin = simulate(K.prob, hk, one);  // the N0 alone: only the first K steps
      } else {
        cv = simulate(extrapolated(K.extrapolated, K.prob), h, so);
        lin = cv;
      }
      Prefix pre = real_prefix(job, K, P, h, kdiag, relin > 0, extrap, lin, anchors);
      diagnose_seconds = pre.seconds;
      P.timing.emplace_back("diagnose", diagnose_seconds);
      P.drift = pre.drift;
      P.drift_steps = kdiag;
      A = pre.anchor;
      if (A) {
        // Stage 3 + 4 from w_K: Θ there (extrapolated to N when N0 < N) and
        // J·w0, from this job's own outputs and velocity after its K steps.
        Hyper h2 = h;
        h2.t0 = kdiag;
        if (s.kernel_growth && A->progress > 0) {
          // The kernel keeps changing as it did over the prefix, per unit of loss
          // decrease, below the linearized stability limit at w_K.
          h2.growth = A->growth;
          h2.progress_from = pre.real.loss.back();
          h2.progress_per = A->progress;
          const double stab = stability_ratio(h.lr, s, P, A->lambda_max);
          h2.max_scale = std::clamp(0.9 / std::max(stab, 1e-12), 1.0, 4.0);
          P.kernel_growth = A->growth;
        }
        // Each tail part from this job's own outputs and velocity at w_K; the parts
        // share the runs and their curves are averaged (merge_tails).
        const int parts = 1 + int(A->more.size());
        std::vector<Curves> tails;
        for (int q = 0; q < parts; ++q) {
          AnchorKernel& part = q == 0 ? *A : *A->more[size_t(q - 1)];
          Problem p2 = extrapolated(part.extrapolated, part.raw);
          p2.f0 = select_rows(pre.real.f_last, part.rows);
          // J v_k in function space, from the last real step: F_k = F_{k-1} - η J v_k.
          p2.u0 = (select_rows(pre.real.f_prev, part.rows) - p2.f0) / h.lr_at(kdiag - 1);  // h's horizon is P.horizon
          SimOptions sq = so;
          sq.runs = std::max(1, so.runs / parts);
          sq.seed = so.seed + uint64_t(q) * 0x9E3779B97F4A7C15ULL;
          tails.push_back(splice(pre.real, simulate(p2, h2, sq), kdiag, pre.tail_level_differs(part)));
        }
        cv = merge_tails(tails);
        if (extrap) {
          P.tail_subset = A->stratified ? "stratified" : "tracked";
          P.tail_parts = parts;
        }
        P.relinearized_at = kdiag;
        P.prefix_runs = pre.runs;
      }
    }
    if (s.batchnorm_train && P.relinearized_at == 0)
      P.warnings.push_back("model.batchnorm: train without a re-linearization (the horizon is too short or too long "
                           "for a real prefix): predicted with the pre-trained running statistics, as eval mode");
    if (cv.step.empty() || cv.step.back() != P.horizon) cv = simulate(extrapolated(K.extrapolated, K.prob), h, so);
    P.lr_stability = lr_stability(s, P, K);
    P.timing.emplace_back("simulate", now() - t0 - diagnose_seconds - extrapolate_seconds);  // others on their own

    // Stage 3': the extrapolation's own error on this job (N0/4 -> N0), for the band.
    Check chk;
    if (extrap && std::isfinite(cv.loss.back())) {
      const double t_ex = now();
      SimOptions sc = so;  // the self-check's simulations, shown as a phase of their own
      if (opt.progress) sc.progress = [&](int64_t done, int64_t total) { opt.progress("self-check", done, total); };
      if (P.relinearized_at > 0 && A) {
        if (!A->checked) A->check = extrapolation_check(A->raw, A->after, sc, s), A->checked = true;
        chk = A->check;
      } else {
        chk = extrapolation_check(K.prob, h, sc, s);
      }
      extrapolate_seconds += now() - t_ex;
    }
    if (extrap) P.timing.emplace_back("extrapolate", extrapolate_seconds);
    // The extrapolation's signed error on this job, carried over to N (docs/method.md §5).
    if (extrap && s.extrapolation_correction) {
      const int64_t t0 = P.relinearized_at;
      P.extrapolation_factor = extrapolation_correction(chk, t0, P.size, P.subset, P.horizon);
      cv = time_warp(cv, t0, P.extrapolation_factor);
    }

    // Stage 5: T and its band.
    target_and_band(P, cv, chk, s, opt.curve_points);

    seconds_and_total(P, s, si, t_spec);
  }
  return out;
}

Prediction estimate(const Spec& spec, const EstimateOptions& opt) {
  if (!spec.sweep.empty()) spec.fail("sweep", "estimate() predicts one configuration: use estimate_all(expand_sweep(spec))");
  return estimate_all({spec}, opt).front();
}

}  // namespace ttpred
