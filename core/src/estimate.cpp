#include "ttpred/estimate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <sstream>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/error.hpp"
#include "ttpred/finetune.hpp"

namespace ttpred {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

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

}  // namespace

int64_t default_subset(int64_t n, int64_t classes) {
  return std::min<int64_t>(n, std::max<int64_t>(16, 2500 / std::max<int64_t>(1, classes)));
}

Prediction estimate(const Spec& s, const EstimateOptions& opt) {
  const double t_begin = now();
  Prediction P;
  P.spec = s;
  double t0 = now();
  Model model(s.model, s.device);
  Dataset d = load_dataset(s);
  const int64_t C = model.num_classes(d);
  if (d.has_labels()) {
    for (size_t i = 0; i < d.y.size(); ++i)
      if (d.y[i] >= C)
        throw Error(Exit::invalid, d.source + ": y: label " + std::to_string(d.y[i]) + " of sample " +
                                       std::to_string(i) + " is out of range for a model with C=" +
                                       std::to_string(C) + " outputs");
  } else {
    if (s.loss == Loss::cross_entropy)
      s.fail("loss", "cross_entropy needs int64 class ids in y; " + d.source + " holds float targets (use mse)");
    if (d.target_dim != C)
      throw Error(Exit::invalid, d.source + ": y: float targets have " + std::to_string(d.target_dim) +
                                     " columns but the model has C=" + std::to_string(C) + " outputs");
  }
  P.device = model.device();
  P.params = model.num_params();
  P.classes = C;
  P.available = d.available;
  P.size = s.data.size > 0 ? s.data.size : d.n;
  if (P.size > d.available)
    P.warnings.push_back("data.size (" + std::to_string(P.size) + ") exceeds the " + std::to_string(d.available) +
                         " samples in " + d.source + ": predicting for a larger dataset than the one at hand");
  if (s.batch_size > P.size)
    s.fail("optimizer.batch_size", "(" + std::to_string(s.batch_size) + ") exceeds the " +
                                       std::to_string(P.size) + " training samples");
  P.subset = s.data.subset > 0 ? s.data.subset : default_subset(d.n, C);
  if (P.subset > d.n)
    s.fail("data.subset", "(" + std::to_string(P.subset) + ") exceeds the " + std::to_string(d.n) +
                              " samples available in " + d.source);
  // A seeded uniform subset of the N samples (all of them when N0 = N).
  std::vector<int64_t> idx(size_t(d.n));
  for (int64_t i = 0; i < d.n; ++i) idx[size_t(i)] = i;
  if (P.subset < d.n) {
    std::mt19937_64 rng = run_rng(s.seed, -1);
    for (int64_t i = 0; i < P.subset; ++i) {
      int64_t j = i + int64_t(rng() % uint64_t(d.n - i));
      std::swap(idx[size_t(i)], idx[size_t(j)]);
    }
    idx.resize(size_t(P.subset));
    std::sort(idx.begin(), idx.end());
  }
  P.steps_per_epoch = P.size / s.batch_size;
  P.horizon = s.steps > 0 ? s.steps : int64_t(std::ceil(s.epochs * double(P.steps_per_epoch) - 1e-9));
  if (P.horizon <= 0) s.fail("training.epochs", "gives a horizon of 0 steps");

  Problem prob;
  prob.loss = s.loss;
  prob.y = Eigen::MatrixXd::Zero(P.subset, C);
  prob.labels.resize(size_t(P.subset));
  for (int64_t r = 0; r < P.subset; ++r) {
    const int64_t i = idx[size_t(r)];
    if (d.has_labels()) {
      prob.y(r, d.y[size_t(i)]) = 1.0;
      prob.labels[size_t(r)] = d.y[size_t(i)];
    } else {
      for (int64_t c = 0; c < C; ++c) prob.y(r, c) = d.targets[size_t(i * C + c)];
      Eigen::Index am;
      prob.y.row(r).maxCoeff(&am);
      prob.labels[size_t(r)] = am;
    }
  }
  P.timing.emplace_back("load", now() - t0);

  GramOptions go;
  go.projection = s.projection;
  go.dim = s.projection_dim;
  go.seed = s.seed;
  go.progress = opt.progress;
  Gram g = compute_gram(model, d, idx, go);
  P.timing.emplace_back("jacobian", g.seconds_jacobian);
  P.timing.emplace_back("gram", g.seconds_gram);
  P.gram_method = g.method;
  P.gram_dim = g.dim;
  P.gram_rows = g.n * g.classes;
  if (g.method == "countsketch" && g.dim < 4 * P.gram_rows)
    P.warnings.push_back("Gram matrix estimated with a CountSketch of dimension " + std::to_string(g.dim) +
                         " < 4 x its " + std::to_string(P.gram_rows) + " rows: raise engine.projection_dim " +
                         "for less noise");

  t0 = now();
  prob.theta = std::move(g.theta);
  prob.f0 = std::move(g.f0);
  prob.jw0 = std::move(g.jw0);
  Hyper h;
  h.lr = s.lr;
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
  Curves cv = simulate(prob, h, so);

  // Stability of the linearized full-batch map: η λ_max(H) < 2 (1 + m), with H
  // the loss Hessian in function space (2/C·Θ/N0 for MSE; ≤ ½·Θ/N0 for CE).
  const double curv = s.loss == Loss::mse ? 2.0 / double(C) : 0.5;
  P.lr_stability = s.lr * curv * top_eigenvalue(prob.theta) / double(P.subset) / (2.0 * (1.0 + s.momentum));
  P.timing.emplace_back("simulate", now() - t0);

  // T on the mean curve; its band from the runs.
  auto target_index = [&](const std::vector<double>& loss, const std::vector<double>& acc, bool& reached) {
    reached = true;
    int64_t k;
    if (s.target == TargetKind::epsilon) return time_to_epsilon(loss, s.target_value);
    k = s.target == TargetKind::loss ? first_reaching(loss, s.target_value, true)
                                     : first_reaching(acc, s.target_value, false);
    if (k < 0) {
      reached = false;
      return int64_t(loss.size()) - 1;
    }
    return k;
  };
  int64_t k = target_index(cv.loss, cv.acc, P.reached);
  P.steps = cv.step[size_t(k)];
  std::vector<double> ts, finals;
  for (size_t r = 0; r < cv.run_loss.size(); ++r) {
    bool ok;
    ts.push_back(double(cv.step[size_t(target_index(cv.run_loss[r], cv.run_acc[r], ok))]));
    finals.push_back(cv.run_loss[r].back());
  }
  P.steps_lo = std::min<int64_t>(P.steps, int64_t(std::floor(percentile(ts, 5))));
  P.steps_hi = std::max<int64_t>(P.steps, int64_t(std::ceil(percentile(ts, 95))));
  P.initial_loss = cv.loss.front();
  P.final_loss = cv.loss.back();
  P.final_accuracy = cv.acc.back();
  P.final_lo = percentile(finals, 5);
  P.final_hi = percentile(finals, 95);
  if (!std::isfinite(P.final_loss))
    P.warnings.push_back("the linearized dynamics diverge at lr " + fmt_num(s.lr) +
                         " (stability ratio " + fmt_num(P.lr_stability) + " > 1): the real run is likely unstable too");
  else if (P.lr_stability > 1)
    P.warnings.push_back("lr " + fmt_num(s.lr) + " is beyond the linearized model's stability limit (ratio " +
                         fmt_num(P.lr_stability) + "): expect the real run to leave the linear regime");
  if (!P.reached)
    P.warnings.push_back(std::string("target ") + to_string(s.target) + " " + fmt_num(s.target_value) +
                         " is not reached within the horizon of " + std::to_string(P.horizon) + " steps");
  if (P.subset < P.size)
    P.warnings.push_back("Theta computed on " + std::to_string(P.subset) + " of " + std::to_string(P.size) +
                         " samples: dynamics simulated on that subset (mean-field), see docs/method.md");

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

  // Seconds per step.
  t0 = now();
  if (s.step_seconds > 0) {
    P.step_seconds = P.step_lo = P.step_hi = s.step_seconds;
    P.step_source = "spec";
  } else {
    std::vector<int64_t> all(size_t(d.n));
    for (int64_t i = 0; i < d.n; ++i) all[size_t(i)] = i;
    Eigen::MatrixXd targets = Eigen::MatrixXd::Zero(d.n, C);
    for (int64_t i = 0; i < d.n; ++i)
      for (int64_t c = 0; c < C; ++c)
        targets(i, c) = d.has_labels() ? double(d.y[size_t(i)] == c) : d.targets[size_t(i * C + c)];
    auto secs = time_sgd_steps(model, d, s.loss, targets, s.lr, s.momentum, s.weight_decay, s.batch_size,
                               s.calibrate_steps > 0 ? s.calibrate_steps : 5, s.seed);
    P.step_seconds = percentile(secs, 50);
    P.step_lo = percentile(secs, 10);
    P.step_hi = percentile(secs, 90);
    P.step_source = "measured";
  }
  P.timing.emplace_back("calibrate", now() - t0);
  if (reference_blas_suspected())
    P.warnings.push_back("LibTorch runs on the reference BLAS (20-50x slower): install libopenblas0-pthread");
  P.timing.emplace_back("total", now() - t_begin);
  return P;
}

}  // namespace ttpred
