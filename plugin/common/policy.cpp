#include "policy.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace ttpred::slurm {

namespace {

struct Ctx {
  std::string path;
};

int line_of(const YAML::Node& n, int fallback) {
  if (!n.IsDefined()) return fallback;
  int l = n.Mark().line;
  return l >= 0 ? l + 1 : fallback;
}

[[noreturn]] void fail(const Ctx& c, int line, const std::string& key, const std::string& msg) {
  throw PolicyError(c.path + ":" + std::to_string(line) + ": " + key + ": " + msg);
}

std::string describe(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}

void check_keys(const Ctx& c, const YAML::Node& map, const std::string& where,
                const std::set<std::string>& allowed) {
  std::set<std::string> seen;
  for (const auto& kv : map) {
    const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : std::string("?");
    // yaml-cpp keeps both entries of a duplicated key (and map[k] returns the
    // first): an error, not a silent "first wins".
    if (!seen.insert(k).second)
      fail(c, line_of(kv.first, 0), where.empty() ? k : where + "." + k,
           "duplicate key (each key may appear once per mapping)");
    if (!allowed.count(k)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(c, line_of(kv.first, 0), where.empty() ? k : where + "." + k,
           "unknown key (expected one of: " + list + ")");
    }
  }
}

YAML::Node expect_map(const Ctx& c, const YAML::Node& n, const std::string& key) {
  if (!n.IsMap()) fail(c, line_of(n, 0), key, "expected a mapping, got " + describe(n));
  return n;
}

double get_number(const Ctx& c, const YAML::Node& n, const std::string& key, double min,
                  double max) {
  std::optional<double> v;
  if (n.IsScalar()) v = parse_number(n.Scalar());
  if (!v || *v < min || *v > max) {
    std::ostringstream os;
    os << "expected a number in [" << min << ", " << max << "], got " << describe(n);
    fail(c, line_of(n, 0), key, os.str());
  }
  return *v;
}

bool get_bool(const Ctx& c, const YAML::Node& n, const std::string& key) {
  if (n.IsScalar()) {
    std::string s = n.Scalar();
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
  }
  fail(c, line_of(n, 0), key, "expected true or false, got " + describe(n));
}

std::vector<std::string> get_patterns(const Ctx& c, const YAML::Node& n, const std::string& key) {
  std::vector<std::string> out;
  if (n.IsScalar()) {
    out.push_back(n.Scalar());
  } else if (n.IsSequence()) {
    for (const auto& e : n) {
      if (!e.IsScalar()) fail(c, line_of(e, line_of(n, 0)), key, "expected a string, got " + describe(e));
      out.push_back(e.Scalar());
    }
    if (out.empty()) fail(c, line_of(n, 0), key, "empty list (omit the key to match anything)");
  } else {
    fail(c, line_of(n, 0), key, "expected a string or a list of strings, got " + describe(n));
  }
  return out;
}

// Parses the body shared by `defaults` and each rule into r.
void parse_body(const Ctx& c, const YAML::Node& n, const std::string& where, Rule& r) {
  if (auto tl = n["time_limit"]) {
    const std::string k = where + ".time_limit";
    expect_map(c, tl, k);
    check_keys(c, tl, k,
               {"basis", "use_band", "safety_factor", "margin_minutes", "min_minutes", "max_minutes"});
    if (auto b = tl["basis"]) {
      std::string s = b.IsScalar() ? b.Scalar() : "";
      if (s == "horizon") r.time_limit.basis = Basis::horizon;
      else if (s == "converge") r.time_limit.basis = Basis::converge;
      else fail(c, line_of(b, 0), k + ".basis", "expected horizon or converge, got " + describe(b));
    }
    if (auto b = tl["use_band"]) {
      std::string s = b.IsScalar() ? b.Scalar() : "";
      if (s == "upper") r.time_limit.use_band = BandUse::upper;
      else if (s == "none" || s == "point") r.time_limit.use_band = BandUse::none;
      else fail(c, line_of(b, 0), k + ".use_band", "expected upper or none, got " + describe(b));
    }
    if (auto v = tl["safety_factor"]) r.time_limit.safety_factor = get_number(c, v, k + ".safety_factor", 1, 100);
    if (auto v = tl["margin_minutes"]) r.time_limit.margin_minutes = get_number(c, v, k + ".margin_minutes", 0, 525600);
    const double kMaxMin = 365.0 * 24 * 60;
    if (auto v = tl["min_minutes"]) r.time_limit.min_minutes = static_cast<std::uint32_t>(get_number(c, v, k + ".min_minutes", 1, kMaxMin));
    if (auto v = tl["max_minutes"]) r.time_limit.max_minutes = static_cast<std::uint32_t>(get_number(c, v, k + ".max_minutes", 1, kMaxMin));
    if (r.time_limit.min_minutes > r.time_limit.max_minutes)
      fail(c, line_of(tl, 0), k, "min_minutes is above max_minutes");
  }
  if (auto v = n["set_time_limit"]) r.set_time_limit = get_bool(c, v, where + ".set_time_limit");
  if (auto w = n["warn"]) {
    const std::string k = where + ".warn";
    if (w.IsScalar()) {
      bool on = get_bool(c, w, k);
      r.warn.under = on;
      if (!on) r.warn.over_factor = 0;
    } else {
      expect_map(c, w, k);
      check_keys(c, w, k, {"under", "over_factor"});
      if (auto v = w["under"]) r.warn.under = get_bool(c, v, k + ".under");
      if (auto v = w["over_factor"]) {
        r.warn.over_factor = get_number(c, v, k + ".over_factor", 0, 1e6);
        if (r.warn.over_factor > 0 && r.warn.over_factor < 1)
          fail(c, line_of(v, 0), k + ".over_factor", "must be 0 (off) or >= 1");
      }
    }
  }
  if (auto b = n["budget"]) {
    const std::string k = where + ".budget";
    if (b.IsScalar()) {
      bool on = get_bool(c, b, k);
      r.budget.warn = on;
      r.budget.show = on;
      r.budget.reject = false;
    } else {
      expect_map(c, b, k);
      check_keys(c, b, k, {"warn", "reject", "slurm", "show"});
      if (auto v = b["warn"]) r.budget.warn = get_bool(c, v, k + ".warn");
      if (auto v = b["reject"]) r.budget.reject = get_bool(c, v, k + ".reject");
      if (auto v = b["slurm"]) r.budget.slurm = get_bool(c, v, k + ".slurm");
      if (auto v = b["show"]) r.budget.show = get_bool(c, v, k + ".show");
    }
  }
  if (auto rj = n["reject"]) {
    const std::string k = where + ".reject";
    if (rj.IsScalar()) {
      if (get_bool(c, rj, k)) fail(c, line_of(rj, 0), k, "use a mapping {under, over_factor, above_minutes} to enable rejection");
      r.reject = RejectRule{};
    } else {
      expect_map(c, rj, k);
      check_keys(c, rj, k, {"under", "over_factor", "above_minutes"});
      if (auto v = rj["under"]) r.reject.under = get_bool(c, v, k + ".under");
      if (auto v = rj["over_factor"]) {
        r.reject.over_factor = get_number(c, v, k + ".over_factor", 0, 1e6);
        if (r.reject.over_factor > 0 && r.reject.over_factor < 1)
          fail(c, line_of(v, 0), k + ".over_factor", "must be 0 (off) or >= 1");
      }
      if (auto v = rj["above_minutes"]) r.reject.above_minutes = get_number(c, v, k + ".above_minutes", 0, 1e9);
    }
  }
}

bool matches_any(const std::vector<std::string>& patterns, const std::vector<std::string>& values) {
  if (patterns.empty()) return true;
  for (const auto& v : values)
    for (const auto& p : patterns)
      if (fnmatch(p.c_str(), v.c_str(), 0) == 0) return true;
  return false;
}

std::string minutes_str(double minutes) {
  if (std::isinf(minutes)) return "UNLIMITED";
  return format_duration(minutes * 60.0);
}

}  // namespace

Policy parse_policy(const std::string& yaml_text, const std::string& path) {
  Ctx c{path};
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw PolicyError(path + ":" + std::to_string(e.mark.line + 1) + ": (syntax): " + e.msg);
  }
  Policy pol;
  pol.path = path;
  if (!root.IsDefined() || root.IsNull()) return pol;  // empty file: no rules
  expect_map(c, root, "(top level)");
  check_keys(c, root, "", {"version", "limits", "defaults", "rules", "budgets", "step_seconds"});
  if (auto v = root["version"]) {
    if (!v.IsScalar() || v.Scalar() != "1") fail(c, line_of(v, 1), "version", "only version 1 is supported, got " + describe(v));
  }
  if (auto l = root["limits"]) {
    expect_map(c, l, "limits");
    check_keys(c, l, "limits", {"max_seconds", "max_gpus", "exclusive_node_gpus"});
    if (auto v = l["max_seconds"]) pol.limits.max_seconds = get_number(c, v, "limits.max_seconds", 1, 1e10);
    if (auto v = l["max_gpus"]) pol.limits.max_gpus = get_number(c, v, "limits.max_gpus", 1, 1e6);
    if (auto v = l["exclusive_node_gpus"])
      pol.exclusive_node_gpus = get_number(c, v, "limits.exclusive_node_gpus", 0, 1024);
  }
  if (auto sl = root["step_seconds"]) {
    if (!sl.IsSequence()) fail(c, line_of(sl, 1), "step_seconds", "expected a list of bounds, got " + describe(sl));
    std::size_t i = 0;
    for (const auto& bn : sl) {
      const std::string where = "step_seconds[" + std::to_string(i++) + "]";
      expect_map(c, bn, where);
      check_keys(c, bn, where, {"partition", "gpu_type", "model", "min", "max", "seconds"});
      StepBound b;
      b.line = line_of(bn, 0);
      if (auto v = bn["partition"]) b.partition = get_patterns(c, v, where + ".partition");
      if (auto v = bn["gpu_type"]) b.gpu_type = get_patterns(c, v, where + ".gpu_type");
      if (auto v = bn["min"]) b.min = get_number(c, v, where + ".min", 0, 1e6);
      if (auto v = bn["max"]) b.max = get_number(c, v, where + ".max", 0, 1e6);
      if (auto v = bn["model"]) b.model = get_patterns(c, v, where + ".model");
      if (auto v = bn["seconds"]) b.seconds = get_number(c, v, where + ".seconds", 1e-9, 1e6);
      if (b.min <= 0 && b.max <= 0 && b.seconds <= 0)
        fail(c, b.line, where, "needs seconds, min or max (seconds per step, > 0)");
      if (b.seconds > 0 && ((b.min > 0 && b.seconds < b.min) || (b.max > 0 && b.seconds > b.max)))
        fail(c, b.line, where, "seconds is outside [min, max]");
      if (b.max > 0 && b.min > b.max) fail(c, b.line, where, "min is above max");
      pol.step_bounds.push_back(std::move(b));
    }
  }
  if (auto bl = root["budgets"]) {
    if (!bl.IsSequence()) fail(c, line_of(bl, 1), "budgets", "expected a list of budgets, got " + describe(bl));
    std::size_t i = 0;
    std::set<std::string> keys;
    for (const auto& bn : bl) {
      const std::string where = "budgets[" + std::to_string(i++) + "]";
      expect_map(c, bn, where);
      check_keys(c, bn, where, {"account", "partition", "gpu_hours", "period"});
      PolicyBudget b;
      b.line = line_of(bn, 0);
      auto name = [&](const char* key, bool required) {
        auto v = bn[key];
        if (!v) {
          if (required) fail(c, b.line, where + "." + key, "missing (an exact name)");
          return std::string();
        }
        if (!v.IsScalar() || v.Scalar().empty() || v.Scalar().find_first_of("*?[") != std::string::npos)
          fail(c, line_of(v, b.line), where + "." + key, "expected an exact name (no globs), got " + describe(v));
        return v.Scalar();
      };
      b.account = name("account", true);
      b.partition = name("partition", false);
      if (!bn["gpu_hours"]) fail(c, b.line, where + ".gpu_hours", "missing");
      b.gpu_hours = get_number(c, bn["gpu_hours"], where + ".gpu_hours", 0, 1e12);
      if (auto v = bn["period"]) {
        auto per = v.IsScalar() ? period_from_string(v.Scalar()) : std::nullopt;
        if (!per) fail(c, line_of(v, b.line), where + ".period", "expected day, week, month, year or none, got " + describe(v));
        b.period = *per;
      }
      if (!keys.insert(b.key()).second)
        fail(c, b.line, where, "duplicate budget for " + b.label());
      pol.budgets.push_back(b);
    }
  }
  Rule base;
  if (auto d = root["defaults"]) {
    expect_map(c, d, "defaults");
    check_keys(c, d, "defaults", {"time_limit", "set_time_limit", "warn", "reject", "budget"});
    parse_body(c, d, "defaults", base);
  }
  if (auto rules = root["rules"]) {
    if (!rules.IsSequence()) fail(c, line_of(rules, 1), "rules", "expected a list of rules, got " + describe(rules));
    std::size_t i = 0;
    for (const auto& rn : rules) {
      const std::string where = "rules[" + std::to_string(i) + "]";
      expect_map(c, rn, where);
      check_keys(c, rn, where, {"name", "match", "time_limit", "set_time_limit", "warn", "reject", "budget"});
      Rule r = base;
      r.line = line_of(rn, 0);
      r.name = "rule " + std::to_string(i + 1);
      if (auto n = rn["name"]) {
        if (!n.IsScalar()) fail(c, line_of(n, r.line), where + ".name", "expected a string, got " + describe(n));
        r.name = n.Scalar();
      }
      if (auto m = rn["match"]) {
        const std::string k = where + ".match";
        expect_map(c, m, k);
        check_keys(c, m, k, {"partition", "account", "user", "qos"});
        if (auto v = m["partition"]) r.match.partition = get_patterns(c, v, k + ".partition");
        if (auto v = m["account"]) r.match.account = get_patterns(c, v, k + ".account");
        if (auto v = m["user"]) r.match.user = get_patterns(c, v, k + ".user");
        if (auto v = m["qos"]) r.match.qos = get_patterns(c, v, k + ".qos");
      }
      parse_body(c, rn, where, r);
      pol.rules.push_back(std::move(r));
      ++i;
    }
  }
  return pol;
}

Policy load_policy_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw PolicyError(path + ":0: (file): cannot open policy file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw PolicyError(path + ":0: (file): read error");
  return parse_policy(ss.str(), path);
}

std::string policy_path(const char* env_value, const char* slurm_conf_path) {
  if (env_value && *env_value) return env_value;
  if (slurm_conf_path && *slurm_conf_path) {
    std::string s(slurm_conf_path);
    auto slash = s.rfind('/');
    if (slash != std::string::npos) return s.substr(0, slash + 1) + "ttpred.yaml";
  }
  return kDefaultPolicyPath;
}

std::vector<std::string> split_list(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::string PolicyBudget::key() const {
  return account + "@" + partition + "/" + period_name(period);
}

std::string PolicyBudget::label() const {
  return partition.empty() ? account : account + " on partition " + partition;
}

std::vector<const PolicyBudget*> matching_budgets(const Policy& policy, const std::string& account,
                                                  const std::vector<std::string>& partitions) {
  std::vector<const PolicyBudget*> out;
  if (account.empty()) return out;
  for (const auto& b : policy.budgets) {
    if (b.account != account) continue;
    if (!b.partition.empty() &&
        std::find(partitions.begin(), partitions.end(), b.partition) == partitions.end())
      continue;
    out.push_back(&b);
  }
  return out;
}

const Rule* match_rule(const Policy& policy, const JobView& job) {
  for (const auto& r : policy.rules) {
    if (!matches_any(r.match.partition, job.partitions)) continue;
    if (!matches_any(r.match.account, {job.account})) continue;
    if (!matches_any(r.match.user, {job.user})) continue;
    if (!matches_any(r.match.qos, {job.qos})) continue;
    return &r;
  }
  return nullptr;
}

double basis_point_seconds(const TimeLimitRule& r, const Prediction& p) {
  return r.basis == Basis::horizon ? p.horizon_seconds : p.seconds;
}

double basis_limit_seconds(const TimeLimitRule& r, const Prediction& p) {
  if (r.use_band == BandUse::none) return basis_point_seconds(r, p);
  return r.basis == Basis::horizon ? p.horizon_hi : p.seconds_hi;
}

std::uint32_t compute_time_limit_minutes(const TimeLimitRule& r, const Prediction& p) {
  double sec = basis_limit_seconds(r, p) * r.safety_factor + r.margin_minutes * 60.0;
  double minutes = std::ceil(sec / 60.0 - 1e-9);
  if (!std::isfinite(minutes) || minutes > r.max_minutes) minutes = r.max_minutes;
  if (minutes < r.min_minutes) minutes = r.min_minutes;
  if (minutes < 1) minutes = 1;
  return static_cast<std::uint32_t>(minutes);
}

double job_cost_gpu_hours(double limit_minutes, double gpus, double tasks) {
  if (!(gpus > 0) || !(tasks > 0)) return 0;
  if (std::isinf(limit_minutes)) return HUGE_VAL;
  return limit_minutes / 60.0 * gpus * tasks;
}

namespace {
std::string step_origin(const std::string& source) {
  if (source == "spec") return "from the spec's hardware.step_seconds";
  if (source == "node") return "timed on the prediction job's node";
  if (source == "measured") return "measured by the estimator on the submit host";
  return "from the prediction";
}
}  // namespace

StepBoundResult apply_step_bounds(const Policy& policy, const std::vector<std::string>& partitions,
                                  const std::string& gpu_type, Prediction& p) {
  StepBoundResult res;
  for (const auto& b : policy.step_bounds) {
    if (!matches_any(b.partition, partitions)) continue;
    if (!b.gpu_type.empty() && !matches_any(b.gpu_type, {gpu_type})) continue;
    if (!b.model.empty() && (p.model.empty() || !matches_any(b.model, {p.model}))) continue;
    res.bound = &b;
    break;
  }
  double step = p.step_seconds;
  if (!(step > 0) && p.horizon_steps > 0) step = p.horizon_seconds / static_cast<double>(p.horizon_steps);
  if (!(step > 0) && p.steps > 0) step = p.seconds / static_cast<double>(p.steps);
  char buf[200];
  if (step > 0) {
    std::snprintf(buf, sizeof buf, "step %.3g s %s", step, step_origin(p.step_source).c_str());
    res.source = buf;
  }
  if (!res.bound) return res;
  const StepBound& b = *res.bound;
  if (!(step > 0)) {
    // No step time and no step count: nothing to scale. The prediction is used
    // as it is (the limit, and so the cost, still comes from it).
    res.note = "no step time in the prediction: step_seconds bound not applied";
    return res;
  }
  double target = step;
  // The table's step time replaces one measured off the job's GPU (or of unknown origin).
  const bool table = b.seconds > 0 && p.step_source != "spec" && p.step_source != "node";
  if (table) {
    target = b.seconds;
    std::snprintf(buf, sizeof buf, "step %.3g s from the policy's step_seconds table (line %d; %.3g s %s not used)",
                  target, b.line, step, step_origin(p.step_source).c_str());
    res.source = buf;
  }
  if (b.min > 0 && target < b.min) target = b.min;
  if (b.max > 0 && target > b.max) target = b.max;
  if (target == step) return res;
  res.factor = target / step;
  for (double* v : {&p.seconds, &p.seconds_lo, &p.seconds_hi, &p.horizon_seconds, &p.horizon_lo,
                    &p.horizon_hi}) {
    *v *= res.factor;
    if (!std::isfinite(*v)) *v = policy.limits.max_seconds;
    *v = std::min(*v, policy.limits.max_seconds);
  }
  p.step_seconds = target;
  if (table) {
    std::snprintf(buf, sizeof buf, "step time from the policy table (line %d): durations scaled x%.4g", b.line,
                  res.factor);
  } else {
    std::snprintf(buf, sizeof buf,
                  "step time %.3g s outside the policy bound [%.3g, %.3g] s (line %d): durations scaled x%.4g", step,
                  b.min, b.max > 0 ? b.max : HUGE_VAL, b.line, res.factor);
  }
  res.note = buf;
  return res;
}

Decision decide(const Policy& policy, const JobView& job, const Prediction& p,
                const std::vector<BudgetState>& budgets) {
  Decision d;
  d.rule = match_rule(policy, job);
  if (!d.rule) {
    d.log = "no rule matches: job unchanged";
    return d;
  }
  const Rule& r = *d.rule;
  const bool horizon = r.time_limit.basis == Basis::horizon;
  const char* basis = horizon ? "horizon" : "converge";
  const double point = basis_point_seconds(r.time_limit, p);
  const double upper = basis_limit_seconds(r.time_limit, p);
  const double lo = r.time_limit.basis == Basis::horizon ? p.horizon_lo : p.seconds_lo;
  const double hi = r.time_limit.basis == Basis::horizon ? p.horizon_hi : p.seconds_hi;
  std::uint32_t suggested = compute_time_limit_minutes(r.time_limit, p);
  // --time-min without --time: Slurm requires time_min <= time_limit.
  if (job.time_min_minutes && !job.time_limit_minutes && std::isfinite(*job.time_min_minutes) &&
      *job.time_min_minutes > suggested && *job.time_min_minutes < 4294967294.0)
    suggested = static_cast<std::uint32_t>(*job.time_min_minutes);
  const std::string pred = std::string(horizon ? "predicted run time of the full training horizon "
                                               : "predicted time to converge ") +
                           format_duration(point) +
                           " (5-95%: " + format_duration(lo) + "-" + format_duration(hi) + ")";
  const std::string rule_name = sanitize(r.name, 64);
  char buf[512];
  std::snprintf(buf, sizeof buf, "rule '%s': %s=%.6g s, band %.6g-%.6g s, suggested %u min",
                rule_name.c_str(), basis, point, lo, hi, suggested);
  d.log = buf;

  // The limit Slurm will enforce, which the cost and the budget checks use.
  // UNLIMITED, or no limit and none set here: not known here (the partition's
  // DefaultTime/MaxTime apply), counted as the rule's max_minutes.
  bool limit_assumed = false;
  if (job.time_limit_minutes && std::isfinite(*job.time_limit_minutes)) d.limit_minutes = *job.time_limit_minutes;
  else if (!job.time_limit_minutes && r.set_time_limit) d.limit_minutes = suggested;
  else {
    d.limit_minutes = r.time_limit.max_minutes;
    limit_assumed = true;
  }

  // Reject checks first: on the value the limit is computed from (upper band).
  if (r.reject.above_minutes > 0 && upper > r.reject.above_minutes * 60.0) {
    d.reject = true;
    d.user_messages.push_back("ttpred: job rejected: " + pred + " exceeds the " +
                              minutes_str(r.reject.above_minutes) + " allowed by policy rule '" +
                              rule_name + "'");
  }
  // Budgets: what the job can consume (its limit x GPUs x tasks) against what is left.
  d.cost_gpu_hours = job_cost_gpu_hours(d.limit_minutes, job.gpus, job.array_tasks);
  if (job.gpus > 0 && !budgets.empty()) {
    const std::string cost = fmt_hours(d.cost_gpu_hours);
    std::snprintf(buf, sizeof buf, "%g", job.gpus);
    std::string how = std::string(buf) + " GPU" + (job.gpus == 1 ? "" : "s") + " from the " +
                      job.gpus_source + " x time limit " + minutes_str(d.limit_minutes) +
                      (limit_assumed ? " (the policy's max_minutes)" : "");
    if (job.array_tasks > 1) {
      std::snprintf(buf, sizeof buf, "%g", job.array_tasks);
      how += std::string(" x ") + buf + " array tasks";
    }
    const BudgetState* tightest = nullptr;
    for (const auto& b : budgets) {
      if (b.from_slurm && !r.budget.slurm) continue;
      if (!tightest || b.remaining_hours < tightest->remaining_hours) tightest = &b;
      d.log += ", " + b.what + " left " + fmt_hours(b.remaining_hours) + "/" + fmt_hours(b.limit_hours);
    }
    if (tightest) {
      d.log += ", cost " + cost + " GPU-h";
      if (r.budget.show) {
        std::string m = "ttpred: cost " + cost + " GPU-hours (" + how + ")";
        for (const auto& b : budgets) {
          if (b.from_slurm && !r.budget.slurm) continue;
          m += "; " + b.what + " has " + fmt_hours(b.remaining_hours) + " of " +
               fmt_hours(b.limit_hours) + " GPU-hours left";
        }
        d.user_messages.push_back(m);
      }
      if (d.cost_gpu_hours > tightest->remaining_hours) {
        const std::string why = "the cost " + cost + " GPU-hours exceeds the " +
                                fmt_hours(tightest->remaining_hours) + " GPU-hours left to " +
                                tightest->what;
        if (r.budget.reject) {
          if (!d.reject) d.budget_reject = true;
          d.reject = true;
          d.user_messages.push_back("ttpred: job rejected: " + why + " (policy rule '" + rule_name + "')");
          d.log += ", over budget";
        } else if (r.budget.warn) {
          d.user_messages.push_back("ttpred: warning: " + why +
                                    (tightest->from_slurm
                                         ? ": the job may stay pending (AssocGrpGRESMinutes) or be stopped"
                                         : ""));
          d.log += ", over budget (warned)";
        }
      }
    }
  }
  if (job.time_limit_minutes) {
    const double lim_s = *job.time_limit_minutes * 60.0;
    const std::string lim = minutes_str(*job.time_limit_minutes);
    const bool under = lim_s < point;
    const bool over_rej = r.reject.over_factor > 0 && lim_s > r.reject.over_factor * upper;
    const bool over_warn = r.warn.over_factor > 0 && lim_s > r.warn.over_factor * upper;
    if (under && r.reject.under) {
      d.reject = true;
      d.budget_reject = false;
      d.user_messages.push_back("ttpred: job rejected: your time limit " + lim + " is below the " +
                                pred + "; use --time=" + std::to_string(suggested) +
                                " or more (policy rule '" + rule_name + "')");
    } else if (over_rej) {
      std::snprintf(buf, sizeof buf, "%g", r.reject.over_factor);
      d.user_messages.push_back("ttpred: job rejected: your time limit " + lim + " is more than " +
                                buf + "x the " + pred + "; use --time=" + std::to_string(suggested) +
                                " (policy rule '" + rule_name + "')");
      d.reject = true;
      d.budget_reject = false;
    } else if (!d.reject) {
      if (under && r.warn.under) {
        d.user_messages.push_back("ttpred: warning: your time limit " + lim + " is below the " +
                                  pred + ": the job will likely be killed before it finishes; "
                                  "suggested --time=" + std::to_string(suggested));
      } else if (over_warn) {
        std::snprintf(buf, sizeof buf, "%g", r.warn.over_factor);
        d.user_messages.push_back("ttpred: warning: your time limit " + lim + " is more than " +
                                  buf + "x the " + pred + "; a tighter limit such as --time=" +
                                  std::to_string(suggested) + " lets backfill start the job sooner");
      }
    }
    d.log += ", user limit " + lim;
  } else if (!d.reject && r.set_time_limit) {
    d.set_time_limit = suggested;
    d.user_messages.push_back("ttpred: time limit set to " + std::to_string(suggested) + " min (" +
                              pred + ")");
    d.log += ", time limit set";
  }
  if (d.reject) d.log += ", rejected";
  return d;
}

}  // namespace ttpred::slurm
