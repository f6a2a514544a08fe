#include "prediction.hpp"

#include <charconv>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>

#include <nlohmann/json.hpp>

namespace ttpred::slurm {

namespace {

std::string fmt_num(double v) {  // exact round trip of the estimator's doubles
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

double json_seconds(const nlohmann::json& j, const char* key, bool required, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw JsonError(std::string("missing field '") + key + "'");
    return fallback;
  }
  if (!it->is_number()) throw JsonError(std::string("field '") + key + "' is not a number");
  double v = it->get<double>();
  if (!std::isfinite(v) || v < 0)
    throw JsonError(std::string("field '") + key + "' is negative or not finite");
  return v;
}

void json_band(const nlohmann::json& j, const char* key, double point, double& lo, double& hi) {
  lo = hi = point;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number() || !(*it)[1].is_number())
    throw JsonError(std::string("field '") + key + "' is not [number, number]");
  double a = (*it)[0].get<double>(), b = (*it)[1].get<double>();
  if (!std::isfinite(a) || !std::isfinite(b) || a < 0 || b < 0)
    throw JsonError(std::string("field '") + key + "' is negative or not finite");
  lo = std::min(a, point);
  hi = std::max(b, point);
}

}  // namespace

bool valid_step_source(const std::string& s) { return s == "measured" || s == "spec" || s == "node"; }

bool valid_model_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s)
    if (!std::isalnum(c) && c != '.' && c != '_' && c != '-' && c != '+') return false;
  return true;
}

std::optional<double> parse_number(const std::string& s) {
  if (s.empty() || s.size() > 64) return std::nullopt;
  double v = 0;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(first, last, v, std::chars_format::general);
  if (ec != std::errc() || ptr != last || !std::isfinite(v)) return std::nullopt;
  return v;
}

Prediction prediction_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw JsonError("estimator output is not JSON");
  }
  if (!j.is_object()) throw JsonError("estimator output is not a JSON object");
  Prediction p;
  p.horizon_seconds = json_seconds(j, "horizon_seconds", true, 0);
  p.seconds = json_seconds(j, "seconds", true, 0);
  json_band(j, "seconds_band", p.seconds, p.seconds_lo, p.seconds_hi);
  json_band(j, "horizon_seconds_band", p.horizon_seconds, p.horizon_lo, p.horizon_hi);
  p.step_seconds = json_seconds(j, "step_seconds", false, 0);
  auto int_field = [&](const char* key) -> std::int64_t {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return -1;
    double v = it->get<double>();
    if (!std::isfinite(v) || v < 0 || v > 1e15) return -1;
    return static_cast<std::int64_t>(v);
  };
  p.steps = int_field("steps");
  p.horizon_steps = int_field("horizon_steps");
  p.gpus = int_field("gpus");
  auto src = j.find("step_seconds_source");
  if (src != j.end() && src->is_string() && valid_step_source(src->get<std::string>()) &&
      src->get<std::string>() != "node")
    p.step_source = src->get<std::string>();
  auto model = j.find("model");
  if (model != j.end() && model->is_object()) {
    auto path = model->find("path");
    if (path != model->end() && path->is_string()) {
      std::string name = path->get<std::string>();
      if (auto slash = name.rfind('/'); slash != std::string::npos) name = name.substr(slash + 1);
      if (valid_model_name(name)) p.model = name;
    }
  }
  auto w = j.find("warnings");
  if (w != j.end() && w->is_array())
    for (const auto& s : *w)
      if (s.is_string()) p.warnings.push_back(s.get<std::string>());
  return p;
}

std::vector<std::pair<std::string, std::string>> prediction_to_env(const Prediction& p) {
  std::vector<std::pair<std::string, std::string>> env = {
      {kEnvSeconds, fmt_num(p.seconds)},
      {kEnvSecondsLo, fmt_num(p.seconds_lo)},
      {kEnvSecondsHi, fmt_num(p.seconds_hi)},
      {kEnvHorizonSeconds, fmt_num(p.horizon_seconds)},
      {kEnvHorizonSecondsLo, fmt_num(p.horizon_lo)},
      {kEnvHorizonSecondsHi, fmt_num(p.horizon_hi)},
  };
  if (p.step_seconds > 0) env.emplace_back(kEnvStepSeconds, fmt_num(p.step_seconds));
  if (!p.step_source.empty()) env.emplace_back(kEnvStepSource, p.step_source);
  if (!p.model.empty()) env.emplace_back(kEnvModel, p.model);
  if (p.steps >= 0) env.emplace_back(kEnvSteps, std::to_string(p.steps));
  if (p.horizon_steps >= 0) env.emplace_back(kEnvHorizonSteps, std::to_string(p.horizon_steps));
  if (p.gpus >= 0) {
    env.emplace_back(kEnvGpus, std::to_string(p.gpus));
    env.emplace_back(kEnvGpuHours, fmt_num(gpu_hours(p.horizon_seconds, static_cast<double>(p.gpus))));
  }
  return env;
}

std::string sanitize(const std::string& s, std::size_t max_len) {
  std::string out;
  out.reserve(std::min(s.size(), max_len) + 3);
  for (std::size_t i = 0; i < s.size() && i < max_len; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c < 0x20 || c > 0x7e) ? '?' : static_cast<char>(c);
  }
  if (s.size() > max_len) out += "...";
  return out;
}

std::string sanitize(const char* s, std::size_t max_len) {
  if (!s) return "";
  // Never read more than needed from an untrusted C string.
  std::size_t n = 0;
  while (n <= max_len && s[n]) ++n;
  return sanitize(std::string(s, n), max_len);
}

EnvParse parse_env(const char* const* env, std::size_t count, const EnvLimits& limits) {
  EnvParse out;
  if (!env) return out;
  struct Slot {
    const char* name;
    std::optional<double> value;
    bool integer;
    bool seen;
  };
  Slot slots[] = {
      {kEnvSeconds, {}, false, false},         {kEnvSecondsLo, {}, false, false},
      {kEnvSecondsHi, {}, false, false},       {kEnvHorizonSeconds, {}, false, false},
      {kEnvHorizonSecondsLo, {}, false, false}, {kEnvHorizonSecondsHi, {}, false, false},
      {kEnvStepSeconds, {}, false, false},     {kEnvSteps, {}, true, false},
      {kEnvHorizonSteps, {}, true, false},     {kEnvGpus, {}, true, false},
  };
  auto problem = [&](std::string line) {
    ++out.problem_count;
    if (out.problems.size() < kMaxProblems) out.problems.push_back(std::move(line));
  };
  std::size_t ttpred_entries = 0, ttpred_bytes = 0;
  bool seen_source = false, seen_model = false;
  std::string step_source, model;
  const std::size_t scan = std::min(count, kMaxEnvScan);
  if (count > kMaxEnvScan) out.truncated = true;
  for (std::size_t i = 0; i < scan; ++i) {
    const char* entry = env[i];
    if (!entry) continue;
    if (std::strncmp(entry, "SPANK_", 6) == 0) entry += 6;
    if (std::strncmp(entry, "TTPRED_", 7) != 0) continue;
    if (++ttpred_entries > kMaxTtpredEntries) {
      out.truncated = true;
      break;
    }
    // Only the first bytes of an entry are ever read: a name or value longer than
    // any valid one is cut (and then fails to match or to parse).
    constexpr std::size_t kMaxEntry = 128;
    std::size_t len = 0;
    while (len < kMaxEntry && entry[len]) ++len;
    ttpred_bytes += len;
    if (ttpred_bytes > kMaxTtpredBytes) {
      out.truncated = true;
      break;
    }
    const char* eq = static_cast<const char*>(std::memchr(entry, '=', len));
    if (!eq) continue;
    std::string name(entry, static_cast<std::size_t>(eq - entry));
    std::string value(eq + 1, entry + len);
    const bool cut = entry[len] != '\0';
    if (name == kEnvStepSource || name == kEnvModel) {
      out.present = true;
      const bool src = name == kEnvStepSource;
      bool& seen = src ? seen_source : seen_model;
      if (seen) {
        problem(name + " given more than once: the first value counts");
      } else {
        seen = true;
        // A sync-mode prediction never ran on the job's node: "node" is only set by the report path.
        if (!cut && (src ? valid_step_source(value) && value != "node" : valid_model_name(value)))
          (src ? step_source : model) = value;
        else
          problem(name + "='" + sanitize(value, 32) + "' is not " +
                  (src ? "measured or spec" : "a plain file name") + ": ignored");
      }
      continue;
    }
    for (auto& s : slots) {
      if (name != s.name) continue;
      out.present = true;
      const std::string shown = sanitize(value, 32) + (cut && value.size() <= 32 ? "..." : "");
      if (s.seen) {
        problem(name + " given more than once: the first value counts");
        break;
      }
      s.seen = true;
      auto v = cut ? std::nullopt : parse_number(value);
      if (!v) {
        problem(name + "='" + shown + "' is not a finite number: ignored");
      } else if (*v < 0) {
        problem(name + "='" + shown + "' is negative: ignored");
      } else if (const double lim = name == kEnvGpus ? limits.max_gpus
                                    : s.integer           ? limits.max_steps
                                                          : limits.max_seconds;
                 *v > lim) {
        problem(name + "='" + shown + "' is above the limit " + fmt_num(lim) + ": ignored");
      } else {
        s.value = v;
      }
      break;
    }
  }
  if (out.truncated) {
    // This one is always kept (first): it says the job's environment was cut.
    ++out.problem_count;
    out.problems.insert(out.problems.begin(),"job control environment too large: parsing stopped after " +
            std::to_string(ttpred_entries > kMaxTtpredEntries ? kMaxTtpredEntries : ttpred_entries) +
            " TTPRED_* entries (bounds: " + std::to_string(kMaxEnvScan) + " entries, " +
            std::to_string(kMaxTtpredEntries) + " TTPRED_* entries, " +
            std::to_string(kMaxTtpredBytes) + " bytes)");
    if (out.problems.size() > kMaxProblems) out.problems.pop_back();
  }
  if (!out.present) return out;
  auto& sec = slots[0].value;
  auto& hor = slots[3].value;
  if (!sec && !hor) {
    problem("no valid TTPRED_SECONDS or TTPRED_HORIZON_SECONDS: prediction ignored");
    return out;
  }
  Prediction p;
  p.seconds = sec ? *sec : *hor;
  p.horizon_seconds = hor ? *hor : *sec;
  if (p.seconds > p.horizon_seconds) p.seconds = p.horizon_seconds;  // T(eps) <= T
  auto band = [](const std::optional<double>& lo, const std::optional<double>& hi, double point,
                 double& out_lo, double& out_hi) {
    out_lo = lo ? std::min(*lo, point) : point;
    out_hi = hi ? std::max(*hi, point) : point;
  };
  band(slots[1].value, slots[2].value, p.seconds, p.seconds_lo, p.seconds_hi);
  band(slots[4].value, slots[5].value, p.horizon_seconds, p.horizon_lo, p.horizon_hi);
  if (slots[6].value) p.step_seconds = *slots[6].value;
  if (slots[7].value) p.steps = static_cast<std::int64_t>(*slots[7].value);
  if (slots[8].value) p.horizon_steps = static_cast<std::int64_t>(*slots[8].value);
  if (slots[9].value) p.gpus = static_cast<std::int64_t>(*slots[9].value);
  p.step_source = step_source;
  p.model = model;
  out.prediction = p;
  return out;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[64];
  if (seconds < 9.95) {  // short runs (tests, demos): one decimal
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
    return buf;
  }
  auto s = static_cast<long long>(std::llround(seconds));
  long long d = s / 86400, h = (s / 3600) % 24, m = (s / 60) % 60, sec = s % 60;
  if (d > 0)
    std::snprintf(buf, sizeof buf, "%lldd%02lldh%02lldm", d, h, m);
  else if (h > 0)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", h, m, sec);
  else if (m > 0)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", m, sec);
  else
    std::snprintf(buf, sizeof buf, "%llds", sec);
  return buf;
}

double gpu_hours(double horizon_seconds, double gpus) { return horizon_seconds * gpus / 3600.0; }

std::string summary_line(const Prediction& p) {
  std::string s = "ttpred: converges in ";
  if (p.steps >= 0) s += std::to_string(p.steps) + " steps, ";
  s += format_duration(p.seconds) + " (5-95%: " + format_duration(p.seconds_lo) + "-" +
       format_duration(p.seconds_hi) + "); full horizon ";
  if (p.horizon_steps >= 0) s += std::to_string(p.horizon_steps) + " steps, ";
  s += format_duration(p.horizon_seconds) + " (" + format_duration(p.horizon_lo) + "-" +
       format_duration(p.horizon_hi) + ")";
  if (p.step_seconds > 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "; %.3g s/step", p.step_seconds);
    s += buf;
  }
  if (p.gpus >= 0) {
    const double h = gpu_hours(p.horizon_seconds, static_cast<double>(p.gpus));
    char buf[96];
    if (h >= 100) std::snprintf(buf, sizeof buf, "; cost %.0f GPU-hours", h);
    else std::snprintf(buf, sizeof buf, "; cost %.3g GPU-hours", h);
    s += buf;
    s += " (" + std::to_string(p.gpus) + " GPU" + (p.gpus == 1 ? "" : "s") + ")";
  }
  if (!p.warnings.empty())
    s += "; " + std::to_string(p.warnings.size()) + " warning" + (p.warnings.size() > 1 ? "s" : "");
  return s;
}

}  // namespace ttpred::slurm
