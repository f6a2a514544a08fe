// Adam's preconditioned kernel Θ_P = J P0 Jᵀ at w0 (docs/method.md §3b) and the
// explicit linearization of small models (the weight-space oracle's input).
#include <cmath>
#include <random>
#include <stdexcept>

#include "model_impl.hpp"
#include "ttpred/adam.hpp"
#include "ttpred/clock.hpp"
#include "ttpred/error.hpp"

namespace ttpred {

namespace {

// ∂f_c(x)/∂w of the trainable parameters, flattened (zeros for unused ones).
torch::Tensor flat_grad(Model::Impl& m, const torch::Tensor& y, bool retain) {
  auto grads = torch::autograd::grad({y}, m.params, {}, retain, /*create_graph=*/false, /*allow_unused=*/true);
  std::vector<torch::Tensor> flat(grads.size());
  for (size_t k = 0; k < grads.size(); ++k)
    flat[k] = grads[k].defined() ? grads[k].reshape(-1).to(torch::kDouble)
                                 : torch::zeros({m.params[k].numel()}, torch::TensorOptions().dtype(torch::kDouble).device(m.device));
  return torch::cat(flat);
}

torch::Tensor flat_weights(const Model::Impl& m) {
  std::vector<torch::Tensor> flat;
  for (const auto& p : m.params) flat.push_back(p.detach().reshape(-1).to(torch::kDouble));
  return torch::cat(flat);
}

// P^½ = (√v + ε)^−½ per weight; a coordinate with no gradient at all (and
// eps = 0) gets the largest finite weight.
torch::Tensor sqrt_preconditioner(const torch::Tensor& v, double eps) {
  const torch::Tensor denom = v.clamp_min(0).sqrt() + eps;
  const double floor = std::max(denom.max().item<double>() * 1e-12, 1e-300);
  return denom.clamp_min(floor).rsqrt();
}

// Pass 2: Θ_P = (J P^½)(J P^½)ᵀ, J P w and tr Θ_P / tr Θ on samples idx, at the
// model's weights; on the Gram's threaded engine, or the serial reference loop.
Preconditioned kernel_with(const Model& model, const Dataset& d, const std::vector<int64_t>& idx, int64_t C,
                           const torch::Tensor& sqrtP, const GramOptions& go, double t_start) {
  Model::Impl& m = model.impl();
  const int64_t n = int64_t(idx.size()), D = model.num_params(), rows = n * C;
  const auto dopt = torch::TensorOptions().dtype(torch::kDouble).device(m.device);
  const int64_t sketch_dim = go.dim > 0 ? go.dim : std::max<int64_t>(8192, 4 * rows);
  if (go.method != "loop") {
    // Pass 2 on the Gram's threaded engine: its Jacobian rows scaled by P0^½.
    GramOptions scaled = go;
    scaled.trace_k = 0;
    scaled.jw0 = true;
    const torch::Tensor sp = sqrtP.to(torch::kCPU, torch::kFloat).contiguous();
    scaled.param_scale.assign(sp.data_ptr<float>(), sp.data_ptr<float>() + D);
    scaled.dim = sketch_dim;
    Gram g = compute_gram(model, d, idx, scaled);
    Preconditioned k;
    k.method = g.method;
    k.dim = g.dim;
    k.theta = std::move(g.theta);
    k.jpw0 = std::move(g.jw0);
    k.p_ratio = g.trace_unscaled > 0 ? k.theta.trace() / g.trace_unscaled : 1.0;
    k.seconds = now() - t_start;
    return k;
  }
  // The reference (GramOptions::method = "loop"): one serial pass.
  const torch::Tensor pw0 = sqrtP.to(m.device) * flat_weights(m);  // P^½ w

  // Pass 2: the P0^½-scaled Jacobian rows, exactly or CountSketched.
  Preconditioned k;
  k.method = choose_projection(go, rows, D);
  const bool sketch = k.method == "countsketch";
  k.dim = sketch ? sketch_dim : D;
  if (!sketch && 4.0 * double(rows) * double(D) > 16e9)
    throw Error(Exit::invalid, "Adam's exact kernel needs a " + std::to_string(rows) + " x " + std::to_string(D) +
                                   " Jacobian (> 16 GB): use engine.projection: countsketch");
  torch::Tensor bucket, sign;
  if (sketch) {
    std::mt19937_64 rng(go.seed ^ 0xada3ULL);
    bucket = torch::empty({D}, torch::kLong);
    sign = torch::empty({D}, torch::kDouble);
    auto* b = bucket.data_ptr<int64_t>();
    auto* s = sign.data_ptr<double>();
    for (int64_t p = 0; p < D; ++p) {
      const uint64_t r = rng();
      b[p] = int64_t(r % uint64_t(k.dim));
      s[p] = (r >> 63) ? 1.0 : -1.0;
    }
    bucket = bucket.to(m.device);
    sign = sign.to(m.device);
  }
  torch::Tensor J = torch::zeros({rows, k.dim}, dopt.dtype(torch::kFloat));  // as the Gram's J
  torch::Tensor jpw0 = torch::empty({rows}, dopt);
  double trace_raw = 0;
  for (int64_t r = 0; r < n; ++r) {
    torch::Tensor out = run_forward(m, gather_x(d, {idx[size_t(r)]}, m.device, m.dtype));
    for (int64_t c = 0; c < C; ++c) {
      torch::Tensor row = flat_grad(m, out[0][c], c + 1 < C);
      trace_raw += row.dot(row).item<double>();
      row = row * sqrtP.to(m.device);
      jpw0[r * C + c] = row.dot(pw0);
      if (sketch)
        J[r * C + c].index_add_(0, bucket, (row * sign).to(torch::kFloat));
      else
        J[r * C + c].copy_(row.to(torch::kFloat));
    }
    if (go.progress) go.progress("adam kernel", r + 1, n);
  }
  torch::Tensor theta = torch::mm(J, J.t()).to(torch::kCPU, torch::kDouble).contiguous();
  k.theta = Eigen::Map<const Eigen::MatrixXd>(theta.data_ptr<double>(), rows, rows);
  k.theta = 0.5 * (k.theta + k.theta.transpose()).eval();
  torch::Tensor jp = jpw0.to(torch::kCPU).contiguous();
  k.jpw0.resize(n, C);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < C; ++c) k.jpw0(r, c) = jp.data_ptr<double>()[r * C + c];
  k.p_ratio = trace_raw > 0 ? k.theta.trace() / trace_raw : 1.0;
  k.seconds = now() - t_start;
  return k;
}

// Pass 1: v̄ = mean² + (N − B) / (N − 1) · var / B per weight, from the per-sample
// loss gradients (one backward each) over samples idx at the current weights.
torch::Tensor batch_second_moment(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
                                  const Eigen::MatrixXd& y, Loss loss, int64_t batch, int64_t population,
                                  const GramOptions& go) {
  Model::Impl& m = model.impl();
  const int64_t n = int64_t(idx.size()), C = y.cols(), D = model.num_params();
  const auto dopt = torch::TensorOptions().dtype(torch::kDouble).device(m.device);
  torch::Tensor s1 = torch::zeros({D}, dopt), s2 = torch::zeros({D}, dopt);
  for (int64_t r = 0; r < n; ++r) {
    torch::Tensor out = run_forward(m, gather_x(d, {idx[size_t(r)]}, m.device, m.dtype)).to(torch::kDouble);
    torch::Tensor t = torch::empty({1, C}, torch::kDouble);
    for (int64_t c = 0; c < C; ++c) t[0][c] = y(r, c);
    t = t.to(m.device);
    torch::Tensor l = loss == Loss::cross_entropy ? -(torch::log_softmax(out, 1) * t).sum() : (out - t).pow(2).mean();
    torch::Tensor g = flat_grad(m, l, false);
    s1 += g;
    s2 += g * g;
    if (go.progress) go.progress("adam moments", r + 1, n);
  }
  torch::Tensor mean = s1 / double(n), var = (s2 / double(n) - mean * mean).clamp_min(0);
  const int64_t B = std::min(batch, population);
  const double fpc = B >= population ? 0.0 : double(population - B) / double(population - 1);
  return mean * mean + var * (fpc / double(B));
}

}  // namespace

Preconditioned adam_kernel(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
                           const Eigen::MatrixXd& y, Loss loss, int64_t batch, int64_t population, double eps,
                           const GramOptions& go) {
  const double t_start = now();
  const torch::Tensor vbar = batch_second_moment(model, d, idx, y, loss, batch, population, go);
  return kernel_with(model, d, idx, y.cols(), sqrt_preconditioner(vbar, eps), go, t_start);
}

Preconditioned adam_kernel_after(const Model& model, const Dataset& d, const std::vector<int64_t>& idx,
                                 const Eigen::MatrixXd& y, Loss loss, int64_t batch, int64_t population, const Hyper& h,
                                 const std::vector<float>& v, int64_t K, int64_t T, const GramOptions& go) {
  const double t_start = now();
  if (int64_t(v.size()) != model.num_params())
    throw std::invalid_argument("adam_kernel_after: one second moment per trainable weight expected");
  const torch::Tensor vbar = batch_second_moment(model, d, idx, y, loss, batch, population, go).to(torch::kCPU);
  const torch::Tensor vhat =
      torch::from_blob(const_cast<float*>(v.data()), {int64_t(v.size())}, torch::kFloat).to(torch::kDouble) /
      (1 - std::pow(h.beta2, double(K)));
  const double tm = 0.5 * double(K + std::max(T, K)), bc = 1 - std::pow(h.beta2, tm);
  const double a = std::pow(h.beta2, tm - double(K)) * (1 - std::pow(h.beta2, double(K))) / bc;
  const double b = (1 - std::pow(h.beta2, tm - double(K))) / bc;
  const torch::Tensor mix = a * vhat + b * vbar;
  Preconditioned k = kernel_with(model, d, idx, y.cols(), sqrt_preconditioner(mix, h.eps), go, t_start);
  const double now_sum = vbar.sum().item<double>();
  k.v_start = now_sum > 0 ? vhat.sum().item<double>() / now_sum : 1.0;
  k.v_level = now_sum > 0 ? mix.sum().item<double>() / now_sum : 1.0;
  return k;
}

Linearization explicit_linearization(const Model& model, const Dataset& d, const std::vector<int64_t>& idx) {
  Model::Impl& m = model.impl();
  const int64_t n = int64_t(idx.size()), D = model.num_params();
  const int64_t C = model.num_classes(d);
  if (double(n) * double(C) * double(D) > 2e8)
    throw std::invalid_argument("explicit_linearization: J would hold more than 2e8 entries");
  Linearization lin;
  lin.J.resize(n * C, D);
  for (int64_t r = 0; r < n; ++r) {
    torch::Tensor out = run_forward(m, gather_x(d, {idx[size_t(r)]}, m.device, m.dtype));
    for (int64_t c = 0; c < C; ++c) {
      torch::Tensor row = flat_grad(m, out[0][c], c + 1 < C).to(torch::kCPU).contiguous();
      lin.J.row(r * C + c) = Eigen::Map<const Eigen::VectorXd>(row.data_ptr<double>(), D).transpose();
    }
  }
  torch::Tensor w = flat_weights(m).to(torch::kCPU).contiguous();
  lin.w0 = Eigen::Map<const Eigen::VectorXd>(w.data_ptr<double>(), D);
  return lin;
}

}  // namespace ttpred
