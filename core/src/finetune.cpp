#include "ttpred/finetune.hpp"
#include "ttpred/clock.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "model_impl.hpp"
#include "ttpred/dynamics.hpp"

namespace ttpred {

namespace {


torch::Tensor targets_of(const Eigen::MatrixXd& y, const std::vector<int64_t>& rows, torch::Device dev) {
  torch::Tensor t = torch::empty({int64_t(rows.size()), int64_t(y.cols())}, torch::kFloat);
  auto a = t.accessor<float, 2>();
  for (size_t r = 0; r < rows.size(); ++r)
    for (Eigen::Index c = 0; c < y.cols(); ++c) a[int64_t(r)][c] = float(y(rows[r], c));
  return t.to(dev);
}

// Mean CE (nn.CrossEntropyLoss, with label_smoothing α) or MSE of a batch.
torch::Tensor loss_fn(Loss loss, const torch::Tensor& out, const torch::Tensor& target, double alpha = 0) {
  namespace F = torch::nn::functional;
  if (loss == Loss::cross_entropy && alpha > 0)  // LibTorch's own label smoothing, on the class ids
    return F::cross_entropy(out.to(torch::kFloat), target.argmax(1), F::CrossEntropyFuncOptions().label_smoothing(alpha));
  if (loss == Loss::cross_entropy)  // target rows are one-hot: same as class-index CE
    return -(torch::log_softmax(out.to(torch::kFloat), 1) * target).sum(1).mean();
  return torch::mse_loss(out.to(torch::kFloat), target);
}

// torch.optim.SGD / Adam / AdamW with the hyper-parameters' values.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params, const Hyper& h) {
  namespace o = torch::optim;
  switch (h.optimizer) {
    case Optimizer::adam:
      return std::make_unique<o::Adam>(
          params, o::AdamOptions(h.lr).betas(std::make_tuple(h.beta1, h.beta2)).eps(h.eps).weight_decay(h.weight_decay));
    case Optimizer::adamw:
      return std::make_unique<o::AdamW>(
          params, o::AdamWOptions(h.lr).betas(std::make_tuple(h.beta1, h.beta2)).eps(h.eps).weight_decay(h.weight_decay));
    default:
      return std::make_unique<o::SGD>(
          params, o::SGDOptions(h.lr).momentum(h.momentum).weight_decay(h.weight_decay).nesterov(h.nesterov));
  }
}

// One real optimizer step on samples `src` (rows `rows` of targets); returns its
// seconds. With micro > 0 the forward/backward passes go in chunks of `micro`
// samples (data-parallel replicas, gradient accumulation), each loss scaled by
// chunk / B: the gradient is the batch mean, as DDP's all-reduce average and a
// loss divided by the accumulation steps give.
// Adam's second moment, accumulated beside the optimizer from the gradient it
// steps on (LibTorch's own state map is keyed differently across versions).
struct SecondMoment {
  const Hyper& h;
  torch::Tensor v;               // exp_avg_sq, flattened, double
  std::vector<double>* grad_sq;  // ‖g‖² per step
  void add(const Model::Impl& m) {
    std::vector<torch::Tensor> flat;
    for (const auto& p : m.params) {
      torch::Tensor g = p.grad().defined() ? p.grad().detach().reshape(-1).to(torch::kDouble)
                                           : torch::zeros({p.numel()}, torch::TensorOptions().dtype(torch::kDouble).device(p.device()));
      if (h.optimizer == Optimizer::adam && h.weight_decay > 0) g = g + h.weight_decay * p.detach().reshape(-1).to(torch::kDouble);
      flat.push_back(g);
    }
    torch::Tensor g = torch::cat(flat);
    if (!v.defined()) v = torch::zeros_like(g);
    v.mul_(h.beta2).addcmul_(g, g, 1 - h.beta2);
    grad_sq->push_back(g.dot(g).item<double>());
  }
};

double train_step(Model::Impl& m, torch::optim::Optimizer& opt, Loss loss, double alpha, int64_t micro,
                  double clip, const Dataset& d, const std::vector<int64_t>& src, const Eigen::MatrixXd& targets,
                  const std::vector<int64_t>& rows, SecondMoment* moment = nullptr) {
  const double t0 = now();
  opt.zero_grad();
  const int64_t B = int64_t(src.size());
  if (micro <= 0 || micro >= B) {
    torch::Tensor out = run_forward(m, gather_x(d, src, m.device, m.dtype));
    loss_fn(loss, out, targets_of(targets, rows, m.device), alpha).backward();
  } else {
    for (int64_t a = 0; a < B; a += micro) {
      const int64_t e = std::min(B, a + micro);
      const std::vector<int64_t> s(src.begin() + a, src.begin() + e), r(rows.begin() + a, rows.begin() + e);
      torch::Tensor out = run_forward(m, gather_x(d, s, m.device, m.dtype));
      (loss_fn(loss, out, targets_of(targets, r, m.device), alpha) * (double(e - a) / double(B))).backward();
    }
  }
  // torch.nn.utils.clip_grad_norm_(model.parameters(), clip) between backward and step.
  if (clip > 0) torch::nn::utils::clip_grad_norm_(m.params, clip);
  if (moment) moment->add(m);
  opt.step();
  if (m.device.is_cuda()) torch::cuda::synchronize();
  return now() - t0;
}

}  // namespace

FinetuneResult finetune(Model& model, const Dataset& d, const std::vector<int64_t>& idx, Loss loss,
                        const Eigen::MatrixXd& targets, const Hyper& h, const FinetuneOptions& opt) {
  Model::Impl& m = model.impl();
  IntraOpThreads intra_op(opt.threads);
  if (opt.train_mode) m.module.train();
  const std::unique_ptr<torch::optim::Optimizer> optimizer = make_optimizer(m.params, h);
  const int64_t n = int64_t(idx.size());
  const bool full = h.batch_size >= n;
  const int64_t B = full ? n : h.batch_size, per_epoch = full ? 1 : n / B;
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[size_t(i)] = i;
  // Evaluated samples (positions in idx): all, or the tracked ones.
  const std::vector<int64_t>& eval_pos = opt.track.empty() ? all : opt.track;
  const int64_t ne = int64_t(eval_pos.size());
  for (int64_t p : eval_pos)
    if (p < 0 || p >= n) throw std::invalid_argument("finetune: tracked position out of range");
  // The wide evaluation: the evaluated samples first, then the wide ones.
  std::vector<int64_t> wide_pos;
  if (!opt.wide.empty()) {
    wide_pos = eval_pos;
    for (int64_t p : opt.wide) {
      if (p < 0 || p >= n) throw std::invalid_argument("finetune: wide position out of range");
      wide_pos.push_back(p);
    }
  }
  size_t next_wide = 0;  // in opt.wide_at
  // Loss and accuracy on them (in chunks); their outputs too when `f` is given.
  // At a step of wide_at, on the wide samples too (the evaluated ones' outputs
  // are the same forward pass).
  auto evaluate = [&](FinetuneResult& r, int64_t t, Eigen::MatrixXd* f = nullptr) {
    const bool at_wide = t >= 0 && next_wide < opt.wide_at.size() && opt.wide_at[next_wide] == t;
    if (at_wide) ++next_wide;
    const bool wide_now = at_wide && !wide_pos.empty();
    // Outputs of the wide samples too: their forward pass (at K − 1 it is one of its own).
    const bool wide_f = f && opt.wide_outputs && !wide_pos.empty();
    const std::vector<int64_t>& pos = wide_now || wide_f ? wide_pos : eval_pos;
    const int64_t nf = wide_f ? int64_t(wide_pos.size()) : ne;  // rows of f
    const int64_t np = int64_t(pos.size());
    double s_all = 0;
    int64_t ok_all = 0;
    torch::NoGradGuard ng;
    // Evaluated as model.eval() does (BatchNorm's running statistics), also when
    // training in train mode: the evaluation changes nothing.
    struct EvalMode {
      Model::Impl& m;
      bool train;
      ~EvalMode() {
        if (train) m.module.train();
      }
    } mode{m, opt.train_mode};
    if (opt.train_mode) m.module.eval();
    double s = 0;
    int64_t ok = 0;
    const int64_t chunk = 512;
    for (int64_t a = 0, b = 0; a < np; a = b) {
      // A chunk never straddles the tracked/wide boundary: its sums go to one or the other.
      b = a < ne ? std::min(ne, a + chunk) : std::min(np, a + chunk);
      std::vector<int64_t> rows(pos.begin() + a, pos.begin() + b);
      std::vector<int64_t> src(rows.size());
      for (size_t k = 0; k < rows.size(); ++k) src[k] = idx[size_t(rows[k])];
      torch::Tensor out = run_forward(m, gather_x(d, src, m.device, m.dtype));
      if (t >= 0) {
        torch::Tensor tg = targets_of(targets, rows, m.device);
        const double ls = loss_fn(loss, out, tg, h.label_smoothing).item<double>() * double(rows.size());
        const int64_t lok = (out.argmax(1) == tg.argmax(1)).sum().item<int64_t>();
        s_all += ls, ok_all += lok;
        if (a < ne) s += ls, ok += lok;
      }
      if (f && a < nf) {
        torch::Tensor o = out.to(torch::kCPU, torch::kDouble).contiguous();
        if (f->size() == 0) f->resize(nf, o.size(1));
        auto acc = o.accessor<double, 2>();
        for (int64_t q = 0; q < o.size(0); ++q)
          for (int64_t c = 0; c < o.size(1); ++c) (*f)(a + q, c) = acc[q][c];
      }
    }
    if (t < 0) return;  // outputs only
    r.step.push_back(t);
    r.loss.push_back(s / double(ne));
    r.acc.push_back(double(ok) / double(ne));
    if (wide_now) {
      r.wide_step.push_back(t);
      r.wide_tracked_loss.push_back(r.loss.back());
      r.wide_tracked_acc.push_back(r.acc.back());
      r.wide_loss.push_back(s_all / double(np));
      r.wide_acc.push_back(double(ok_all) / double(np));
    }
  };
  FinetuneResult r;
  const double t_start = now();
  double train = 0;
  evaluate(r, 0);
  std::mt19937_64 rng = run_rng(opt.seed, 0);
  std::vector<int64_t> perm = all;
  int64_t next_log = 1;  // log_ratio > 1
  SecondMoment moment{h, torch::Tensor(), &r.grad_sq};
  SecondMoment* keep = opt.keep_adam_moments && h.optimizer != Optimizer::sgd ? &moment : nullptr;
  for (int64_t t = 0; t < h.steps; ++t) {
    const int64_t k = t % per_epoch;
    if (!full && k == 0) perm = epoch_permutation(rng, n);
    std::vector<int64_t> rows(perm.begin() + k * B, perm.begin() + (k + 1) * B), src(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) src[size_t(b)] = idx[size_t(rows[size_t(b)])];
    optimizer->param_groups()[0].options().set_lr(h.lr_at(t));
    const bool last = t + 1 == h.steps;
    if (opt.keep_outputs && last) evaluate(r, -1, &r.f_prev);
    train += train_step(m, *optimizer, loss, h.label_smoothing, h.micro_batch, h.clip_norm, d, src, targets, rows, keep);
    const int64_t since = t + 1 - opt.log_from;
    bool log = opt.log_ratio > 1 ? t + 1 >= next_log : since >= 0 && since % opt.log_every == 0;
    if (next_wide < opt.wide_at.size() && opt.wide_at[next_wide] == t + 1) log = true;
    if (log && opt.log_ratio > 1)
      next_log = std::max(t + 2, int64_t(std::ceil(double(t + 1) * opt.log_ratio - 1e-9)));
    if (log || last) evaluate(r, t + 1, opt.keep_outputs && last ? &r.f_last : nullptr);
    if (opt.progress) opt.progress("finetune", t + 1, h.steps);
  }
  if (opt.keep_outputs) {
    if (r.f_last.size() == 0) evaluate(r, -1, &r.f_last);  // no steps
    if (r.f_prev.size() == 0) r.f_prev = r.f_last;
  }
  if (moment.v.defined()) {
    const torch::Tensor v = moment.v.to(torch::kCPU, torch::kFloat).contiguous();
    r.adam_v.assign(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
  }
  m.module.eval();
  r.steps = h.steps;
  r.seconds_train = train;
  r.seconds_total = now() - t_start;
  return r;
}

// The trainable parameters, then every buffer (BatchNorm's running statistics and
// counters, which train-mode steps update).
Weights save_weights(const Model& model) {
  auto saved = std::make_shared<std::vector<torch::Tensor>>();
  for (const auto& p : model.impl().params) saved->push_back(p.detach().clone());
  for (const auto& b : model.impl().module.buffers(/*recurse=*/true)) saved->push_back(b.detach().clone());
  return Weights{saved};
}

void restore_weights(Model& model, const Weights& w) {
  auto& saved = *static_cast<std::vector<torch::Tensor>*>(w.data.get());
  torch::NoGradGuard ng;
  auto& params = model.impl().params;
  size_t i = 0;
  for (; i < params.size() && i < saved.size(); ++i) params[i].copy_(saved[i]);
  for (const auto& b : model.impl().module.buffers(/*recurse=*/true))
    if (i < saved.size()) b.detach().copy_(saved[i++]);
  for (auto& p : params)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

std::vector<double> time_train_steps(Model& model, const Dataset& d, Loss loss, const Eigen::MatrixXd& targets,
                                     const Hyper& h, bool train_mode, int k, uint64_t seed) {
  Model::Impl& m = model.impl();
  const Weights saved = save_weights(model);
  if (train_mode) m.module.train();
  const std::unique_ptr<torch::optim::Optimizer> optimizer = make_optimizer(m.params, h);
  const int64_t n = std::min<int64_t>(d.n, targets.rows());
  const int64_t B = std::min(h.batch_size, n);
  std::mt19937_64 rng = run_rng(seed, 7);
  std::vector<double> secs;
  for (int s = 0; s < k + 1; ++s) {
    std::vector<int64_t> perm = epoch_permutation(rng, n);
    std::vector<int64_t> rows(perm.begin(), perm.begin() + B);
    const double sec = train_step(m, *optimizer, loss, h.label_smoothing, h.micro_batch, h.clip_norm, d, rows, targets, rows);
    if (s > 0) secs.push_back(sec);  // the first step warms caches and allocators
  }
  m.module.eval();
  restore_weights(model, saved);
  return secs;
}

}  // namespace ttpred
