// Stage: Θ at w0 on the N0 samples (docs/method.md §2): the seeded subset, the
// per-sample Jacobians and the Gram matrix (exact, CountSketch or trace-NTK),
// from the cache when a resubmission or another hyper-parameter set computed it.
#include <algorithm>
#include <optional>
#include <random>

#include "stages.hpp"
#include "ttpred/cache.hpp"

namespace ttpred {

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

std::vector<int64_t> draw_subset(int64_t pool, int64_t n0, const Spec& s) {
  if (s.data.draw_first) return choose_subset(pool, n0, s.seed);
  std::vector<int64_t> idx(static_cast<size_t>(std::min(n0, pool)));
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
  return idx;
}

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

Kernel make_kernel(const Model& model, const Dataset& d, const std::vector<int64_t>& idx, const Spec& s, int64_t C,
                   const EstimateOptions& opt, bool jw0) {
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

}  // namespace ttpred
