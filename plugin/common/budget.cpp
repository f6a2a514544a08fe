#include "budget.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

#include "prediction.hpp"  // parse_number

namespace ttpred::slurm {

namespace {

std::vector<std::string> split_any(const std::string& s, const char* seps) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::string(seps).find(c) != std::string::npos) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '+')) return false;
  return true;
}

// "account" or "account/user"
bool valid_limited_by(const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos) return valid_name(s);
  return valid_name(s.substr(0, slash)) && valid_name(s.substr(slash + 1));
}

}  // namespace

double gpus_in_tres(const std::string& tres) {
  double total = 0;
  for (std::string e : split_any(tres, ",;")) {
    // "gres:gpu:2" (22.05), "gres/gpu:2", "gres/gpu=2", "gpu:a100:2", "gres/gpu:a100=2"
    if (e.rfind("gres:", 0) == 0 || e.rfind("gres/", 0) == 0) e = e.substr(5);
    std::string count_str;
    auto eq = e.find('=');
    if (eq != std::string::npos) {
      count_str = e.substr(eq + 1);
      e = e.substr(0, eq);
    }
    auto parts = split_any(e, ":");
    if (parts.empty() || parts[0] != "gpu") continue;
    if (count_str.empty()) {
      // gpu, gpu:2, gpu:type, gpu:type:2
      if (parts.size() >= 2 && parse_number(parts.back())) count_str = parts.back();
      else count_str = "1";
    }
    auto v = parse_number(count_str);
    if (v && *v >= 0 && *v <= 1e6) total += std::floor(*v);
  }
  return total;
}

double gpus_from_tres(const TresRequest& r) {
  const double nodes = r.nodes ? r.nodes : 1;
  double best = 0;
  best = std::max(best, gpus_in_tres(r.per_job));
  best = std::max(best, gpus_in_tres(r.per_node) * nodes);
  best = std::max(best, gpus_in_tres(r.per_task) * (r.tasks ? r.tasks : nodes));
  best = std::max(best, gpus_in_tres(r.per_socket) * (r.sockets_per_node ? r.sockets_per_node : 1) *
                            nodes);
  return best;
}

bool tres_mentions_gpu(const TresRequest& r) {
  for (const std::string* s : {&r.per_job, &r.per_node, &r.per_task, &r.per_socket})
    for (std::string e : split_any(*s, ",;")) {
      if (e.rfind("gres:", 0) == 0 || e.rfind("gres/", 0) == 0) e = e.substr(5);
      auto parts = split_any(e.substr(0, e.find('=')), ":");
      if (!parts.empty() && parts[0] == "gpu") return true;
    }
  return false;
}

std::string gpu_type_in_tres(const TresRequest& r) {
  for (const std::string* s : {&r.per_job, &r.per_node, &r.per_task, &r.per_socket})
    for (std::string e : split_any(*s, ",;")) {
      if (e.rfind("gres:", 0) == 0 || e.rfind("gres/", 0) == 0) e = e.substr(5);
      auto parts = split_any(e.substr(0, e.find('=')), ":");
      if (parts.size() < 2 || parts[0] != "gpu") continue;
      if (parts.size() == 2 && parse_number(parts[1])) continue;  // gpu:2
      if (parts[1].size() <= 64) return parts[1];
    }
  return "";
}

std::optional<double> array_task_count(const std::string& inx) {
  if (inx.size() > 4096) return std::nullopt;
  std::string s = inx.substr(0, inx.find('%'));  // "%5": at most 5 at a time, same count
  double total = 0;
  for (const auto& part : split_any(s, ",")) {
    std::string range = part, step_s;
    auto colon = range.find(':');
    if (colon != std::string::npos) {
      step_s = range.substr(colon + 1);
      range = range.substr(0, colon);
    }
    auto dash = range.find('-');
    auto a = parse_number(range.substr(0, dash));
    auto b = dash == std::string::npos ? a : parse_number(range.substr(dash + 1));
    auto step = step_s.empty() ? std::optional<double>(1) : parse_number(step_s);
    if (!a || !b || !step || *a < 0 || *b < *a || *step < 1 || *b > 1e9) return std::nullopt;
    total += std::floor((std::floor(*b) - std::floor(*a)) / std::floor(*step)) + 1;
    if (total > 1e7) return std::nullopt;
  }
  if (total < 1) return std::nullopt;
  return total;
}

std::vector<SlurmBudget> compute_slurm_budgets(const std::vector<AssocInfo>& assocs,
                                               const std::string& user,
                                               const std::string& default_account) {
  std::map<std::uint32_t, const AssocInfo*> by_id;
  for (const auto& a : assocs) by_id[a.id] = &a;
  std::vector<SlurmBudget> out;
  bool default_seen = false;
  for (const auto& a : assocs) {
    if (a.user.empty() || a.user != user) continue;
    SlurmBudget b;
    b.account = a.account;
    b.partition = a.partition;
    b.is_default = !default_account.empty() && a.account == default_account && a.partition.empty();
    bool limited = false;
    double best_left = 0;
    std::set<std::uint32_t> seen;
    for (const AssocInfo* cur = &a; cur && !seen.count(cur->id);) {
      seen.insert(cur->id);
      if (cur->gpu_limit_minutes) {
        double left_min = *cur->gpu_limit_minutes - cur->gpu_usage_seconds / 60.0;
        if (!limited || left_min < best_left) {
          best_left = left_min;
          b.limit_hours = *cur->gpu_limit_minutes / 60.0;
          b.limited_by = cur->user.empty() ? cur->account : cur->account + "/" + cur->user;
        }
        limited = true;
      }
      auto it = by_id.find(cur->parent_id);
      cur = (cur->parent_id && it != by_id.end()) ? it->second : nullptr;
    }
    if (limited) {
      b.remaining_hours = std::max(0.0, best_left / 60.0);
    } else if (b.is_default) {
      b.limit_hours = -1;  // no limit: kept only to mark the default account
    } else {
      continue;
    }
    default_seen = default_seen || b.is_default;
    out.push_back(b);
  }
  if (!default_seen && valid_name(default_account)) {
    SlurmBudget b;
    b.account = default_account;
    b.is_default = true;
    b.limit_hours = -1;
    out.push_back(b);
  }
  return out;
}

std::string format_slurm_budgets(const std::vector<SlurmBudget>& bs) {
  std::string s;
  char buf[64];
  for (const auto& b : bs) {
    if (!valid_name(b.account) || (!b.partition.empty() && !valid_name(b.partition))) continue;
    if (!s.empty()) s += ',';
    if (b.is_default) s += '*';
    s += b.account;
    if (!b.partition.empty()) s += "@" + b.partition;
    if (b.limit_hours < 0) {
      s += ":0:-1:";
    } else {
      std::snprintf(buf, sizeof buf, ":%.6g:%.6g:", b.remaining_hours, b.limit_hours);
      s += buf;
      if (valid_limited_by(b.limited_by)) s += b.limited_by;
    }
  }
  return s;
}

std::optional<std::vector<SlurmBudget>> parse_slurm_budgets(const std::string& s,
                                                            std::string* problem) {
  auto bad = [&](const std::string& why) -> std::optional<std::vector<SlurmBudget>> {
    if (problem) *problem = why;
    return std::nullopt;
  };
  if (s.size() > 4096) return bad("longer than 4096 characters");
  std::vector<SlurmBudget> out;
  for (const auto& e : split_any(s, ",")) {
    if (out.size() >= 64) return bad("more than 64 entries");
    std::vector<std::string> fields;
    {
      std::string cur;
      for (char c : e) {
        if (c == ':') {
          fields.push_back(cur);
          cur.clear();
        } else {
          cur += c;
        }
      }
      fields.push_back(cur);
    }
    if (fields.size() != 4) return bad("entry without 4 ':'-separated fields");
    SlurmBudget b;
    std::string name = fields[0];
    if (!name.empty() && name[0] == '*') {
      b.is_default = true;
      name = name.substr(1);
    }
    auto at = name.find('@');
    if (at != std::string::npos) {
      b.partition = name.substr(at + 1);
      name = name.substr(0, at);
      if (!valid_name(b.partition)) return bad("invalid partition name");
    }
    if (!valid_name(name)) return bad("invalid account name");
    b.account = name;
    auto rem = parse_number(fields[1]);
    auto lim = parse_number(fields[2]);
    if (!rem || !lim || *rem < 0 || *rem > 1e12 || *lim < -1 || *lim > 1e12)
      return bad("invalid number");
    b.remaining_hours = *rem;
    b.limit_hours = *lim < 0 ? -1 : *lim;
    if (b.limit_hours >= 0 && b.remaining_hours > b.limit_hours) b.remaining_hours = b.limit_hours;
    if (!fields[3].empty() && !valid_limited_by(fields[3])) return bad("invalid account name");
    b.limited_by = fields[3].empty() ? b.account : fields[3];
    out.push_back(b);
  }
  return out;
}

const SlurmBudget* find_slurm_budget(const std::vector<SlurmBudget>& bs, const std::string& account,
                                     const std::vector<std::string>& partitions) {
  std::string acct = account;
  if (acct.empty()) {
    for (const auto& b : bs)
      if (b.is_default) {
        acct = b.account;
        break;
      }
    if (acct.empty()) return nullptr;
  }
  const SlurmBudget* best = nullptr;
  for (const auto& b : bs) {
    if (b.account != acct) continue;
    if (!b.partition.empty()) {
      // A partition association only applies when it is the job's only partition.
      if (partitions.size() == 1 && partitions[0] == b.partition) return &b;
      continue;
    }
    if (!best) best = &b;
  }
  return best;
}

std::optional<Period> period_from_string(const std::string& s) {
  if (s == "day") return Period::day;
  if (s == "week") return Period::week;
  if (s == "month") return Period::month;
  if (s == "year") return Period::year;
  if (s == "none" || s == "total") return Period::none;
  return std::nullopt;
}

const char* period_name(Period p) {
  switch (p) {
    case Period::day: return "day";
    case Period::week: return "week";
    case Period::month: return "month";
    case Period::year: return "year";
    case Period::none: return "none";
  }
  return "none";
}

const char* period_phrase(Period p) {
  switch (p) {
    case Period::day: return "today";
    case Period::week: return "this week";
    case Period::month: return "this month";
    case Period::year: return "this year";
    case Period::none: return "";
  }
  return "";
}

std::time_t period_start(Period p, std::time_t now) {
  if (p == Period::none) return 0;
  std::tm tm{};
  gmtime_r(&now, &tm);
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  if (p == Period::week) tm.tm_mday -= (tm.tm_wday + 6) % 7;  // Monday
  if (p == Period::month) tm.tm_mday = 1;
  if (p == Period::year) {
    tm.tm_mday = 1;
    tm.tm_mon = 0;
  }
  tm.tm_isdst = 0;
  return timegm(&tm);
}

double BudgetTally::used(const std::string& key, Period p, std::time_t now) const {
  auto it = slots_.find(key);
  if (it == slots_.end() || it->second.start != period_start(p, now)) return 0;
  return it->second.hours;
}

void BudgetTally::charge(const std::string& key, Period p, std::time_t now, double gpu_hours) {
  if (!std::isfinite(gpu_hours) || gpu_hours <= 0) return;
  Slot& s = slots_[key];
  const std::time_t start = period_start(p, now);
  if (s.start != start) {
    s.start = start;
    s.hours = 0;
  }
  s.hours += gpu_hours;
}

void BudgetTally::refund(const std::string& key, Period p, std::time_t now, double gpu_hours) {
  if (!std::isfinite(gpu_hours) || gpu_hours <= 0) return;
  auto it = slots_.find(key);
  if (it == slots_.end() || it->second.start != period_start(p, now)) return;
  it->second.hours = std::max(0.0, it->second.hours - gpu_hours);
}

void BudgetTally::clear() { slots_.clear(); }

std::string fmt_hours(double h) {
  char buf[64];
  if (!std::isfinite(h)) return "?";
  if (h >= 100) std::snprintf(buf, sizeof buf, "%.0f", h);
  else if (h >= 0.995) std::snprintf(buf, sizeof buf, "%.2f", h);
  else std::snprintf(buf, sizeof buf, "%.3f", h);
  std::string s = buf;
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

}  // namespace ttpred::slurm
