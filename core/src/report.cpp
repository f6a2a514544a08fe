// JSON (docs/json.md) and the human summary of a Prediction.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "ttpred/estimate.hpp"

namespace ttpred {

namespace {
// JSON has no Inf/NaN: a diverged loss is reported as null.
nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

std::string duration(double s) {
  if (!std::isfinite(s)) return "?";
  if (s < 120) return fmt::format("{:.1f} s", s);
  if (s < 7200) return fmt::format("{:.1f} min", s / 60);
  return fmt::format("{:.2f} h", s / 3600);
}
// "constant", "cosine to min_lr 0.0005, warm-up 50 steps", "step x0.1 every 100 steps", ...
std::string schedule_text(const Schedule& c) {
  std::string o = c.type;
  if (c.type == "step") o += fmt::format(" x{} every {} steps", c.gamma, c.step_size);
  if (c.type == "cosine" || c.type == "linear") o += fmt::format(" to min_lr {}", c.min_lr);
  if (c.type == "table" && !c.factors.empty())
    o += fmt::format(" of {} steps, x{:.3g} to x{:.3g}", c.factors.size(),
                     *std::min_element(c.factors.begin(), c.factors.end()),
                     *std::max_element(c.factors.begin(), c.factors.end()));
  if (c.warmup_steps > 0) o += fmt::format(", warm-up {} steps", c.warmup_steps);
  return o + " (stepped after every optimizer step)";
}
}  // namespace

std::string to_json(const Prediction& p) {
  using nlohmann::json;
  const Spec& s = p.spec;
  json j;
  j["schema"] = 1;
  j["ttpred_version"] = TTPRED_VERSION;
  j["spec"] = s.file.empty() ? s.file : std::filesystem::absolute(s.file).lexically_normal().string();
  j["device"] = p.device;
  j["model"] = {{"path", s.model}, {"parameters", p.params}, {"classes", p.classes}};
  j["data"] = {{"source", s.data.path.empty() ? s.data.images : s.data.path},
               {"size", p.size},
               {"available", p.available},
               {"subset", p.subset},
               {"draw", s.data.draw_first ? "first" : "stratified"}};
  j["loss"] = to_string(s.loss);
  j["label_smoothing"] = s.label_smoothing;
  j["batchnorm"] = s.batchnorm_train ? "train" : "eval";
  j["optimizer"] = {{"name", to_string(s.optimizer)}, {"lr", s.lr}, {"momentum", s.momentum},
                    {"nesterov", s.nesterov}, {"betas", {s.beta1, s.beta2}}, {"eps", s.eps},
                    {"weight_decay", s.weight_decay}, {"batch_size", s.batch_size},
                    {"accumulation_steps", s.accumulation_steps}, {"global_batch", s.global_batch()},
                    {"clip_grad_norm", s.clip_grad_norm > 0 ? nlohmann::json(s.clip_grad_norm) : nlohmann::json()}};
  j["schedule"] = {{"type", s.schedule.type}, {"warmup_steps", s.schedule.warmup_steps},
                   {"step_size", s.schedule.step_size}, {"gamma", s.schedule.gamma}, {"min_lr", s.schedule.min_lr}};
  if (s.schedule.type == "table") j["schedule"]["factors"] = s.schedule.factors;
  j["target"] = {{"kind", to_string(s.target)}, {"value", s.target_value}};
  j["steps"] = p.steps;
  j["reached"] = p.reached;
  j["diverged"] = p.diverged;
  j["steps_band"] = {p.steps_lo, p.steps_hi};
  j["steps_per_epoch"] = p.steps_per_epoch;
  j["epochs"] = p.steps_per_epoch > 0 ? double(p.steps) / double(p.steps_per_epoch) : 0.0;
  j["horizon_steps"] = p.horizon;
  j["initial_loss"] = num(p.initial_loss);
  j["final_loss"] = num(p.final_loss);
  j["final_loss_band"] = {num(p.final_lo), num(p.final_hi)};
  j["final_accuracy"] = num(p.final_accuracy);
  j["lr_stability"] = num(p.lr_stability);
  j["drift"] = num(p.drift);
  j["drift_steps"] = p.drift_steps;
  j["relinearized_at"] = p.relinearized_at;
  j["prefix_runs"] = p.prefix_runs;
  j["kernel_growth"] = p.kernel_growth;
  if (p.tail_subset.empty())
    j["tail"] = nullptr;
  else
    j["tail"] = {{"subset", p.tail_subset}, {"parts", p.tail_parts}};
  j["method_band"] = {p.method_lo, p.method_hi};
  if (p.relinearized_with_steps > 0) {
    const Spec::Anchor& a = s.relinearize_with;
    j["relinearized_with"] = {{"lr", a.lr}, {"momentum", a.momentum}, {"weight_decay", a.weight_decay},
                              {"batch_size", a.batch_size}, {"steps", p.relinearized_with_steps}};
  } else {
    j["relinearized_with"] = nullptr;
  }
  j["extrapolated"] = p.extrapolated;
  if (p.extrapolated) {
    json x = {{"shared_modes", num(p.shared_modes)}, {"band_width", num(p.extrapolation_width)},
              {"correction", num(p.extrapolation_factor)}};
    if (p.check_from > 0)
      x["check"] = {{"from", p.check_from}, {"to", p.subset}, {"steps", p.check_steps},
                    {"direct", p.check_direct}, {"error", num(p.check_error)}};
    j["extrapolation"] = x;
  }
  j["step_seconds"] = p.step_seconds;
  j["step_seconds_source"] = p.step_source;
  j["seconds"] = double(p.steps) * p.step_seconds;
  j["seconds_band"] = {double(p.steps_lo) * p.step_lo, double(p.steps_hi) * p.step_hi};
  j["horizon_seconds"] = double(p.horizon) * p.step_seconds;
  j["horizon_seconds_band"] = {double(p.horizon) * p.step_lo, double(p.horizon) * p.step_hi};
  j["gpus"] = s.gpus;
  j["gpu_hours"] = double(p.horizon) * p.step_seconds * double(s.gpus) / 3600.0;
  j["gpu_hours_band"] = {double(p.horizon) * p.step_lo * double(s.gpus) / 3600.0,
                         double(p.horizon) * p.step_hi * double(s.gpus) / 3600.0};
  json curve = json::array(), band = json::array(), acc = json::array();
  for (size_t i = 0; i < p.curve_step.size(); ++i) {
    curve.push_back({p.curve_step[i], num(p.curve_loss[i])});
    band.push_back({p.curve_step[i], num(p.curve_lo[i]), num(p.curve_hi[i])});
    acc.push_back({p.curve_step[i], num(p.curve_acc[i])});
  }
  j["curve"] = curve;
  j["curve_band"] = band;
  j["accuracy_curve"] = acc;
  j["gram"] = {{"method", p.gram_method},
               {"dim", p.gram_method == "exact" ? json(nullptr) : json(p.gram_dim)},
               {"rows", p.gram_rows},
               {"engine", p.gram_engine},
               {"threads", p.gram_threads},
               {"trace_k", p.gram_trace_k},
               {"cached", p.gram_cached}};
  const BudgetChoice& b = p.budget;
  j["budget"] = b.max_seconds > 0 ? json{{"max_seconds", b.max_seconds},
                                         {"requested_subset", b.requested},
                                         {"subset", b.subset},
                                         {"predicted_seconds", b.predicted},
                                         {"probe_seconds", b.probe_seconds},
                                         {"projection", b.projection},
                                         {"trace_ntk", b.trace_ntk},
                                         {"kernel_changed", b.kernel_changed}}
                                  : json(nullptr);
  json t = json::object();
  for (const auto& [k, v] : p.timing) t[k] = v;
  j["timing"] = t;
  j["warnings"] = p.warnings;
  return j.dump(1) + "\n";
}

std::string to_table(const Prediction& p) {
  const Spec& s = p.spec;
  std::string o;
  auto row = [&](const std::string& k, const std::string& v) { o += fmt::format("  {:<18} {}\n", k, v); };
  o += fmt::format("ttpred {} — predicted fine-tuning time\n", TTPRED_VERSION);
  row("spec", s.file.empty() ? "(in memory)" : s.file);
  row("model", fmt::format("{} ({} parameters, {} classes)", s.model, p.params, p.classes));
  row("data", fmt::format("N = {}, Gram on N0 = {} samples ({}{})", p.size, p.subset, p.gram_method,
                          p.gram_method == "exact" ? "" : fmt::format(", D0 = {}", p.gram_dim)));
  if (p.extrapolated)
    row("extrapolated", p.check_from > 0
                            ? fmt::format("N0 -> N: {:.0f} shared modes; self-check {} -> {} samples off by {:.0f}%, "
                                          "band widened by {:.0f}%",
                                          p.shared_modes, p.check_from, p.subset, 100 * p.check_error,
                                          100 * p.extrapolation_width)
                            : fmt::format("N0 -> N: {:.0f} shared modes (no self-check: N0 too small)", p.shared_modes));
  const std::string loss_text =
      std::string(to_string(s.loss)) + (s.label_smoothing > 0 ? fmt::format(" (label smoothing {})", s.label_smoothing) : "");
  const std::string batch = batch_text(s) + (s.clip_grad_norm > 0 ? fmt::format(", gradient norm clipped at {}", s.clip_grad_norm) : "");
  if (s.optimizer == Optimizer::sgd)
    row("training", fmt::format("{} loss, SGD lr {} momentum {}{} weight decay {}, batch {}", loss_text, s.lr, s.momentum,
                                s.nesterov ? " (Nesterov)" : "", s.weight_decay, batch));
  else
    row("training", fmt::format("{} loss, {} lr {} betas [{}, {}] eps {} weight decay {}, batch {}", loss_text,
                                s.optimizer == Optimizer::adam ? "Adam" : "AdamW", s.lr, s.beta1, s.beta2, s.eps,
                                s.weight_decay, batch));
  row("schedule", schedule_text(s.schedule));
  if (p.relinearized_with_steps > 0)
    row("re-linearized", fmt::format("Theta at w_K from {} real steps with lr {} momentum {} weight decay {}, batch {} "
                                     "(engine.relinearize_with); this job's own {} steps give the start",
                                     p.relinearized_with_steps, s.relinearize_with.lr, s.relinearize_with.momentum,
                                     s.relinearize_with.weight_decay, s.relinearize_with.batch_size, p.relinearized_at));
  row("horizon", fmt::format("{} steps ({:.2f} epochs of {} steps)", p.horizon,
                             double(p.horizon) / double(std::max<int64_t>(1, p.steps_per_epoch)), p.steps_per_epoch));
  std::string what = s.target == TargetKind::epsilon ? fmt::format("|L_t - L_T| < {}", s.target_value)
                     : s.target == TargetKind::loss  ? fmt::format("loss <= {}", s.target_value)
                                                     : fmt::format("accuracy >= {}", s.target_value);
  o += "\n";
  row("converged when", what);
  row("steps", p.diverged  ? std::string("no prediction: the linearized dynamics diverge (see the warning)")
               : p.reached ? fmt::format("{}  (90% band {} .. {})", p.steps, p.steps_lo, p.steps_hi)
                           : fmt::format("not reached within {} steps", p.horizon));
  row("epochs", fmt::format("{:.2f}", double(p.steps) / double(std::max<int64_t>(1, p.steps_per_epoch))));
  row("wall-clock", fmt::format("{}  (band {} .. {}; {:.4f} s/step, {})", duration(double(p.steps) * p.step_seconds),
                                duration(double(p.steps_lo) * p.step_lo), duration(double(p.steps_hi) * p.step_hi),
                                p.step_seconds, p.step_source));
  row("whole horizon", duration(double(p.horizon) * p.step_seconds));
  row("loss", fmt::format("{:.4f} -> {:.4f}  (final band {:.4f} .. {:.4f})", p.initial_loss, p.final_loss,
                          p.final_lo, p.final_hi));
  row("train accuracy", fmt::format("{:.1f}% at step {}", 100 * p.final_accuracy, p.horizon));
  o += "\n  predicted loss curve:\n";
  const size_t show = std::min<size_t>(p.curve_step.size(), 9);
  for (size_t k = 0; k < show; ++k) {
    size_t i = show == 1 ? 0 : k * (p.curve_step.size() - 1) / (show - 1);
    o += fmt::format("    step {:>7}  loss {:.4f}  [{:.4f} .. {:.4f}]  acc {:.1f}%\n", p.curve_step[i],
                     p.curve_loss[i], p.curve_lo[i], p.curve_hi[i], 100 * p.curve_acc[i]);
  }
  std::string tm;
  for (const auto& [k, v] : p.timing) tm += fmt::format("{}{} {:.2f} s", tm.empty() ? "" : ", ", k, v);
  o += "\n";
  row("prediction cost", tm + " on " + p.device);
  if (p.budget.max_seconds > 0)
    row("budget", fmt::format("engine.max_seconds {} s: N0 = {} (asked {}){}, predicted {:.1f} s (cost model measured in "
                              "{:.2f} s)", p.budget.max_seconds, p.budget.subset, p.budget.requested,
                              !p.budget.kernel_changed ? ""
                              : p.budget.trace_ntk > 0 ? fmt::format(", trace-NTK (K = {}) to fit", p.budget.trace_ntk)
                                                       : std::string(", Θ by CountSketch to fit"),
                              p.budget.predicted, p.budget.probe_seconds));
  return o;
}

}  // namespace ttpred

namespace ttpred {

namespace {

struct Row {
  const Prediction& p;
  double seconds() const { return double(p.steps) * p.step_seconds; }
  double horizon_seconds() const { return double(p.horizon) * p.step_seconds; }
  double gpu_hours() const { return horizon_seconds() * double(p.spec.gpus) / 3600.0; }
};

}  // namespace

std::string sweep_json(const std::vector<Prediction>& ps, double seconds) {
  using nlohmann::json;
  json runs = json::array();
  double total = 0, total_lo = 0, total_hi = 0;
  for (const Prediction& p : ps) {
    // Each row is the single-configuration object, plus the swept values on top.
    json r = json::parse(to_json(p));
    r["lr"] = p.spec.lr;
    r["batch_size"] = p.spec.batch_size;
    r["momentum"] = p.spec.momentum;
    r["weight_decay"] = p.spec.weight_decay;
    r["size"] = p.size;
    if (p.spec.epochs > 0) r["epochs_horizon"] = p.spec.epochs;
    total += Row{p}.gpu_hours();
    total_lo += r["gpu_hours_band"][0].get<double>();
    total_hi += r["gpu_hours_band"][1].get<double>();
    runs.push_back(std::move(r));
  }
  json j;
  j["schema"] = 1;
  j["ttpred_version"] = TTPRED_VERSION;
  j["spec"] = ps.empty() ? "" : runs[0]["spec"];
  j["combinations"] = ps.size();
  j["runs"] = runs;
  j["total_gpu_hours"] = total;
  j["total_gpu_hours_band"] = {total_lo, total_hi};
  j["timing"] = {{"total", seconds}};
  return j.dump(1) + "\n";
}

std::string sweep_table(const std::vector<Prediction>& ps, double seconds) {
  std::string o = fmt::format("ttpred {} — sweep of {} configurations\n", TTPRED_VERSION, ps.size());
  if (!ps.empty()) o += fmt::format("  spec {}\n", ps[0].spec.file);
  o += fmt::format("\n  {:>9} {:>6} {:>8} {:>8} {:>7} {:>8} {:>8} {:>15} {:>10} {:>11} {:>9}\n", "lr", "batch", "momentum",
                   "w.decay", "N", "horizon", "steps", "band", "seconds", "whole run", "GPU-h");
  double total = 0;
  for (const Prediction& p : ps) {
    Row r{p};
    total += r.gpu_hours();
    o += fmt::format("  {:>9.4g} {:>6} {:>8.3g} {:>8.3g} {:>7} {:>8} {:>8} {:>15} {:>10} {:>11} {:>9.4f}{}\n", p.spec.lr,
                     p.spec.batch_size, p.spec.momentum, p.spec.weight_decay, p.size, p.horizon,
                     p.reached ? std::to_string(p.steps) : std::string("-"),
                     fmt::format("{}..{}", p.steps_lo, p.steps_hi), duration(r.seconds()),
                     duration(r.horizon_seconds()), r.gpu_hours(), p.warnings.size() > 1 ? " !" : "");
  }
  o += fmt::format("\n  total {:.4f} GPU-hours for the whole sweep (each run's full horizon x hardware.gpus)\n", total);
  o += fmt::format("  prediction cost {:.2f} s for all {} configurations (one Gram matrix per distinct N, N0)\n",
                   seconds, ps.size());
  for (const Prediction& p : ps)
    if (p.relinearized_with_steps > 0) {
      const Spec::Anchor& a = p.spec.relinearize_with;
      o += fmt::format("  shared kernel: Theta at w_K re-linearized once, with lr {} batch {} momentum {} (the spec's "
                       "own values; engine.sweep_kernel: each re-linearizes every row)\n",
                       a.lr, a.batch_size, a.momentum);
      break;
    }
  o += "  ! = the row has warnings beyond the subset note: see --json\n";
  return o;
}

std::string sweep_csv(const std::vector<Prediction>& ps) {
  std::string o =
      "lr,batch_size,momentum,weight_decay,size,horizon_steps,steps,reached,steps_lo,steps_hi,seconds,seconds_lo,"
      "seconds_hi,horizon_seconds,gpu_hours,final_loss,final_accuracy,lr_stability\n";
  for (const Prediction& p : ps) {
    Row r{p};
    o += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", p.spec.lr, p.spec.batch_size,
                     p.spec.momentum, p.spec.weight_decay, p.size, p.horizon, p.steps, p.reached ? 1 : 0, p.steps_lo,
                     p.steps_hi, r.seconds(), double(p.steps_lo) * p.step_lo, double(p.steps_hi) * p.step_hi,
                     r.horizon_seconds(), r.gpu_hours(), p.final_loss, p.final_accuracy, p.lr_stability);
  }
  return o;
}

std::string curves_svg(const std::vector<Prediction>& ps) {
  // Predicted loss curves, log-scale loss against steps, one colour per configuration.
  const double W = 820, H = 460, L = 70, R = 250, T = 30, B = 50;
  double xmax = 1, ymin = INFINITY, ymax = -INFINITY;
  for (const Prediction& p : ps)
    for (size_t i = 0; i < p.curve_step.size(); ++i) {
      xmax = std::max(xmax, double(p.curve_step[i]));
      if (std::isfinite(p.curve_loss[i]) && p.curve_loss[i] > 0) {
        ymin = std::min(ymin, p.curve_loss[i]);
        ymax = std::max(ymax, p.curve_loss[i]);
      }
    }
  if (!std::isfinite(ymin)) ymin = 1e-3, ymax = 1;
  const double ly0 = std::floor(std::log10(ymin)), ly1 = std::ceil(std::log10(ymax) + 1e-12);
  auto X = [&](double x) { return L + (W - L - R) * x / xmax; };
  auto Y = [&](double y) { return T + (H - T - B) * (ly1 - std::log10(y)) / std::max(1e-9, ly1 - ly0); };
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      W, H);
  o += fmt::format("<text x=\"{}\" y=\"18\" font-size=\"14\">ttpred: predicted training loss</text>\n", L);
  for (double e = ly0; e <= ly1; e += 1) {
    o += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>", L, W - R, Y(std::pow(10, e)),
                     Y(std::pow(10, e)));
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">1e{}</text>\n", L - 6, Y(std::pow(10, e)) + 4, int(e));
  }
  for (int k = 0; k <= 5; ++k) {
    double x = xmax * k / 5;
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", X(x), H - B + 18, int64_t(x));
  }
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 12);
  o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", L, T,
                   W - L - R, H - T - B);
  for (size_t k = 0; k < ps.size(); ++k) {
    const Prediction& p = ps[k];
    const char* c = colors[k % 10];
    std::string pts;
    for (size_t i = 0; i < p.curve_step.size(); ++i)
      if (std::isfinite(p.curve_loss[i]) && p.curve_loss[i] > 0)
        pts += fmt::format("{:.1f},{:.1f} ", X(double(p.curve_step[i])), Y(p.curve_loss[i]));
    o += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", c, pts);
    if (p.reached && p.steps < int64_t(p.curve_step.back()) + 1)
      o += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{3}\" stroke-dasharray=\"3,3\"/>\n",
                       X(double(p.steps)), T, H - B, c);
    if (k < 24) {
      // Legend: only the values that differ between configurations.
      auto varies = [&](auto get) {
        for (const Prediction& q : ps)
          if (get(q) != get(ps[0])) return true;
        return false;
      };
      std::string label;
      if (varies([](const Prediction& q) { return q.spec.lr; })) label += fmt::format("lr {:.3g} ", p.spec.lr);
      if (varies([](const Prediction& q) { return double(q.spec.batch_size); })) label += fmt::format("B {} ", p.spec.batch_size);
      if (varies([](const Prediction& q) { return q.spec.momentum; })) label += fmt::format("m {:.2g} ", p.spec.momentum);
      if (varies([](const Prediction& q) { return q.spec.weight_decay; })) label += fmt::format("wd {:.2g} ", p.spec.weight_decay);
      if (varies([](const Prediction& q) { return double(q.size); })) label += fmt::format("N {} ", p.size);
      if (varies([](const Prediction& q) { return double(q.horizon); })) label += fmt::format("T {} ", p.horizon);
      label += p.diverged ? std::string("diverges") : fmt::format("T(eps)={}", p.steps);
      o += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", W - R + 8, T + 14 + 15 * double(k), c, label);
    }
  }
  o += "</svg>\n";
  return o;
}

}  // namespace ttpred
