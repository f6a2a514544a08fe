// JSON (docs/json.md) and the human summary of a Prediction.
#include <fmt/format.h>

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
               {"subset", p.subset}};
  j["loss"] = to_string(s.loss);
  j["optimizer"] = {{"lr", s.lr}, {"momentum", s.momentum}, {"weight_decay", s.weight_decay},
                    {"batch_size", s.batch_size}};
  j["target"] = {{"kind", to_string(s.target)}, {"value", s.target_value}};
  j["steps"] = p.steps;
  j["reached"] = p.reached;
  j["steps_band"] = {p.steps_lo, p.steps_hi};
  j["steps_per_epoch"] = p.steps_per_epoch;
  j["epochs"] = p.steps_per_epoch > 0 ? double(p.steps) / double(p.steps_per_epoch) : 0.0;
  j["horizon_steps"] = p.horizon;
  j["initial_loss"] = num(p.initial_loss);
  j["final_loss"] = num(p.final_loss);
  j["final_loss_band"] = {num(p.final_lo), num(p.final_hi)};
  j["final_accuracy"] = num(p.final_accuracy);
  j["lr_stability"] = num(p.lr_stability);
  j["step_seconds"] = p.step_seconds;
  j["step_seconds_source"] = p.step_source;
  j["seconds"] = double(p.steps) * p.step_seconds;
  j["seconds_band"] = {double(p.steps_lo) * p.step_lo, double(p.steps_hi) * p.step_hi};
  j["horizon_seconds"] = double(p.horizon) * p.step_seconds;
  j["horizon_seconds_band"] = {double(p.horizon) * p.step_lo, double(p.horizon) * p.step_hi};
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
               {"rows", p.gram_rows}};
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
  row("training", fmt::format("{} loss, SGD lr {} momentum {} weight decay {}, batch {}", to_string(s.loss), s.lr,
                              s.momentum, s.weight_decay, s.batch_size));
  row("horizon", fmt::format("{} steps ({:.2f} epochs of {} steps)", p.horizon,
                             double(p.horizon) / double(std::max<int64_t>(1, p.steps_per_epoch)), p.steps_per_epoch));
  std::string what = s.target == TargetKind::epsilon ? fmt::format("|L_t - L_T| < {}", s.target_value)
                     : s.target == TargetKind::loss  ? fmt::format("loss <= {}", s.target_value)
                                                     : fmt::format("accuracy >= {}", s.target_value);
  o += "\n";
  row("converged when", what);
  row("steps", p.reached ? fmt::format("{}  (90% band {} .. {})", p.steps, p.steps_lo, p.steps_hi)
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
  return o;
}

}  // namespace ttpred
