#include "ttpred/dynamics.hpp"
#include "ttpred/adam.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace ttpred {

std::mt19937_64 run_rng(uint64_t seed, int run) {
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(run), 0x7470u};
  return std::mt19937_64(seq);
}

std::vector<int64_t> epoch_permutation(std::mt19937_64& rng, int64_t n) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[size_t(i)] = i;
  // Fisher-Yates with our own draws (std::shuffle's algorithm is unspecified).
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = int64_t(rng() % uint64_t(i + 1));
    std::swap(perm[size_t(i)], perm[size_t(j)]);
  }
  return perm;
}

namespace {

// A loss this many times the initial one (or above it, for L0 < 1) counts as diverged.
constexpr double kDivergedFactor = 1e4;

// ∂ℓ_i/∂f_i (unscaled): softmax - onehot, or 2 (f - y) / C.
void sample_grad(const Problem& p, const double* f, int64_t i, double* g) {
  const int64_t C = p.classes();
  if (p.loss == Loss::cross_entropy) {
    double mx = f[0];
    for (int64_t c = 1; c < C; ++c) mx = std::max(mx, f[c]);
    double z = 0;
    for (int64_t c = 0; c < C; ++c) z += (g[c] = std::exp(f[c] - mx));
    for (int64_t c = 0; c < C; ++c) g[c] = g[c] / z - p.y(i, c);
  } else {
    for (int64_t c = 0; c < C; ++c) g[c] = 2.0 * (f[c] - p.y(i, c)) / double(C);
  }
}

double loss_flat(const Problem& p, const Eigen::VectorXd& F) {
  const int64_t n = p.n(), C = p.classes();
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* f = F.data() + i * C;
    if (p.loss == Loss::cross_entropy) {
      double mx = f[0];
      for (int64_t c = 1; c < C; ++c) mx = std::max(mx, f[c]);
      double z = 0, dot = 0;
      for (int64_t c = 0; c < C; ++c) {
        z += std::exp(f[c] - mx);
        dot += p.y(i, c) * f[c];
      }
      s += mx + std::log(z) - dot;  // y is a one-hot row (or a probability row)
    } else {
      for (int64_t c = 0; c < C; ++c) s += (f[c] - p.y(i, c)) * (f[c] - p.y(i, c));
    }
  }
  return p.loss == Loss::cross_entropy ? s / double(n) : s / double(n * C);
}

double acc_flat(const Problem& p, const Eigen::VectorXd& F) {
  const int64_t n = p.n(), C = p.classes();
  int64_t ok = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* f = F.data() + i * C;
    ok += int64_t(std::max_element(f, f + C) - f) == p.labels[size_t(i)];
  }
  return double(ok) / double(n);
}

Eigen::VectorXd flatten(const Eigen::MatrixXd& m) {
  Eigen::VectorXd v(m.size());
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index c = 0; c < m.cols(); ++c) v(i * m.cols() + c) = m(i, c);
  return v;
}

// torch.nn.utils.clip_grad_norm_'s factor for a gradient of squared norm sq.
double clip_factor(double max_norm, double sq) {
  return std::min(1.0, max_norm / (std::sqrt(std::max(sq, 0.0)) + 1e-6));
}

// Σ_{a,b∈B} g_aᵀ T[a, b] g_b over the batch `rows` (gb: the B·C scaled output
// gradients): ‖∇_w L_B‖² when T is the kernel of these samples.
double batch_quadratic(const Eigen::MatrixXd& T, const int64_t* rows, int64_t B, int64_t C, const Eigen::VectorXd& gb) {
  double q = 0;
  for (int64_t a = 0; a < B; ++a)
    for (int64_t b = 0; b < B; ++b)
      q += gb.segment(a * C, C).dot(T.block(rows[a] * C, rows[b] * C, C, C) * gb.segment(b * C, C));
  return q;
}

// ‖∇_w L_B‖² for clipping, G = Θ[:, B] gb. With the measured kernel in
// Problem::theta_norm the sum runs over its blocks; otherwise G already holds Θ[:, B] gb.
double batch_norm_sq(const Problem& p, const int64_t* rows, int64_t B, const Eigen::VectorXd& gb,
                     const Eigen::VectorXd& G) {
  const int64_t C = p.classes();
  if (p.theta_norm) return batch_quadratic(*p.theta_norm, rows, B, C, gb);
  double q = 0;
  for (int64_t b = 0; b < B; ++b) q += gb.segment(b * C, C).dot(G.segment(rows[b] * C, C));
  return q;
}

// E‖∇L_B‖² from Θ: ‖ḡ‖² = rᵀΘr / n², mean_i ‖g_i‖² = mean_i r_iᵀ Θ_ii r_i.
double batch_grad_sq(const Problem& p, const Eigen::VectorXd& F, int64_t B, int64_t N) {
  const int64_t n = p.n(), C = p.classes();
  Eigen::VectorXd all(n * C);
  for (int64_t i = 0; i < n; ++i) sample_grad(p, F.data() + i * C, i, all.data() + i * C);
  const double mean_sq = all.dot(p.theta * all) / double(n) / double(n);
  double self = 0;
  for (int64_t i = 0; i < n; ++i)
    self += all.segment(i * C, C).dot(p.theta.block(i * C, i * C, C, C) * all.segment(i * C, C));
  self /= double(n);
  const double fpc = B >= N ? 0.0 : double(N - B) / double(N - 1);
  return mean_sq + fpc * std::max(0.0, self - mean_sq) / double(B);
}

void one_run(const Problem& p, const Hyper& h, int run, uint64_t seed, int64_t stride, std::vector<double>& L,
             std::vector<double>& A) {
  const int64_t n = p.n(), C = p.classes(), M = n * C;
  const bool full = h.batch_size >= n;
  const int64_t B = full ? n : h.batch_size;
  const int64_t per_epoch = full ? 1 : n / B;
  const Eigen::VectorXd F0 = flatten(p.f0);
  const Eigen::VectorXd W0 = flatten(p.jw0);
  Eigen::VectorXd F = F0, u = p.u0.size() ? flatten(p.u0) : Eigen::VectorXd::Zero(M), G(M), gb(B * C);
  std::mt19937_64 rng = run_rng(seed, run);
  std::vector<int64_t> perm;
  L.clear();
  A.clear();
  L.push_back(loss_flat(p, F));
  A.push_back(acc_flat(p, F));
  // The kernel's change since t0 (Hyper::growth), from the loss reached so far.
  auto kernel_scale = [&](double loss) {
    const double a = std::clamp((h.progress_from - loss) / std::max(h.progress_per, 1e-12), 0.0, 100.0);
    return std::clamp(1 + h.growth * a, std::min(h.min_scale, h.max_scale), h.max_scale);
  };
  double scale = h.growth != 0 ? kernel_scale(L.front()) : 1.0;
  for (int64_t t = h.t0; t < h.steps; ++t) {
    const int64_t k = t % per_epoch;
    double sq = 0;  // ‖∇_w L_B‖², for clipping
    if (full) {
      for (int64_t i = 0; i < n; ++i) sample_grad(p, F.data() + i * C, i, G.data() + i * C);
      const Eigen::VectorXd g = G / double(n);
      G = p.theta * g;
      if (h.clip_norm > 0) sq = p.theta_norm ? g.dot(*p.theta_norm * g) : g.dot(G);
    } else {
      if (k == 0 || t == h.t0) perm = epoch_permutation(rng, n);
      // Σ_b Θ[:, i_b] g_b: one gemv per sample on its contiguous column block (no gather).
      G.setZero();
      const int64_t* rows = perm.data() + k * B;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t i = rows[b];
        sample_grad(p, F.data() + i * C, i, gb.data() + b * C);
        gb.segment(b * C, C) /= double(B);
        G.noalias() += p.theta.middleCols(i * C, C) * gb.segment(b * C, C);
      }
      if (h.clip_norm > 0) sq = batch_norm_sq(p, rows, B, gb, G);
    }
    if (scale != 1) G *= scale, sq *= scale;
    if (h.clip_norm > 0) G *= clip_factor(h.clip_norm, sq);
    if (h.weight_decay > 0) G += h.weight_decay * (W0 + F - F0);
    u = h.momentum * u + G;
    if (h.nesterov)
      F -= h.lr_at(t) * (G + h.momentum * u);
    else
      F -= h.lr_at(t) * u;
    if ((t + 1 - h.t0) % stride == 0 || t + 1 == h.steps) {
      L.push_back(loss_flat(p, F));
      A.push_back(acc_flat(p, F));
      if (h.growth != 0 && std::isfinite(L.back())) scale = kernel_scale(L.back());
    }
    // Diverged (the linearized model blows up): keep the rest of the curve at +inf.
    if (!std::isfinite(L.back()) || L.back() > kDivergedFactor * std::max(1.0, L.front())) {
      L.back() = INFINITY;
      while (int64_t(L.size()) < (h.steps - h.t0 + stride - 1) / stride + 1) {
        L.push_back(INFINITY);
        A.push_back(A.back());
      }
      break;
    }
  }
}

}  // namespace

double loss_of(const Problem& p, const Eigen::MatrixXd& F) { return loss_flat(p, flatten(F)); }
double accuracy_of(const Problem& p, const Eigen::MatrixXd& F) { return acc_flat(p, flatten(F)); }

Eigen::VectorXd loss_gradient(const Problem& p, const Eigen::MatrixXd& F) {
  const Eigen::VectorXd f = flatten(F);
  const int64_t C = p.classes();
  Eigen::VectorXd g(f.size());
  for (int64_t i = 0; i < p.n(); ++i) sample_grad(p, f.data() + i * C, i, g.data() + i * C);
  return g;
}

Hyper hyper_of_spec(const Spec& s, int64_t steps) {
  Hyper h;
  h.optimizer = s.optimizer;
  h.lr = s.lr;
  h.schedule = s.schedule;
  h.momentum = s.momentum;
  h.nesterov = s.nesterov;
  h.beta1 = s.beta1;
  h.beta2 = s.beta2;
  h.eps = s.eps;
  h.weight_decay = s.weight_decay;
  h.label_smoothing = s.label_smoothing;
  h.clip_norm = s.clip_grad_norm;
  h.batch_size = s.global_batch();
  h.micro_batch = h.batch_size != s.batch_size ? s.batch_size : 0;
  h.steps = steps;
  return h;
}

Eigen::MatrixXd smoothed_targets(const Eigen::MatrixXd& y, double alpha) {
  if (alpha == 0) return y;
  return ((1 - alpha) * y.array() + alpha / double(y.cols())).matrix();
}

void average_runs(Curves& cv) {
  const size_t m = cv.step.size(), runs = cv.run_loss.size();
  cv.loss.assign(m, 0.0);
  cv.acc.assign(m, 0.0);
  for (size_t r = 0; r < runs; ++r)
    for (size_t j = 0; j < m; ++j) {
      cv.loss[j] += cv.run_loss[r][j] / double(runs);
      cv.acc[j] += cv.run_acc[r][j] / double(runs);
    }
}

namespace {

// Runs `one(run, stride, L, A)` for every run on a pool of threads and averages the curves.
template <class OneRun>
Curves many_runs(const Problem& p, const Hyper& h, const SimOptions& opt, OneRun one) {
  Curves cv;
  cv.stride = std::max<int64_t>(1, (h.steps - h.t0 + 19999) / 20000);  // at most ~20k recorded points
  for (int64_t t = h.t0; t <= h.steps; t += cv.stride) cv.step.push_back(t);
  if (cv.step.back() != h.steps) cv.step.push_back(h.steps);
  const int runs = h.batch_size >= p.n() ? 1 : std::max(1, opt.runs);
  cv.run_loss.resize(size_t(runs));
  cv.run_acc.resize(size_t(runs));
  int threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min(threads, runs);
  std::atomic<int> next{0}, done{0};
  std::mutex mu;
  auto worker = [&] {
    for (int r; (r = next++) < runs;) {
      one(r, cv.stride, cv.run_loss[size_t(r)], cv.run_acc[size_t(r)]);
      int d = ++done;
      if (opt.progress) {
        std::lock_guard<std::mutex> lock(mu);
        opt.progress(d, runs);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < threads; ++k) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  average_runs(cv);
  return cv;
}

// Label smoothing: cross-entropy against the smoothed rows (loss and gradient
// both take probability rows); accuracy still compares with the labels.
Problem with_smoothing(const Problem& raw, double alpha) {
  Problem p = raw;
  p.y = smoothed_targets(raw.y, alpha);
  return p;
}

// A diverged run: the rest of the curve at +inf (as one_run does).
bool diverged(std::vector<double>& L, std::vector<double>& A, const Hyper& h, int64_t stride) {
  if (std::isfinite(L.back()) && L.back() <= kDivergedFactor * std::max(1.0, L.front())) return false;
  L.back() = INFINITY;
  while (int64_t(L.size()) < (h.steps - h.t0 + stride - 1) / stride + 1) {
    L.push_back(INFINITY);
    A.push_back(A.back());
  }
  return true;
}

// The samples of step t (the simulator's batches: epoch_permutation per epoch).
struct Batches {
  int64_t n, B, per_epoch;
  bool full;
  std::mt19937_64 rng;
  std::vector<int64_t> perm;
  Batches(int64_t n_, int64_t batch, uint64_t seed, int run)
      : n(n_), B(batch >= n_ ? n_ : batch), per_epoch(batch >= n_ ? 1 : n_ / batch), full(batch >= n_),
        rng(run_rng(seed, run)) {}
  // Positions perm[k·B .. k·B + B) of the current epoch's order (all n when full).
  const int64_t* at(int64_t t, int64_t t0) {
    const int64_t k = t % per_epoch;
    if (full) {
      if (perm.empty())
        for (int64_t i = 0; i < n; ++i) perm.push_back(i);
      return perm.data();
    }
    if (k == 0 || t == t0) perm = epoch_permutation(rng, n);
    return perm.data() + k * B;
  }
};

void adam_weights_run(const Problem& p, const Linearization& lin, const Hyper& h, int run, uint64_t seed,
                      int64_t stride, std::vector<double>& L, std::vector<double>& A) {
  const int64_t C = p.classes(), D = lin.J.cols();
  const Eigen::VectorXd F0 = flatten(p.f0);
  Eigen::VectorXd dw = Eigen::VectorXd::Zero(D), m = dw, v = dw, grad(D), F = F0;
  Batches bt(p.n(), h.batch_size, seed, run);
  Eigen::VectorXd f(C), g(C);
  L.assign(1, loss_flat(p, F));
  A.assign(1, acc_flat(p, F));
  for (int64_t t = h.t0; t < h.steps; ++t) {
    const int64_t* rows = bt.at(t, h.t0);
    grad.setZero();
    for (int64_t b = 0; b < bt.B; ++b) {
      const int64_t i = rows[b];
      f = F0.segment(i * C, C) + lin.J.middleRows(i * C, C) * dw;
      sample_grad(p, f.data(), i, g.data());
      grad.noalias() += lin.J.middleRows(i * C, C).transpose() * (g / double(bt.B));
    }
    if (h.clip_norm > 0) grad *= clip_factor(h.clip_norm, grad.squaredNorm());
    const double lr = h.lr_at(t), k = double(t - h.t0 + 1);
    if (h.optimizer == Optimizer::adam && h.weight_decay > 0) grad += h.weight_decay * (lin.w0 + dw);
    if (h.optimizer == Optimizer::adamw && h.weight_decay > 0) dw -= lr * h.weight_decay * (lin.w0 + dw);
    m = h.beta1 * m + (1 - h.beta1) * grad;
    v = h.beta2 * v + (1 - h.beta2) * grad.cwiseProduct(grad);
    const double bc1 = 1 - std::pow(h.beta1, k), bc2 = 1 - std::pow(h.beta2, k);
    dw.array() -= (lr / bc1) * m.array() / (v.array().sqrt() / std::sqrt(bc2) + h.eps);
    if ((t + 1 - h.t0) % stride == 0 || t + 1 == h.steps) {
      F = F0 + lin.J * dw;
      L.push_back(loss_flat(p, F));
      A.push_back(acc_flat(p, F));
      if (diverged(L, A, h, stride)) break;
    }
  }
}

void adam_function_run(const Problem& p, const Preconditioned& k, const Hyper& h, int run, uint64_t seed,
                       int64_t stride, std::vector<double>& L, std::vector<double>& A) {
  const int64_t n = p.n(), C = p.classes(), M = n * C;
  const Eigen::VectorXd F0 = flatten(p.f0), W0 = flatten(p.jw0), PW0 = flatten(k.jpw0);
  Eigen::VectorXd F = F0, mu = k.mu0.size() ? flatten(k.mu0) : Eigen::VectorXd::Zero(M), G(M);
  Batches bt(n, h.batch_size, seed, run);
  const int64_t B = bt.B;
  Eigen::VectorXd gb(B * C);
  // v_ref: E‖∇L_B‖² at the start over the batches (without replacement among n).
  // A fresh start: P0 is the preconditioner at v̂ = v_ref, and v̂ the EMA of the simulated
  // ‖∇L_B‖² from t0. Carried from K real steps (k.v_level > 0): the kernel's P is that of
  // a v summing to v_level · E‖∇L_B‖² at the start, v̂_K sums to v_start · E‖∇L_B‖²
  // (the memory of earlier, larger gradients), and the EMA and its bias corrections go
  // on from step K as Adam's do.
  const bool carried = k.v_level > 0;
  const double now_sq = batch_grad_sq(p, F, B, n);
  const double v_ref = now_sq * (carried ? k.v_level : 1.0);
  const int64_t s0 = carried ? 0 : h.t0;  // the step the bias corrections count from
  double vs = carried ? now_sq * k.v_start * (1 - std::pow(h.beta2, double(h.t0))) : 0;
  L.assign(1, loss_flat(p, F));
  A.assign(1, acc_flat(p, F));
  for (int64_t t = h.t0; t < h.steps; ++t) {
    const int64_t* rows = bt.at(t, h.t0);
    G.setZero();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t i = rows[b];
      sample_grad(p, F.data() + i * C, i, gb.data() + b * C);
      gb.segment(b * C, C) /= double(B);
      G.noalias() += k.theta.middleCols(i * C, C) * gb.segment(b * C, C);
    }
    // ‖∇L_B‖² = Σ_{a,b ∈ B} g_aᵀ Θ[a, b] g_b.
    double q = batch_quadratic(p.theta, rows, B, C, gb);
    if (h.clip_norm > 0) {
      // Clipping scales the batch gradient by c: its preconditioned image G by c, its
      // second moment q by c². The norm is the measured one (Problem::theta_norm).
      const double sq = p.theta_norm ? batch_quadratic(*p.theta_norm, rows, B, C, gb) : q;
      const double c = clip_factor(h.clip_norm, sq);
      G *= c;
      q *= c * c;
    }
    const double lr = h.lr_at(t), s = double(t - s0 + 1);
    if (h.optimizer == Optimizer::adam && h.weight_decay > 0)  // L2 in the gradient: J P0 (w0 + Δw), Δw ≈ P-mean
      G += h.weight_decay * (PW0 + k.p_ratio * (F - F0));
    mu = h.beta1 * mu + (1 - h.beta1) * G;
    vs = h.beta2 * vs + (1 - h.beta2) * q;
    const double bc1 = 1 - std::pow(h.beta1, s), bc2 = 1 - std::pow(h.beta2, s);
    const double scale = vs > 0 && v_ref > 0 ? std::sqrt(v_ref / (vs / bc2)) : 1.0;
    if (h.optimizer == Optimizer::adamw && h.weight_decay > 0) F -= lr * h.weight_decay * (W0 + F - F0);
    F -= (lr * scale / bc1) * mu;
    if ((t + 1 - h.t0) % stride == 0 || t + 1 == h.steps) {
      L.push_back(loss_flat(p, F));
      A.push_back(acc_flat(p, F));
      if (diverged(L, A, h, stride)) break;
    }
  }
}

}  // namespace

Curves simulate(const Problem& raw, const Hyper& h, const SimOptions& opt) {
  if (h.optimizer != Optimizer::sgd) throw std::invalid_argument("simulate: SGD only (adam.hpp simulates Adam)");
  const Problem smoothed = h.label_smoothing > 0 ? with_smoothing(raw, h.label_smoothing) : Problem{};
  const Problem& p = h.label_smoothing > 0 ? smoothed : raw;
  return many_runs(p, h, opt, [&](int r, int64_t stride, std::vector<double>& L, std::vector<double>& A) {
    one_run(p, h, r, opt.seed, stride, L, A);
  });
}

Curves simulate_adam_weights(const Problem& raw, const Linearization& lin, const Hyper& h, const SimOptions& opt) {
  const Problem p = with_smoothing(raw, h.label_smoothing);
  return many_runs(p, h, opt, [&](int r, int64_t stride, std::vector<double>& L, std::vector<double>& A) {
    adam_weights_run(p, lin, h, r, opt.seed, stride, L, A);
  });
}

Curves simulate_adam(const Problem& raw, const Preconditioned& k, const Hyper& h, const SimOptions& opt) {
  const Problem p = with_smoothing(raw, h.label_smoothing);
  return many_runs(p, h, opt, [&](int r, int64_t stride, std::vector<double>& L, std::vector<double>& A) {
    adam_function_run(p, k, h, r, opt.seed, stride, L, A);
  });
}

int64_t time_to_epsilon(const std::vector<double>& loss, double eps) {
  const double last = loss.back();
  for (size_t t = 0; t < loss.size(); ++t)
    if (std::fabs(loss[t] - last) < eps) return int64_t(t);
  return int64_t(loss.size()) - 1;  // only reached when L_T is not finite
}

int64_t first_reaching(const std::vector<double>& values, double v, bool below) {
  for (size_t t = 0; t < values.size(); ++t)
    if (below ? values[t] <= v : values[t] >= v) return int64_t(t);
  return -1;
}

int64_t target_index(const std::vector<double>& loss, const std::vector<double>& acc, TargetKind kind, double value,
                     bool* reached) {
  if (reached) *reached = true;
  if (kind == TargetKind::epsilon) return time_to_epsilon(loss, value);
  const int64_t k = kind == TargetKind::loss ? first_reaching(loss, value, true) : first_reaching(acc, value, false);
  if (k >= 0) return k;
  if (reached) *reached = false;
  return int64_t(loss.size()) - 1;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const double pos = p / 100.0 * double(v.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}

}  // namespace ttpred
