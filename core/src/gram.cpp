// Per-sample Jacobians and the Gram matrix Θ = J Jᵀ (the empirical NTK).
#include <ATen/Parallel.h>
// The legacy (pre-functorch) vmap nesting counter at::impl::VmapMode: declared in
// ATen/VmapMode.h up to LibTorch 1.13 (Debian 12), in ATen/LegacyVmapMode.h in
// 2.x (Debian 13: 2.6), same class. The header itself tells which one is there.
#if __has_include(<ATen/LegacyVmapMode.h>)
#include <ATen/LegacyVmapMode.h>
#else
#include <ATen/VmapMode.h>
#endif

#include <dlfcn.h>

#include <atomic>
#include <exception>
#include <optional>
#include <random>
#include <thread>

#include "model_impl.hpp"
#include "ttpred/error.hpp"
#include "ttpred/clock.hpp"

namespace ttpred {

namespace {
constexpr int64_t kDefaultSketchDim = 8192;
}  // namespace

std::string choose_projection(const GramOptions& opt, int64_t rows, int64_t params) {
  if (opt.projection == "exact" || opt.projection == "countsketch") return opt.projection;
  const int64_t dim = opt.dim > 0 ? opt.dim : kDefaultSketchDim;
  if (params <= dim) return "exact";  // a sketch would not be smaller
  const double flops = 2.0 * double(rows) * double(rows) * double(params);
  const double bytes = 4.0 * double(rows) * double(params);
  return (flops <= opt.max_exact_flops && bytes <= opt.max_jacobian_bytes) ? "exact" : "countsketch";
}

namespace {
// The reference engine (GramOptions::method = "loop"), unchanged: one forward
// and C autograd::grad calls per sample, each row concatenated then stored.
Gram gram_loop(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
               const GramOptions& opt) {
  Model::Impl& m = model.impl();
  Gram g;
  g.n = int64_t(idx.size());
  g.classes = model.num_classes(d);
  g.params = model.num_params();
  const int64_t C = g.classes, rows = g.n * C, D = g.params;
  g.method = choose_projection(opt, rows, D);
  const bool sketch = g.method == "countsketch";
  g.dim = sketch ? (opt.dim > 0 ? opt.dim : kDefaultSketchDim) : D;
  if (!sketch && 4.0 * double(rows) * double(D) > 16e9)
    throw Error(Exit::invalid, "exact Gram matrix needs a " + std::to_string(rows) + " x " + std::to_string(D) +
                                   " Jacobian (> 16 GB): use engine.projection: countsketch");

  const auto fopt = torch::TensorOptions().dtype(torch::kFloat).device(m.device);
  // CountSketch: parameter p goes to bucket h[p] with sign s[p]; E[<Sa,Sb>] = <a,b>.
  torch::Tensor bucket, sign;
  if (sketch) {
    std::mt19937_64 rng(opt.seed ^ 0x9e3779b97f4a7c15ULL);
    std::uniform_int_distribution<int64_t> pick(0, g.dim - 1);
    bucket = torch::empty({D}, torch::kLong);
    sign = torch::empty({D}, torch::kFloat);
    auto* b = bucket.data_ptr<int64_t>();
    auto* s = sign.data_ptr<float>();
    for (int64_t p = 0; p < D; ++p) {
      uint64_t r = rng();
      b[p] = int64_t(r % uint64_t(g.dim));
      s[p] = (r >> 63) ? 1.0f : -1.0f;
    }
    bucket = bucket.to(m.device);
    sign = sign.to(m.device);
  }

  torch::Tensor J = torch::empty({rows, g.dim}, fopt);
  std::vector<torch::Tensor> flat0;
  for (const auto& p : m.params) flat0.push_back(p.detach().reshape(-1).to(torch::kFloat));
  const torch::Tensor w0 = torch::cat(flat0);
  g.f0.resize(g.n, C);
  g.jw0.resize(g.n, C);
  torch::Tensor f0_all = torch::empty({g.n, C}, torch::kDouble);
  torch::Tensor jw0_all = torch::empty({g.n, C}, torch::kFloat).to(m.device);

  double t0 = now();
  std::vector<torch::Tensor> gflat(m.params.size());
  for (int64_t r = 0; r < g.n; ++r) {
    torch::Tensor x = gather_x(d, {idx[size_t(r)]}, m.device, m.dtype);
    torch::Tensor out = run_forward(m, x);
    f0_all[r].copy_(out[0].detach().to(torch::kCPU, torch::kDouble));
    for (int64_t c = 0; c < C; ++c) {
      auto grads = torch::autograd::grad({out[0][c]}, m.params, {}, /*retain_graph=*/c + 1 < C,
                                         /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t k = 0; k < grads.size(); ++k)
        gflat[k] = grads[k].defined() ? grads[k].reshape(-1) : torch::zeros({m.params[k].numel()}, fopt);
      torch::Tensor row = torch::cat(gflat).to(torch::kFloat);
      jw0_all[r][c] = row.dot(w0);
      if (sketch)
        J[r * C + c].zero_().index_add_(0, bucket, row * sign);
      else
        J[r * C + c].copy_(row);
    }
    if (opt.progress) opt.progress("jacobian", r + 1, g.n);
  }
  if (m.device.is_cuda()) torch::cuda::synchronize();
  g.seconds_jacobian = now() - t0;

  t0 = now();
  torch::Tensor theta = torch::mm(J, J.t()).to(torch::kCPU, torch::kDouble).contiguous();
  g.seconds_gram = now() - t0;
  // Θ is symmetric: Eigen's column-major map of the row-major buffer is Θᵀ = Θ.
  g.theta = Eigen::Map<const Eigen::MatrixXd>(theta.data_ptr<double>(), rows, rows);
  g.theta = 0.5 * (g.theta + g.theta.transpose()).eval();
  auto f0c = f0_all.contiguous();
  auto jwc = jw0_all.to(torch::kCPU, torch::kDouble).contiguous();
  for (int64_t r = 0; r < g.n; ++r)
    for (int64_t c = 0; c < C; ++c) {
      g.f0(r, c) = f0c[r][c].item<double>();
      g.jw0(r, c) = jwc[r][c].item<double>();
    }
  g.engine = "loop";
  g.threads = 1;
  return g;
}
}  // namespace

namespace {

// Everything the fast engine's workers share. Rows of J are written by exactly
// one worker each, so the result does not depend on the number of workers.
struct Plan {
  Model::Impl* m = nullptr;
  const Dataset* d = nullptr;
  const std::vector<int64_t>* idx = nullptr;
  int64_t n = 0, C = 0, D = 0, dim = 0, nv = 0;  // nv: backward passes (rows) per sample
  bool sketch = false, trace = false, vmap = false, cpu = true;
  torch::Tensor V;                        // [nv, C] grad_outputs (trace only)
  std::vector<int64_t> offset, numel;     // each parameter's slice of a row
  std::vector<int32_t> bucket;            // CountSketch (CPU)
  std::vector<float> sign;
  torch::Tensor bucket_t, sign_t;         // CountSketch (device)
  torch::Tensor w0;                       // flat trainable weights (float, device)
  std::vector<float> w0h;                 // the same on the host (CPU sketch)
  torch::Tensor J;                        // [n·nv, dim], float, contiguous
  std::vector<double> f0;                 // n·C
  std::vector<double> jw0row;             // n·nv: <row, w0> (sketch, CPU)
  torch::Tensor jw0dev;                   // n·nv (sketch, device)
  torch::Tensor scale;                    // GramOptions::param_scale (float, device; undefined: none)
  std::vector<float> scaleh;              // the same on the host (CPU sketch)
  std::vector<double> row_sq;             // with a scale: ‖row‖² before it, per row
  std::atomic<bool> vmap_ok{true};

  int64_t row(int64_t r, int64_t j) const { return trace ? j * n + r : r * nv + j; }
};

void store_row(Plan& P, int64_t row, const std::vector<torch::Tensor>& grads) {
  const size_t K = grads.size();
  const bool scaled = P.scale.defined();
  if (!P.sketch) {
    torch::Tensor Jr = P.J[row];
    double sq = 0;
    for (size_t k = 0; k < K; ++k) {
      torch::Tensor dst = Jr.narrow(0, P.offset[k], P.numel[k]);
      if (!grads[k].defined()) {
        dst.zero_();
      } else if (scaled) {
        const torch::Tensor g = grads[k].reshape(-1).to(torch::kFloat);
        sq += g.pow(2).sum().item<double>();
        dst.copy_(g * P.scale.narrow(0, P.offset[k], P.numel[k]));
      } else {
        dst.copy_(grads[k].reshape(-1));
      }
    }
    if (scaled) P.row_sq[size_t(row)] = sq;
    return;
  }
  if (P.cpu) {
    float* out = P.J.data_ptr<float>() + row * P.dim;
    std::fill(out, out + P.dim, 0.0f);
    double acc = 0, sq = 0;
    for (size_t k = 0; k < K; ++k) {
      if (!grads[k].defined()) continue;
      torch::Tensor g = grads[k].to(torch::kFloat).contiguous();
      const float* gp = g.data_ptr<float>();
      const int64_t off = P.offset[k], len = P.numel[k];
      const int32_t* b = P.bucket.data() + off;
      const float* s = P.sign.data() + off;
      const float* w = P.w0h.data() + off;
      float dot = 0;
      if (scaled) {
        const float* sc = P.scaleh.data() + off;
        float raw = 0;
        for (int64_t p = 0; p < len; ++p) {
          raw += gp[p] * gp[p];
          const float v = gp[p] * sc[p];
          out[b[p]] += s[p] * v;
          dot += v * w[p];
        }
        sq += raw;
      } else {
        for (int64_t p = 0; p < len; ++p) {
          const float v = gp[p];
          out[b[p]] += s[p] * v;
          dot += v * w[p];
        }
      }
      acc += dot;
    }
    P.jw0row[size_t(row)] = acc;
    if (scaled) P.row_sq[size_t(row)] = sq;
    return;
  }
  std::vector<torch::Tensor> flat(K);
  for (size_t k = 0; k < K; ++k)
    flat[k] = grads[k].defined() ? grads[k].reshape(-1).to(torch::kFloat)
                                 : torch::zeros({P.numel[k]}, P.w0.options());
  torch::Tensor r = torch::cat(flat);
  if (scaled) {
    P.row_sq[size_t(row)] = r.dot(r).item<double>();
    r = r * P.scale;
  }
  P.J[row].zero_().index_add_(0, P.bucket_t, r * P.sign_t);
  P.jw0dev[row] = r.dot(P.w0);
}

// One sample: a batch-1 forward and its nv backward passes (or one vmapped pass).
void do_sample(Plan& P, int64_t r) {
  Model::Impl& m = *P.m;
  torch::Tensor x = gather_x(*P.d, {(*P.idx)[size_t(r)]}, m.device, m.dtype);
  torch::Tensor out = run_forward(m, x);
  {
    torch::Tensor f = out[0].detach().to(torch::kCPU, torch::kDouble).contiguous();
    std::copy(f.data_ptr<double>(), f.data_ptr<double>() + P.C, P.f0.begin() + r * P.C);
  }
  if (P.vmap && P.nv > 1 && P.vmap_ok.load()) {
    torch::Tensor V = P.trace ? P.V : torch::eye(P.C, out.options());
    std::vector<torch::Tensor> grads;
    bool ok = true;
    const int64_t level = at::impl::VmapMode::increment_nesting();
    try {
      torch::Tensor gb = at::_add_batch_dim(V.to(out.scalar_type()), 0, level);
      grads = torch::autograd::grad({out[0]}, m.params, {gb}, /*retain_graph=*/true,
                                    /*create_graph=*/false, /*allow_unused=*/true);
      for (auto& t : grads)
        if (t.defined()) t = at::_remove_batch_dim(t, level, P.nv, 0);
    } catch (const std::exception&) {
      ok = false;  // an op without a batching rule: back to one pass per row
    }
    at::impl::VmapMode::decrement_nesting();
    if (ok) {
      std::vector<torch::Tensor> gj(grads.size());
      for (int64_t j = 0; j < P.nv; ++j) {
        for (size_t k = 0; k < grads.size(); ++k) gj[k] = grads[k].defined() ? grads[k][j] : torch::Tensor();
        store_row(P, P.row(r, j), gj);
      }
      return;
    }
    P.vmap_ok = false;
  }
  for (int64_t j = 0; j < P.nv; ++j) {
    const bool retain = j + 1 < P.nv;
    std::vector<torch::Tensor> grads =
        P.trace ? torch::autograd::grad({out[0]}, m.params, {P.V[j].to(out.scalar_type())}, retain, false, true)
                : torch::autograd::grad({out[0][j]}, m.params, {}, retain, false, true);
    store_row(P, P.row(r, j), grads);
  }
}

// OpenBLAS (Debian's libtorch uses it for sgemm, e.g. in convolution backward)
// runs its own thread pool and serializes concurrent callers: with several
// workers each doing small products, one BLAS thread apiece is much faster.
struct BlasThreads {
  using Set = void (*)(int);
  using Get = int (*)();
  Set set = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  Get get = reinterpret_cast<Get>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  int saved = get ? get() : 0;
  explicit BlasThreads(int n) {
    if (set && get) set(n);
  }
  ~BlasThreads() {
    if (set && get && saved > 0) set(saved);
  }
};

// J·w0 by a central difference along w0: (f(x; (1+h) w0) − f(x; (1−h) w0)) / 2h.
Eigen::MatrixXd jw0_central_difference(Model::Impl& m, const Dataset& d, const std::vector<int64_t>& idx,
                                       int64_t C) {
  torch::NoGradGuard ng;
  const double h = 1e-2;  // float32 rounding ~1e-7/h, curvature ~h²
  // Two batched forward passes over the N0 samples: on all cores (LibTorch may
  // default to one intra-op thread), restored on the way out.
  IntraOpThreads intra_op(std::max(at::get_num_threads(), std::min(int(std::thread::hardware_concurrency()), 8)));
  std::vector<torch::Tensor> saved;
  for (auto& p : m.params) saved.push_back(p.detach().clone());
  auto forward_all = [&](double scale) {
    for (size_t k = 0; k < saved.size(); ++k) m.params[k].copy_(saved[k] * scale);
    Eigen::MatrixXd f(Eigen::Index(idx.size()), C);
    const size_t chunk = 256;
    for (size_t s = 0; s < idx.size(); s += chunk) {
      std::vector<int64_t> part(idx.begin() + long(s), idx.begin() + long(std::min(idx.size(), s + chunk)));
      torch::Tensor y = run_forward(m, gather_x(d, part, m.device, m.dtype)).to(torch::kCPU, torch::kDouble).contiguous();
      for (int64_t r = 0; r < y.size(0); ++r)
        for (int64_t c = 0; c < C; ++c) f(Eigen::Index(s) + r, c) = y.data_ptr<double>()[r * C + c];
    }
    return f;
  };
  Eigen::MatrixXd out;
  try {
    Eigen::MatrixXd fp = forward_all(1 + h), fm = forward_all(1 - h);
    out = (fp - fm) / (2 * h);
  } catch (...) {
    for (size_t k = 0; k < saved.size(); ++k) m.params[k].copy_(saved[k]);
    throw;
  }
  for (size_t k = 0; k < saved.size(); ++k) m.params[k].copy_(saved[k]);
  return out;
}

// J Jᵀ, computing only the upper block triangle and mirroring it.
torch::Tensor gram_product(const torch::Tensor& J, bool symmetric, const Progress& progress) {
  const int64_t rows = J.size(0);
  if (!symmetric || rows < 1024) return torch::mm(J, J.t());
  torch::Tensor G = torch::empty({rows, rows}, J.options());
  const int64_t blocks = 8, bs = (rows + blocks - 1) / blocks;  // 9/16 of the flops of mm
  // Block k costs (blocks - k) units: the progress counts flops.
  const int64_t units = blocks * (blocks + 1) / 2;
  int64_t done = 0;
  if (progress) progress("gram", 0, units);
  for (int64_t s = 0; s < rows; s += bs) {
    const int64_t len = std::min(bs, rows - s), rest = rows - s;
    torch::Tensor S = torch::mm(J.narrow(0, s, len), J.narrow(0, s, rest).t());  // [len, rest]
    G.narrow(0, s, len).narrow(1, s, rest).copy_(S);
    if (rest > len) G.narrow(0, s + len, rest - len).narrow(1, s, len).copy_(S.narrow(1, len, rest - len).t());
    if (progress && J.is_cuda()) torch::cuda::synchronize();  // count finished work, not queued kernels
    done += (rest + bs - 1) / bs;
    if (progress) progress("gram", std::min(done, units), units);
  }
  return G;
}

Gram gram_fast(const Model& model, const Dataset& d, const std::vector<int64_t>& idx, const GramOptions& opt,
               const std::string& engine) {
  Model::Impl& m = model.impl();
  Gram g;
  g.engine = engine;
  g.n = int64_t(idx.size());
  g.classes = model.num_classes(d);
  g.params = model.num_params();
  g.trace_k = std::max<int64_t>(0, opt.trace_k);
  Plan P;
  P.m = &m;
  P.d = &d;
  P.idx = &idx;
  P.n = g.n;
  P.C = g.classes;
  P.D = g.params;
  P.trace = g.trace_k > 0;
  P.nv = P.trace ? g.trace_k : P.C;
  P.vmap = engine == "vmap";
  P.cpu = !m.device.is_cuda();
  const int64_t rows = P.n * P.nv;
  g.method = choose_projection(opt, rows, P.D);
  P.sketch = g.method == "countsketch";
  g.dim = P.dim = P.sketch ? (opt.dim > 0 ? opt.dim : kDefaultSketchDim) : P.D;
  if (!P.sketch && 4.0 * double(rows) * double(P.D) > 16e9)
    throw Error(Exit::invalid, "exact Gram matrix needs a " + std::to_string(rows) + " x " + std::to_string(P.D) +
                                   " Jacobian (> 16 GB): use engine.projection: countsketch");
  const auto fopt = torch::TensorOptions().dtype(torch::kFloat).device(m.device);
  for (const auto& p : m.params) {
    P.offset.push_back(P.offset.empty() ? 0 : P.offset.back() + P.numel.back());
    P.numel.push_back(p.numel());
  }
  {
    std::vector<torch::Tensor> flat0;
    for (const auto& p : m.params) flat0.push_back(p.detach().reshape(-1).to(torch::kFloat));
    P.w0 = torch::cat(flat0).contiguous();
  }
  if (!opt.param_scale.empty()) {
    if (int64_t(opt.param_scale.size()) != P.D || P.trace)
      throw std::invalid_argument("gram: param_scale needs one value per parameter, without trace_k");
    P.scaleh = opt.param_scale;
    P.scale = torch::from_blob(P.scaleh.data(), {P.D}, torch::kFloat).clone().to(m.device);
    P.w0 = (P.w0 * P.scale).contiguous();  // <S row, S w0> = J S² w0
    P.row_sq.assign(size_t(rows), 0.0);
  }
  if (P.sketch) {  // the same buckets and signs as the loop engine, for a seed
    std::mt19937_64 rng(opt.seed ^ 0x9e3779b97f4a7c15ULL);
    P.bucket.resize(size_t(P.D));
    P.sign.resize(size_t(P.D));
    for (int64_t p = 0; p < P.D; ++p) {
      uint64_t r = rng();
      P.bucket[size_t(p)] = int32_t(r % uint64_t(P.dim));
      P.sign[size_t(p)] = (r >> 63) ? 1.0f : -1.0f;
    }
    if (P.cpu) {
      torch::Tensor w = P.w0.to(torch::kCPU).contiguous();
      P.w0h.assign(w.data_ptr<float>(), w.data_ptr<float>() + P.D);
      P.jw0row.assign(size_t(rows), 0.0);
    } else {
      P.bucket_t = torch::from_blob(P.bucket.data(), {P.D}, torch::kInt).to(torch::kLong).to(m.device);
      P.sign_t = torch::from_blob(P.sign.data(), {P.D}, torch::kFloat).to(m.device);
      P.jw0dev = torch::zeros({rows}, fopt);
    }
  }
  if (P.trace) {  // Rademacher output projections, shared by all samples
    std::mt19937_64 rng(opt.seed ^ 0x5851f42d4c957f2dULL);
    torch::Tensor V = torch::empty({P.nv, P.C}, torch::kFloat);
    float* v = V.data_ptr<float>();
    for (int64_t i = 0; i < P.nv * P.C; ++i) v[i] = (rng() >> 63) ? 1.0f : -1.0f;
    P.V = V.to(m.device);
  }
  P.J = torch::empty({rows, P.dim}, fopt);
  P.f0.assign(size_t(P.n * P.C), 0.0);

  int threads = opt.threads > 0 ? opt.threads : int(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  if (!P.cpu) threads = 1;
  // The first samples run alone: TorchScript's profiling executor specializes
  // the graph on its first runs, which should not race.
  const int64_t warm = std::min<int64_t>(P.n, 2);
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, P.n - warm)));
  g.threads = threads;

  double t0 = now();
  std::optional<BlasThreads> blas;
  if (P.cpu) blas.emplace(1);  // per-sample products are small: no BLAS threads
  for (int64_t r = 0; r < warm; ++r) {
    do_sample(P, r);
    if (opt.progress) opt.progress("jacobian", r + 1, P.n);
  }
  if (threads == 1) {
    for (int64_t r = warm; r < P.n; ++r) {
      do_sample(P, r);
      if (opt.progress) opt.progress("jacobian", r + 1, P.n);
    }
  } else {
    const int saved_threads = at::get_num_threads();
    std::atomic<int64_t> next{warm}, done{warm};
    std::atomic<bool> failed{false};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
    auto work = [&](int w) {
      try {
        at::set_num_threads(1);  // workers share the cores; no nested intra-op pools
        for (int64_t r; !failed.load() && (r = next.fetch_add(1)) < P.n;) {
          do_sample(P, r);
          const int64_t k = done.fetch_add(1) + 1;
          if (w == 0 && opt.progress) opt.progress("jacobian", k, P.n);  // from the caller's thread only
        }
      } catch (...) {
        errors[size_t(w)] = std::current_exception();
        failed = true;
      }
    };
    std::vector<std::thread> pool;
    for (int w = 1; w < threads; ++w) pool.emplace_back(work, w);
    work(0);
    for (auto& t : pool) t.join();
    at::set_num_threads(saved_threads);
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    if (opt.progress) opt.progress("jacobian", P.n, P.n);
  }
  blas.reset();
  if (P.vmap && !P.vmap_ok.load()) g.engine = "fast";  // vmap fell back
  if (m.device.is_cuda()) torch::cuda::synchronize();
  g.seconds_jacobian = now() - t0;

  t0 = now();
  const int64_t n = P.n, C = P.C;
  g.f0 = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(P.f0.data(), n, C);
  if (P.trace) {
    // K[i,l] = (1/(C k)) Σ_j <J_iᵀ v_j, J_lᵀ v_j>; rows are j-major.
    torch::Tensor Jv = P.J.view({P.nv, n, P.dim});
    torch::Tensor K = torch::bmm(Jv, Jv.transpose(1, 2)).sum(0).div(double(C * P.nv));
    K = K.to(torch::kCPU, torch::kDouble).contiguous();
    g.kernel = Eigen::Map<const Eigen::MatrixXd>(K.data_ptr<double>(), n, n);
    g.kernel = 0.5 * (g.kernel + g.kernel.transpose()).eval();
    g.theta = Eigen::MatrixXd::Zero(n * C, n * C);
    for (int64_t l = 0; l < n; ++l)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < C; ++c) g.theta(i * C + c, l * C + c) = g.kernel(i, l);
  } else {
    torch::Tensor theta = gram_product(P.J, opt.symmetric_product, opt.progress).to(torch::kCPU, torch::kDouble).contiguous();
    // Θ is symmetric: Eigen's column-major map of the row-major buffer is Θᵀ = Θ.
    g.theta = Eigen::Map<const Eigen::MatrixXd>(theta.data_ptr<double>(), rows, rows);
    g.theta = 0.5 * (g.theta + g.theta.transpose()).eval();
  }
  if (m.device.is_cuda()) torch::cuda::synchronize();
  g.seconds_gram = now() - t0;
  for (double v : P.row_sq) g.trace_unscaled += v;

  // J·w0 (n × C), outside both timings as in the loop engine's Θ phase.
  if (!opt.jw0) {
    g.jw0 = Eigen::MatrixXd::Zero(n, C);
  } else if (P.trace) {
    g.jw0 = jw0_central_difference(m, d, idx, C);
  } else {
    g.jw0.resize(n, C);
    std::vector<double> jw(static_cast<size_t>(rows));
    if (!P.sketch) {
      torch::Tensor t = torch::mv(P.J, P.w0).to(torch::kCPU, torch::kDouble).contiguous();
      std::copy(t.data_ptr<double>(), t.data_ptr<double>() + rows, jw.begin());
    } else if (P.cpu) {
      jw = P.jw0row;
    } else {
      torch::Tensor t = P.jw0dev.to(torch::kCPU, torch::kDouble).contiguous();
      std::copy(t.data_ptr<double>(), t.data_ptr<double>() + rows, jw.begin());
    }
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < C; ++c) g.jw0(r, c) = jw[size_t(r * C + c)];
  }
  return g;
}

}  // namespace

Gram compute_gram(const Model& model, const Dataset& d, const std::vector<int64_t>& idx, const GramOptions& opt) {
  const std::string& e = opt.method;
  if (e != "auto" && e != "loop" && e != "fast" && e != "vmap")
    throw Error(Exit::invalid, "Gram method '" + e + "': expected auto, loop, fast or vmap");
  if (e == "loop" && opt.trace_k <= 0 && opt.param_scale.empty()) return gram_loop(model, d, idx, opt);
  return gram_fast(model, d, idx, opt, e == "vmap" ? "vmap" : "fast");
}
}  // namespace ttpred
