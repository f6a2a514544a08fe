// Stage: T from the predicted curve and its band (docs/method.md §4 and §8):
// T(ε) (or the loss/accuracy target) on the mean curve, the band from the
// simulated runs, widened by the extrapolation's self-check and the drift; the
// warnings on them; the curves decimated for the report.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "stages.hpp"

namespace ttpred {

std::string fmt_num(double v) {
  std::ostringstream o;
  o.precision(4);
  o << v;
  return o.str();
}

namespace {

constexpr double kDriftWarn = 0.1;  // docs/json.md: drift above this warns

// The method's own error, measured: the ratios measured T / predicted T on
// bench/users (docs/accuracy.md, docs/method.md §8) at the split-conformal ranks
// of a two-sided 90 % band (the ⌊0.05(n+1)⌋-th and ⌈0.95(n+1)⌉-th smallest of n
// ratios; with n < 19 the extremes), by `bench/users/calibrate.py`.
// Re-linearized (calibrated at K = 0.3 T, the default of sessions 6-14; not
// refitted for 0.5 T, session 15): from all n = 42 scored jobs of both
// halves (session 6, refined truth; `calibrate.py DEV.json VAL.json --all`). The
// development-only factors, x[0.92, 1.34] from n = 20, held the truth in 82 % of
// the validation jobs with the top below it in 14 %: 20 jobs do not show the tail
// the validation half has, so the shipped band uses every job scored, and its
// coverage is in-sample until jobs not seen here check it.
// Training-free (--no-training): from the n = 19 development jobs of session 5
// (validation coverage 95 %, unchanged).
struct MethodError {
  double lo, hi;
};
constexpr MethodError kMethodRelinearized{0.88, 1.97};
constexpr MethodError kMethodTrainingFree{0.43, 3.04};

// Widens P's band to at least T·(1 ± w) (the top within the horizon when capped).
void widen(Prediction& P, double w, bool cap_top) {
  P.steps_lo = std::min(P.steps_lo, int64_t(std::floor(double(P.steps) * (1 - w))));
  const int64_t top = int64_t(std::ceil(double(P.steps) * (1 + w)));
  P.steps_hi = cap_top ? std::max(P.steps_hi, std::min(P.horizon, top)) : std::min(P.horizon, std::max(P.steps_hi, top));
}

void decimate(Prediction& P, const Curves& cv, int curve_points) {
  // Curves, decimated to about curve_points points (0 and T always kept).
  const size_t m = cv.step.size();
  const size_t every = std::max<size_t>(1, (m + size_t(curve_points) - 1) / size_t(curve_points));
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
}

}  // namespace

void target_and_band(Prediction& P, const Curves& cv, const Check& chk, const Spec& s, int curve_points) {
  // T on the mean curve; its band from the runs.
  auto target_of = [&](const std::vector<double>& loss, const std::vector<double>& acc, bool* reached = nullptr) {
    return target_index(loss, acc, s.target, s.target_value, reached);
  };
  const int64_t k = target_of(cv.loss, cv.acc, &P.reached);
  P.steps = cv.step[size_t(k)];
  std::vector<double> ts, finals;
  for (size_t r = 0; r < cv.run_loss.size(); ++r) {
    ts.push_back(double(cv.step[size_t(target_of(cv.run_loss[r], cv.run_acc[r]))]));
    finals.push_back(cv.run_loss[r].back());
  }
  P.steps_lo = std::min<int64_t>(P.steps, int64_t(std::floor(percentile(ts, 5))));
  P.steps_hi = std::max<int64_t>(P.steps, int64_t(std::ceil(percentile(ts, 95))));
  // Extrapolation error: the self-check's relative error, grown with the
  // ratio to cover (log N/N0 over log N0/N1), at most 100%.
  if (chk.from > 0) {
    P.check_from = chk.from;
    P.check_steps = chk.steps;
    P.check_direct = chk.direct;
    P.check_error = chk.error;
    const double w = std::min(1.0, chk.error * std::log(double(P.size) / double(P.subset)) /
                                       std::log(double(P.subset) / double(chk.from)));
    P.extrapolation_width = w;
    widen(P, w, true);
  }
  // The method's own error on unseen jobs (measured, above).
  const MethodError& me = P.relinearized_at > 0 ? kMethodRelinearized : kMethodTrainingFree;
  P.method_lo = me.lo;
  P.method_hi = me.hi;
  P.steps_lo = std::min(P.steps_lo, int64_t(std::floor(double(P.steps) * me.lo)));
  P.steps_hi = std::max(P.steps_hi, std::min(P.horizon, int64_t(std::ceil(double(P.steps) * me.hi))));
  // The linearization error is not in the SGD-noise band: widen it by the drift
  // measured against real steps (relative, capped at 100%). Re-linearized, the
  // prediction starts from the real w_K, but a network that drifted that much
  // keeps moving its kernel: the warning stands (the band's method term covers it).
  if (P.drift > kDriftWarn && std::isfinite(P.drift)) {
    if (P.relinearized_at == 0) widen(P, std::min(1.0, P.drift), false);
    P.warnings.push_back("after " + std::to_string(P.drift_steps) + " real SGD steps the linearized loss is off by " +
                         fmt_num(100 * P.drift) + "% of the loss decrease: the network leaves the linear regime; " +
                         (P.relinearized_at > 0 ? "re-linearized there, the rest assumes the kernel at that point"
                                                : "band widened (engine.relinearize: K > 0 corrects for it)"));
  }
  P.initial_loss = cv.loss.front();
  P.final_loss = cv.loss.back();
  P.final_accuracy = cv.acc.back();
  P.final_lo = percentile(finals, 5);
  P.final_hi = percentile(finals, 95);
  P.diverged = !std::isfinite(P.final_loss);
  if (P.diverged) {
    P.reached = false;
    P.steps = P.steps_lo = P.steps_hi = P.horizon;
    P.warnings.push_back("the linearized dynamics diverge at lr " + fmt_num(s.lr) + " (stability ratio " +
                         fmt_num(P.lr_stability) + "): no prediction; the real network leaves the linear " +
                         "regime at this rate (it may still train, e.g. by lowering its curvature, or diverge)");
  } else if (P.lr_stability > 1) {
    P.warnings.push_back("lr " + fmt_num(s.lr) + " is beyond the linearized model's stability limit (ratio " +
                         fmt_num(P.lr_stability) + "): expect the real run to leave the linear regime");
  }
  if (!P.reached)
    P.warnings.push_back(std::string("target ") + to_string(s.target) + " " + fmt_num(s.target_value) +
                         " is not reached within the horizon of " + std::to_string(P.horizon) + " steps");
  if (P.subset < P.size && !P.extrapolated)
    P.warnings.push_back("Theta computed on " + std::to_string(P.subset) + " of " + std::to_string(P.size) +
                         " samples and not extrapolated to N (engine.extrapolate: false): the prediction is for the subset (too fast)");
  decimate(P, cv, curve_points);
}

}  // namespace ttpred
