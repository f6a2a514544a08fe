// Stage: the real prefix (docs/method.md §7). K real SGD steps from w0 with the
// batches of simulated run 0: the gap to the linearized run is the drift (the
// network's nonlinearity), and Θ recomputed at w_K re-linearizes the rest.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <random>
#include <string>
#include <thread>

#include "stages.hpp"
#include "ttpred/adam.hpp"
#include "ttpred/clock.hpp"
#include "ttpred/model.hpp"

namespace ttpred {

int64_t relinearize_steps(const Spec& s, int64_t horizon) {
  // Default (measured on bench/users' development half, docs/accuracy.md):
  // K = round(f T), f = 0.5, at most 500 real steps so the cost stays bounded on long
  // horizons (engine.relinearize_fraction, engine.relinearize_cap). The network keeps
  // moving its kernel after w_K: the later the re-linearization, the less of the run
  // rests on a frozen kernel. Development half, 3 estimator seeds (session 15):
  // f = 0.3 (cap 300, the default of sessions 6-14) mean |ln| 0.091, p95 27 %;
  // 0.4 (400) 0.087, 29 %; 0.5 (500) 0.083, 20 %.
  if (s.relinearize >= 0) return s.relinearize;
  return std::clamp<int64_t>(int64_t(std::llround(s.relinearize_fraction * double(horizon))), 1,
                             std::max<int64_t>(1, s.relinearize_cap));
}

Eigen::MatrixXd select_rows(const Eigen::MatrixXd& f, const std::vector<int64_t>& rows) {
  Eigen::MatrixXd out(int64_t(rows.size()), f.cols());
  for (size_t i = 0; i < rows.size(); ++i) out.row(int64_t(i)) = f.row(rows[i]);
  return out;
}

// A sample's loss from its outputs (only its rank within its class is used).
static double sample_loss(const Eigen::RowVectorXd& f, const Eigen::RowVectorXd& y, Loss loss) {
  if (loss != Loss::cross_entropy) return (f - y).squaredNorm();
  const double m = f.maxCoeff();
  return (m + std::log((f.array() - m).exp().sum())) * y.sum() - f.dot(y);
}

// The loss at the end of a run sits on few hard samples, and how many of them a
// uniform draw of N0 holds is the largest part of the prediction's spread over
// seeds (docs/accuracy.md, session 13): the tail's samples are drawn stratified.
std::vector<std::vector<int64_t>> stratified_rows(const Eigen::MatrixXd& f, const std::vector<int64_t>& ids,
                                                  const Eigen::MatrixXd& pool_targets, Loss loss, int64_t n0,
                                                  uint64_t seed, int parts) {
  const int64_t m = f.rows(), C = f.cols();
  if (parts < 1 || n0 < 1 || n0 * parts > m) throw std::invalid_argument("stratified_rows: needs 1 <= n0 x parts <= rows");
  std::vector<std::vector<std::pair<double, int64_t>>> by_class(static_cast<size_t>(C));
  for (int64_t r = 0; r < m; ++r) {
    Eigen::RowVectorXd y = pool_targets.row(ids[size_t(r)]);
    int64_t c = 0;
    y.maxCoeff(&c);
    by_class[size_t(c)].emplace_back(sample_loss(f.row(r), y, loss), r);
  }
  // Each class its share of n0, the remainder to the largest fractions.
  std::vector<int64_t> take(static_cast<size_t>(C));
  std::vector<std::pair<double, int64_t>> rem;
  int64_t given = 0;
  for (int64_t c = 0; c < C; ++c) {
    const double share = double(n0) * double(by_class[size_t(c)].size()) / double(m);
    take[size_t(c)] = int64_t(std::floor(share));
    given += take[size_t(c)];
    rem.emplace_back(-(share - std::floor(share)), c);
  }
  std::sort(rem.begin(), rem.end());
  for (size_t j = 0; given < n0 && j < rem.size(); ++j) {
    const size_t c = size_t(rem[j].second);
    if ((take[c] + 1) * parts > int64_t(by_class[c].size())) continue;  // the class cannot give every part one more
    ++take[c], ++given;
  }
  // Systematic draws along each class's losses, sorted, from one seeded offset per
  // class; part q at offset (q + u) / parts. A row taken already (rounding of the
  // shares) gives way to the nearest free one of the class.
  std::mt19937_64 rng = run_rng(seed, -3);
  std::uniform_real_distribution<double> u01(0, 1);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(parts));
  for (int64_t c = 0; c < C; ++c) {
    auto& v = by_class[size_t(c)];
    std::sort(v.begin(), v.end());
    const int64_t mc = int64_t(v.size()), nc = take[size_t(c)];
    std::vector<char> used(static_cast<size_t>(mc), 0);
    const double u = u01(rng);
    for (int q = 0; q < parts; ++q)
      for (int64_t j = 0; j < nc; ++j) {
        int64_t at = std::min<int64_t>(mc - 1, int64_t(std::floor((double(j) + (q + u) / parts) * double(mc) / double(nc))));
        for (int64_t d = 0; used[size_t(at)] && d < mc; ++d) {
          const int64_t lo = at - d, hi = at + d;
          if (hi < mc && !used[size_t(hi)]) at = hi;
          else if (lo >= 0 && !used[size_t(lo)]) at = lo;
        }
        if (used[size_t(at)]) continue;  // the class is exhausted (cannot happen when n0 x parts <= m)
        used[size_t(at)] = 1;
        out[size_t(q)].push_back(v[size_t(at)].second);
      }
  }
  for (auto& rows : out) std::sort(rows.begin(), rows.end());
  return out;
}

namespace {

constexpr double kPrefixLogRatio = 1.15;
constexpr int64_t kWideFactor = 4;  // the wide sample: up to 4 N0 of the pool

// The N0 tracked samples are a sample of the N: their loss during training differs
// from all N's by a sampling error that grows as the loss concentrates on fewer,
// harder samples (10 % by the middle of a prefix is common at N0 = 500). The
// prefix also evaluates a wider sample, the N0 and up to (kWideFactor − 1) N0
// more of the pool, at steps 0 and K, K/2, K/4, ... (≥ 4): a few forward passes
// that splice() corrects the curve with (docs/method.md §7).
// The wide sample beyond the N0: drawn as the N0 were (draw_subset), which it
// contains; the ids of the pool not among the N0, in draw order.
std::vector<int64_t> wide_rest(const Spec& s, const std::vector<int64_t>& idx, int64_t pool) {
  std::vector<int64_t> rest;
  const int64_t n0 = int64_t(idx.size());
  if (n0 >= pool) return rest;
  std::vector<char> in(size_t(pool), 0);
  for (int64_t i : idx) in[size_t(i)] = 1;
  for (int64_t i : draw_subset(pool, std::min(pool, kWideFactor * n0), s))
    if (!in[size_t(i)]) rest.push_back(i);
  return rest;
}

// How a prefix run treats the wide sample: not at all; only its steps logged (a run
// averaged with another's, average_prefixes); evaluated there.
enum class Wide { none, steps, evaluated };

void wide_evaluation(FinetuneOptions& fo, const Spec& s, const std::vector<int64_t>& idx, int64_t pool, int64_t k) {
  if (k < 1) return;
  fo.wide = wide_rest(s, idx, pool);
  if (fo.wide.empty()) return;
  fo.wide_at.push_back(0);
  for (double t = double(k); t >= 4 - 1e-9; t /= 2) fo.wide_at.push_back(int64_t(std::llround(t)));
  fo.wide_at.push_back(k);
  std::sort(fo.wide_at.begin(), fo.wide_at.end());
  fo.wide_at.erase(std::unique(fo.wide_at.begin(), fo.wide_at.end()), fo.wide_at.end());
}

// K real steps from w0 with hyper-parameters hk (the model is left at w_K).
// When extrapolating to N they draw their batches among all samples at hand
// and track the N0; otherwise they train on the N0 alone. Prefix run q (its batch
// seed), the pos-th of `of` runs in one "sgd steps" progress phase.
FinetuneResult real_steps(const Job& job, const Kernel& K, const Hyper& hk, int64_t log_every, bool keep_outputs,
                          bool extrap, double log_ratio = 0, Wide wide = Wide::none, bool wide_outputs = false,
                          int q = 0, int pos = 0, int of = 1) {
  FinetuneOptions fo;
  fo.seed = prefix_seed(job.spec.seed, q);
  fo.threads = std::clamp(int(std::thread::hardware_concurrency()), 1, 8);
  fo.log_every = log_every;
  fo.log_ratio = log_ratio;
  fo.keep_outputs = keep_outputs;
  fo.keep_adam_moments = keep_outputs && hk.optimizer != Optimizer::sgd;  // Adam's P at w_K
  // model.batchnorm: train: the real steps run as model.train() does (batch statistics,
  // running statistics updated); the losses are evaluated as model.eval() does, as in
  // ttpred-finetune, and Θ at w_K is the eval-mode network's, with those statistics.
  fo.train_mode = job.spec.batchnorm_train;
  if (job.opt.progress)
    fo.progress = [&job, pos, of](const char*, int64_t done, int64_t total) {
      job.opt.progress("sgd steps", pos * total + done, of * total);
    };
  if (!extrap) return finetune(job.model, job.data, K.idx, job.spec.loss, K.prob.y, hk, fo);
  std::vector<int64_t> all(static_cast<size_t>(job.pool));
  for (int64_t i = 0; i < job.pool; ++i) all[size_t(i)] = i;
  fo.track = K.idx;  // idx holds sample ids < pool, which are their positions in `all`
  if (wide != Wide::none) wide_evaluation(fo, job.spec, K.idx, job.pool, hk.steps);
  if (wide == Wide::steps) fo.wide.clear();
  fo.wide_outputs = wide == Wide::evaluated && wide_outputs && keep_outputs;
  return finetune(job.model, job.data, all, job.spec.loss, job.pool_targets, hk, fo);
}

// max_t |L_real - L_lin| over the prefix, relative to the real loss decrease.
double drift_of(const FinetuneResult& real, const Curves& lin) {
  double worst = 0, lowest = real.loss.front();
  for (size_t j = 0; j < real.step.size(); ++j) {
    const double l = lin.run_loss[0][size_t(real.step[j])];
    if (std::isfinite(l) && std::isfinite(real.loss[j])) worst = std::max(worst, std::fabs(real.loss[j] - l));
    if (std::isfinite(real.loss[j])) lowest = std::min(lowest, real.loss[j]);
  }
  return worst / std::max(real.loss.front() - lowest, 1e-12);
}

// Adam/AdamW re-linearized (docs/method.md §3b): Θ_P at w_K (adam_kernel_after:
// the real second moment v_K mixed with the mini-batch gradient's at w_K), and the
// first moment's image J P m_K, read off the last real step (w_K − w_{K−1} =
// −η_{K−1} (m̂_K / (√v̂_K + ε) + [AdamW] λ w_{K−1})).
Preconditioned adam_state_at(const Job& job, const Kernel& K, const Prediction& P, const Hyper& h,
                             const FinetuneResult& at, const Eigen::MatrixXd& f_prev, const AnchorKernel& a) {
  const Spec& s = job.spec;
  const int64_t k = h.steps;
  Preconditioned pk = adam_kernel_after(job.model, job.data, a.idx, smoothed_targets(a.raw.y, s.label_smoothing), s.loss,
                                        s.global_batch(), P.size, h, at.adam_v, k, P.horizon,
                                        gram_options(s, K.rows, job.opt, true));
  const double lr = h.lr_at(k - 1);
  Eigen::MatrixXd step = f_prev - a.raw.f0;
  if (h.optimizer == Optimizer::adamw && h.weight_decay > 0) step -= lr * h.weight_decay * a.raw.jw0;
  // The last step used v̂_K's preconditioner, the kernel holds P_mix's and the simulation
  // starts with P_mix · √(v_level / v_start): μ_0 = J P_K m_K over that factor.
  pk.mu0 = step * ((1 - std::pow(h.beta1, double(k))) / lr / std::sqrt(pk.v_level / pk.v_start));
  return pk;
}

// The hyper-parameters whose K real steps give Θ at w_K: the job's own (hk), or
// engine.relinearize_with's, with K by the same rule on their own horizon.
Hyper anchor_hyper(const Spec& s, const Prediction& P, const Hyper& hk, bool anchored) {
  Hyper ha = hk;
  if (!anchored) return ha;
  const Spec::Anchor& an = s.relinearize_with;
  ha.lr = an.lr;
  ha.momentum = an.momentum;
  ha.weight_decay = an.weight_decay;
  // The anchor's batch_size is per GPU and micro-batch, as optimizer.batch_size.
  const int64_t global = an.batch_size * (s.global_batch() / s.batch_size);
  ha.batch_size = global >= P.size ? P.subset : global;
  ha.micro_batch = global >= P.size || global == an.batch_size ? 0 : an.batch_size;
  ha.horizon = s.steps > 0 ? s.steps : int64_t(std::ceil(s.epochs * double(P.size / std::min(global, P.size)) - 1e-9));
  ha.steps = std::min(relinearize_steps(s, ha.horizon), ha.horizon - 1);
  return ha;
}


// One tail part: Θ at w_K on the samples `idx` (rows `rows` of the prefix's outputs).
void fill_part(AnchorKernel& a, const Job& job, const Kernel& K, const Prediction& P, const Hyper& h, const Hyper& ha,
               const FinetuneResult& at, std::vector<int64_t> rows, std::vector<int64_t> idx, bool other) {
  const Spec& s = job.spec;
  a.rows = std::move(rows);
  a.idx = std::move(idx);
  a.stratified = other;
  Gram ga = compute_gram(job.model, job.data, a.idx, gram_options(s, K.rows, job.opt, K.jw0));
  a.raw = K.prob;
  if (other) a.raw.y = target_matrix(job.data, a.idx, K.prob.classes(), &a.raw.labels);
  a.raw.theta = std::move(ga.theta);
  a.raw.jw0 = std::move(ga.jw0);
  a.raw.f0 = select_rows(at.f_last, a.rows);
  // J v_K in function space, from the last real step: F_K = F_{K-1} - η J v_K.
  const Eigen::MatrixXd f_prev = select_rows(at.f_prev, a.rows);
  a.raw.u0 = (f_prev - a.raw.f0) / ha.lr_at(ha.steps - 1);
  a.after = h;
  a.after.lr = ha.lr;
  a.after.momentum = ha.momentum;
  a.after.weight_decay = ha.weight_decay;
  a.after.batch_size = ha.batch_size;
  a.after.steps = ha.horizon;
  a.after.t0 = ha.steps;
  a.steps = ha.steps;
  const Eigen::VectorXd g = loss_gradient(a.raw, a.raw.f0);
  const double e0 = other ? 0 : g.dot(K.prob.theta * g), ek = g.dot(a.raw.theta * g);
  a.growth = e0 > 0 && std::isfinite(ek) ? ek / e0 - 1 : 0;
  a.progress = at.loss.front() - at.loss.back();
  a.lambda_max = top_eigenvalue(a.raw.theta);
  if (s.optimizer != Optimizer::sgd) a.adam = std::make_shared<Preconditioned>(adam_state_at(job, K, P, ha, at, f_prev, a));
}

}  // namespace

Prefix real_prefix(const Job& job, const Kernel& K, Prediction& P, const Hyper& h, int64_t k, bool relinearize,
                   bool extrap, const Curves& lin, Anchors& anchors) {
  const Spec& s = job.spec;
  const double t0 = now();
  Prefix out;
  out.steps = k;
  const Weights w0 = save_weights(job.model);
  struct Restore {
    Model& m;
    const Weights& w;
    ~Restore() { restore_weights(m, w); }
  } restore{job.model, w0};
  Hyper hk = h;
  hk.steps = k;
  hk.horizon = P.horizon;
  // The real prefix becomes part of the predicted curve, interpolated between
  // evaluations of the N0 samples (each a forward pass over them) at steps
  // 1, 2, ..., each >= kPrefixLogRatio x the last (21 for K = 50): a target met
  // within the prefix is placed to a few % of its step, where 8 evaluations
  // evenly spaced put it late on a convex curve (up to 2x in the first interval).
  // The diagnosis alone only compares losses: about 10 evaluations, evenly spaced.
  // The tail on N0 of the wide sample stratified at w_K (engine.tail_subset), which
  // needs the wide sample's outputs there; kernel_growth compares Θ_K with Θ_0 on the N0.
  const bool stratify = relinearize && extrap && s.tail_stratified && !s.kernel_growth;
  // (Adam simulates one part: its state at w_K is per part.)
  const int tail_parts = relinearize && extrap && !s.kernel_growth && s.optimizer == Optimizer::sgd
                             ? std::max(1, s.tail_parts)
                             : 1;
  const bool wide_out = stratify || tail_parts > 1;
  // engine.prefix_runs: the other runs first (other batches, the same steps logged, the
  // wide sample not evaluated), so that the model ends at w_K of run 0, the one whose
  // batches the simulation's run 0 shares (the drift) and whose w_K gives Θ_K.
  const int runs = relinearize ? std::max(1, s.prefix_runs) : 1;
  std::vector<FinetuneResult> others;
  for (int q = 1; q < runs; ++q) {
    others.push_back(real_steps(job, K, hk, 1, false, extrap, kPrefixLogRatio, Wide::steps, false, q, q - 1, runs));
    restore_weights(job.model, w0);
  }
  out.real = relinearize
                 ? real_steps(job, K, hk, 1, true, extrap, kPrefixLogRatio, Wide::evaluated, wide_out, 0, runs - 1, runs)
                 : real_steps(job, K, hk, std::max<int64_t>(1, k / 10), false, extrap);
  out.drift = drift_of(out.real, lin);
  out.runs = average_prefixes(out.real, others);
  if (!relinearize || !std::isfinite(out.real.loss.back())) {
    out.seconds = now() - t0;
    return out;
  }
  // Θ at w_K: after the job's own K steps (the model is there now), or after
  // K_a real steps with engine.relinearize_with's values. Once per distinct
  // values: a sweep's rows share it, and the row of the spec's own values
  // shares it with them.
  // (engine.relinearize_with holds SGD's values: Adam re-linearizes with its own steps.)
  const bool anchored = s.optimizer == Optimizer::sgd && s.relinearize_with.set &&
                        !s.relinearize_with.same_values(s.optimizer_values());
  const Hyper ha = anchor_hyper(s, P, hk, anchored);
  auto& slot = anchors[AnchorKey{job.pool, P.subset, extrap, ha.lr, ha.momentum, ha.weight_decay, ha.batch_size,
                                 ha.steps, ha.horizon}];
  if (!slot && ha.steps > 0) {
    slot = std::make_unique<AnchorKernel>();
    FinetuneResult ra;
    if (anchored) {
      restore_weights(job.model, w0);
      ra = real_steps(job, K, ha, ha.steps, true, extrap, 0, wide_out ? Wide::evaluated : Wide::none,
                      wide_out);  // only w_K, f_K and f_{K-1} are used
    }
    const FinetuneResult& at = anchored ? ra : out.real;
    AnchorKernel* a = slot.get();
    a->failed = !std::isfinite(at.loss.back());
    if (!a->failed) {
      const int64_t n0 = int64_t(K.idx.size());
      std::vector<int64_t> ids = K.idx, rest = wide_rest(s, K.idx, job.pool);
      ids.insert(ids.end(), rest.begin(), rest.end());
      const bool wide_f = at.f_last.rows() == int64_t(ids.size()) && int64_t(ids.size()) > n0;
      const int parts = wide_f ? std::clamp<int>(int(int64_t(ids.size()) / n0), 1, tail_parts) : 1;
      const std::vector<std::vector<int64_t>> drawn =
          stratify && wide_f ? stratified_rows(at.f_last, ids, job.pool_targets, s.loss, n0, s.seed, parts)
                             : std::vector<std::vector<int64_t>>{};
      for (int q = 0; q < parts; ++q) {
        std::vector<int64_t> rows;  // a stratified part may hold fewer than n0 (stratified_rows)
        if (!drawn.empty()) {
          rows = drawn[size_t(q)];
        } else {
          for (int64_t i = 0; i < n0; ++i) rows.push_back(q * n0 + i);  // the N0, then the rest of the draw
        }
        std::vector<int64_t> idx;
        for (int64_t r : rows) idx.push_back(ids[size_t(r)]);
        AnchorKernel* part = a;
        if (q > 0) {
          a->more.push_back(std::make_unique<AnchorKernel>());
          part = a->more.back().get();
        }
        fill_part(*part, job, K, P, h, ha, at, rows, idx, q > 0 || (stratify && wide_f));
      }
    }
  }
  out.anchor = slot && !slot->failed ? slot.get() : nullptr;
  if (out.anchor && anchored) P.relinearized_with_steps = out.anchor->steps;
  out.seconds = now() - t0;
  return out;
}

uint64_t prefix_seed(uint64_t seed, int q) { return q == 0 ? seed : seed + uint64_t(q) * 0x2545F4914F6CDD1DULL; }

int average_prefixes(FinetuneResult& real, const std::vector<FinetuneResult>& others) {
  if (real.loss.empty() || !std::isfinite(real.loss.back())) return 1;
  std::vector<const FinetuneResult*> ok;
  for (const FinetuneResult& o : others)
    if (o.step == real.step && o.loss.size() == real.loss.size() && std::isfinite(o.loss.back())) ok.push_back(&o);
  if (ok.empty()) return 1;
  const double n = double(ok.size() + 1);
  for (size_t j = 0; j < real.loss.size(); ++j) {
    double l = real.loss[j], a = real.acc[j];
    for (const FinetuneResult* o : ok) l += o->loss[j], a += o->acc[j];
    real.loss[j] = l / n;
    real.acc[j] = a / n;
  }
  // The wide sample was evaluated in `real` only: its ratio to the tracked samples
  // (their sampling error) is kept, at the mean level.
  for (size_t j = 0; j < real.wide_step.size(); ++j) {
    const auto at = std::find(real.step.begin(), real.step.end(), real.wide_step[j]);
    if (at == real.step.end()) continue;
    const size_t i = size_t(at - real.step.begin());
    const double lt = real.wide_tracked_loss[j], et = 1 - real.wide_tracked_acc[j];
    const double lm = real.loss[i], em = 1 - real.acc[i];
    if (std::isfinite(lt) && lt > 0) real.wide_loss[j] *= lm / lt;
    if (et > 0) real.wide_acc[j] = std::clamp(1 - (1 - real.wide_acc[j]) * em / et, 0.0, 1.0);
    real.wide_tracked_loss[j] = lm;
    real.wide_tracked_acc[j] = real.acc[i];
  }
  return int(ok.size()) + 1;
}

// Value at x of the piecewise-linear curve through (xs, ys), xs ascending;
// constant beyond its ends.
static double piecewise_linear(const std::vector<double>& xs, const std::vector<double>& ys, double x) {
  if (x <= xs.front()) return ys.front();
  for (size_t i = 1; i < xs.size(); ++i)
    if (x <= xs[i]) return ys[i - 1] + (x - xs[i - 1]) / (xs[i] - xs[i - 1]) * (ys[i] - ys[i - 1]);
  return ys.back();
}

SampleCorrection::SampleCorrection(const FinetuneResult& real) {
  for (size_t j = 0; j < real.wide_step.size(); ++j) {
    const double lt = real.wide_tracked_loss[j], lw = real.wide_loss[j];
    const double et = 1 - real.wide_tracked_acc[j], ew = 1 - real.wide_acc[j];
    if (!std::isfinite(lt) || !std::isfinite(lw) || lt <= 0 || lw <= 0) continue;
    x.push_back(std::log1p(double(real.wide_step[j])));
    loss_ratio.push_back(std::clamp(lw / lt, 0.25, 4.0));
    // No error among the tracked samples: nothing to scale, the ratio stays 1.
    err_ratio.push_back(et > 0 && ew > 0 ? std::clamp(ew / et, 0.25, 4.0) : 1.0);
  }
}

// The ratios are linear in log(1 + t) between the wide evaluations, constant beyond them.
double SampleCorrection::loss_factor(double t) const {
  return x.empty() ? 1.0 : piecewise_linear(x, loss_ratio, std::log1p(std::max(0.0, t)));
}

double SampleCorrection::error_factor(double t) const {
  return x.empty() ? 1.0 : piecewise_linear(x, err_ratio, std::log1p(std::max(0.0, t)));
}

double SampleCorrection::loss(double l, double t) const { return l * loss_factor(t); }

double SampleCorrection::scaled_accuracy(double a, double factor) const {
  return x.empty() ? a : std::clamp(1 - (1 - a) * factor, 0.0, 1.0);
}

double SampleCorrection::accuracy(double a, double t) const { return scaled_accuracy(a, error_factor(t)); }

Curves splice(const FinetuneResult& real, const Curves& tail, int64_t k, bool level_at_k) {
  // The tracked N0's curve, corrected to the wide sample's level; the tail, which
  // continues the N0's outputs, by the correction at K.
  const SampleCorrection c(real);
  const std::vector<double> steps(real.step.begin(), real.step.end());
  Curves both;
  both.stride = 1;
  for (int64_t t = 0; t < k; ++t) {
    both.step.push_back(t);
    both.loss.push_back(c.loss(piecewise_linear(steps, real.loss, double(t)), double(t)));
    both.acc.push_back(c.accuracy(piecewise_linear(steps, real.acc, double(t)), double(t)));
  }
  double loss_k = c.loss_factor(double(k)), error_k = c.error_factor(double(k));
  // A tail that starts from another level than its own (other samples, or a prefix
  // averaged over runs): the wide sample's level at K, else the prefix's, over its own.
  if (level_at_k && !tail.loss.empty() && !real.step.empty() && real.step.back() == k) {
    double lw = real.loss.back(), ew = 1 - real.acc.back();
    const auto at_k = std::find(real.wide_step.begin(), real.wide_step.end(), k);
    if (at_k != real.wide_step.end()) {
      const size_t j = size_t(at_k - real.wide_step.begin());
      lw = real.wide_loss[j], ew = 1 - real.wide_acc[j];
    }
    const double lt = tail.loss.front(), et = 1 - tail.acc.front();
    if (std::isfinite(lt) && lt > 0 && lw > 0) loss_k = std::clamp(lw / lt, 0.25, 4.0);
    error_k = et > 0 && ew > 0 ? std::clamp(ew / et, 0.25, 4.0) : 1.0;
  }
  auto tail_loss = [loss_k](double l) { return l * loss_k; };
  auto tail_acc = [&c, error_k](double a) { return c.scaled_accuracy(a, error_k); };
  both.run_loss.assign(tail.run_loss.size(), both.loss);
  both.run_acc.assign(tail.run_acc.size(), both.acc);
  both.step.insert(both.step.end(), tail.step.begin(), tail.step.end());
  std::transform(tail.loss.begin(), tail.loss.end(), std::back_inserter(both.loss), tail_loss);
  std::transform(tail.acc.begin(), tail.acc.end(), std::back_inserter(both.acc), tail_acc);
  for (size_t r = 0; r < tail.run_loss.size(); ++r) {
    std::transform(tail.run_loss[r].begin(), tail.run_loss[r].end(), std::back_inserter(both.run_loss[r]), tail_loss);
    std::transform(tail.run_acc[r].begin(), tail.run_acc[r].end(), std::back_inserter(both.run_acc[r]), tail_acc);
  }
  return both;
}

Curves merge_tails(const std::vector<Curves>& parts) {
  if (parts.size() == 1) return parts.front();
  Curves out;
  out.step = parts.front().step;
  out.stride = parts.front().stride;
  for (const Curves& c : parts) {
    out.run_loss.insert(out.run_loss.end(), c.run_loss.begin(), c.run_loss.end());
    out.run_acc.insert(out.run_acc.end(), c.run_acc.begin(), c.run_acc.end());
  }
  average_runs(out);
  return out;
}

}  // namespace ttpred
