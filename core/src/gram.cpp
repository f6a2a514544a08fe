// Per-sample Jacobians and the Gram matrix Θ = J Jᵀ (the empirical NTK).
#include <chrono>
#include <random>

#include "model_impl.hpp"
#include "ttpred/error.hpp"

namespace ttpred {

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
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

Gram compute_gram(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
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
  return g;
}

}  // namespace ttpred
