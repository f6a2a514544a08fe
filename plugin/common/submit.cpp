#include "submit.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

namespace ttpred::slurm {

namespace {

// GPUs the job holds: its own request (Slurm allocates and enforces it), gpu:0 is
// 0, per-node counts x the largest node count (-N a-b counts b), and for an
// --exclusive job at least limits.exclusive_node_gpus per node.
void job_gpus(const Policy& policy, const TresRequest& tres_in, std::uint32_t min_nodes,
              std::uint32_t max_nodes, bool exclusive, JobView& job) {
  TresRequest t = tres_in;
  t.nodes = std::max(min_nodes, max_nodes);
  double g = gpus_from_tres(t);
  job.gpus_source = tres_mentions_gpu(t) ? "job request" : "job request (none)";
  if (exclusive && policy.exclusive_node_gpus > 0) {
    const double whole = policy.exclusive_node_gpus * (t.nodes ? t.nodes : 1);
    if (whole > g) {
      g = whole;
      job.gpus_source = "--exclusive nodes";
    }
  }
  job.gpus = std::min(g, policy.limits.max_gpus);
  job.gpu_type = gpu_type_in_tres(t);
}

std::string fmt_g(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The job as the policy sees it at submission.
JobView view_of(const Policy& policy, const SubmitInput& in) {
  JobView job;
  if (!in.partition.empty()) job.partitions = split_list(in.partition);
  else if (!in.default_partition.empty()) job.partitions.push_back(in.default_partition);
  if (job.partitions.size() > 64) job.partitions.resize(64);
  job.account = in.account.value_or("");
  job.qos = in.qos;
  job.user = in.user;
  job.time_limit_minutes = in.time_limit_minutes;
  job.time_min_minutes = in.time_min_minutes;
  job_gpus(policy, in.tres, in.min_nodes, in.max_nodes, in.exclusive, job);
  if (!in.array_inx.empty()) {
    auto n = array_task_count(in.array_inx);
    // Unparseable: count it as large as it can be (Slurm's MaxArraySize is at most 4000001).
    job.array_tasks = n ? *n : 4000001;
  }

  return job;
}

std::string minutes_text(double m) {
  if (!std::isfinite(m)) return "UNLIMITED";
  return fmt_g(m) + " min";
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.compare(0, std::strlen(prefix), prefix) == 0;
}

}  // namespace

const char* env_lookup(const char* const* env, std::size_t count, const char* name,
                       bool spank_prefix) {
  if (!env) return nullptr;
  const std::size_t n = std::strlen(name);
  const std::size_t scan = std::min(count, kMaxEnvScan);
  for (std::size_t i = 0; i < scan; ++i) {
    const char* e = env[i];
    if (!e) continue;
    if (spank_prefix && std::strncmp(e, "SPANK_", 6) == 0) e += 6;
    if (std::strncmp(e, name, n) == 0 && e[n] == '=') return e + n + 1;
  }
  return nullptr;
}

std::vector<BudgetState> budget_states(const Policy& policy, const std::optional<std::string>& account,
                                       const std::vector<std::string>& partitions,
                                       const std::vector<SlurmBudget>& slurm_budgets,
                                       const BudgetTally& tally, std::time_t now,
                                       const std::vector<std::pair<std::string, Period>>& refund,
                                       double refund_hours) {
  std::vector<BudgetState> states;
  if (!account || account->empty()) return states;  // unresolved: no budget of anyone
  for (const PolicyBudget* b : matching_budgets(policy, *account, partitions)) {
    BudgetState st;
    const char* phrase = period_phrase(b->period);
    st.what = "account " + sanitize(b->label(), 128) + " (policy budget" +
              (*phrase ? std::string(", ") + phrase : "") + ")";
    st.limit_hours = b->gpu_hours;
    double used = tally.used(b->key(), b->period, now);
    if (std::find(refund.begin(), refund.end(), std::make_pair(b->key(), b->period)) != refund.end())
      used = std::max(0.0, used - refund_hours);
    st.remaining_hours = std::max(0.0, b->gpu_hours - used);
    states.push_back(st);
  }
  // The Slurm budget of the job's (resolved) account only: never the entry the
  // user marked as default ('*' is user-supplied).
  if (const SlurmBudget* sb = find_slurm_budget(slurm_budgets, *account, partitions);
      sb && sb->limit_hours >= 0) {
    BudgetState st;
    st.what = "account " + sb->account + (sb->partition.empty() ? "" : " on partition " + sb->partition) +
              " (Slurm GrpTRESMins" + (sb->limited_by != sb->account ? " of " + sb->limited_by : "") + ")";
    st.limit_hours = sb->limit_hours;
    st.remaining_hours = sb->remaining_hours;
    st.from_slurm = true;
    states.push_back(st);
  }
  return states;
}

SubmitOutput evaluate_submit(const Policy* policy, const SubmitInput& in, BudgetTally& tally) {
  SubmitOutput out;
  if (!in.env || in.env_count == 0) return out;
  const EnvLimits limits = policy ? policy->limits : EnvLimits{};
  EnvParse env = parse_env(in.env, in.env_count, limits);
  if (!env.present) return out;  // not a ttpred job
  out.ttpred = true;
  const std::string who = "uid " + std::to_string(in.uid) + " job '" + sanitize(in.name, 64) + "'";
  for (const auto& p : env.problems) out.log_lines.push_back(who + ": invalid prediction value: " + p);
  if (env.problem_count > env.problems.size())
    out.log_lines.push_back(who + ": " + std::to_string(env.problem_count - env.problems.size()) +
                            " more problems in the job control environment not shown");
  if (!env.prediction) return out;
  if (!policy) {
    out.log_lines.push_back(who + ": no usable policy, job unchanged");
    return out;
  }
  JobView job = view_of(*policy, in);

  Prediction pred = *env.prediction;
  const StepBoundResult sb = apply_step_bounds(*policy, job.partitions, job.gpu_type, pred);

  std::vector<SlurmBudget> slurm_budgets;
  if (const char* v = env_lookup(in.env, in.env_count, kEnvSlurmBudget)) {
    std::string problem;
    std::string value(v, strnlen(v, 4097));
    if (auto parsed = parse_slurm_budgets(value, &problem)) slurm_budgets = std::move(*parsed);
    else out.log_lines.push_back(who + ": invalid " + kEnvSlurmBudget + " (" + problem + "): ignored");
  }

  auto lock = tally.lock();  // check and charge atomically
  const auto states = budget_states(*policy, in.account, job.partitions, slurm_budgets, tally, in.now);
  Decision d = decide(*policy, job, pred, states);
  out.decided = d.rule != nullptr;
  std::vector<std::pair<std::string, Period>> charged;
  if (!d.reject && in.account && !in.account->empty())
    for (const PolicyBudget* b : matching_budgets(*policy, *in.account, job.partitions)) {
      tally.charge(b->key(), b->period, in.now, d.cost_gpu_hours);
      charged.emplace_back(b->key(), b->period);
    }
  lock.unlock();

  std::string line = who + ": " + d.log;
  if (!sb.note.empty()) line += ", " + sb.note;
  if (d.rule) {
    line += ", account " + (in.account ? "'" + sanitize(*in.account, 64) + "'" : "unresolved (" + in.account_note + ")");
    line += ", " + fmt_g(job.gpus) + " GPUs";
    if (job.array_tasks > 1) line += " x " + fmt_g(job.array_tasks) + " tasks";
    line += ", cost " + fmt_hours(d.cost_gpu_hours) + " GPU-h" + (charged.empty() ? "" : " charged");
  }
  out.log_lines.push_back(line);
  if (!sb.note.empty() && d.rule) out.user_messages.push_back("ttpred: " + sb.note);
  if (!sb.source.empty() && d.rule) out.user_messages.push_back("ttpred: " + sb.source);
  for (auto& m : d.user_messages) out.user_messages.push_back(std::move(m));
  if (d.reject) {
    out.rc = d.budget_reject ? SubmitOutput::Rc::reject_budget : SubmitOutput::Rc::reject_time;
    return out;
  }
  out.set_time_limit = d.set_time_limit;
  if (d.rule) {
    // The job's comment (squeue -O comment, scontrol show job): the limit and the step time's source.
    out.comment = d.set_time_limit ? "ttpred: " + std::to_string(*d.set_time_limit) + " min (rule '" +
                                         sanitize(d.rule->name, 64) + "')"
                                   : "ttpred: predicted, time limit kept (rule '" + sanitize(d.rule->name, 64) + "')";
    if (!sb.source.empty()) out.comment += "; " + sb.source;
    out.comment = sanitize(out.comment, 480);
    JobTicket t;
    t.uid = in.uid;
    t.account = in.account;
    t.partitions = job.partitions;
    t.qos = in.qos;
    t.user = in.user;
    t.prediction = *env.prediction;
    t.tres = in.tres;
    t.min_nodes = in.min_nodes;
    t.max_nodes = in.max_nodes;
    t.exclusive = in.exclusive;
    t.array_tasks = job.array_tasks;
    t.limit_minutes = d.limit_minutes;
    t.cost_gpu_hours = charged.empty() ? 0 : d.cost_gpu_hours;
    t.charged = charged;
    t.charged_at = in.now;
    out.ticket = std::move(t);
  }
  return out;
}

namespace {
// The policy's view of a job from its ticket (a later update or a report), with
// the time limit the caller checks against.
JobView job_view_of(const Policy& policy, const JobTicket& t, std::optional<double> limit_minutes) {
  JobView job;
  job.partitions = t.partitions;
  job.account = t.account.value_or("");
  job.qos = t.qos;
  job.user = t.user;
  job.time_limit_minutes = limit_minutes;
  job.array_tasks = t.array_tasks;
  job_gpus(policy, t.tres, t.min_nodes, t.max_nodes, t.exclusive, job);
  return job;
}
}  // namespace

ModifyOutput evaluate_modify(const Policy& policy, const JobTicket& ticket, const ModifyInput& in,
                             BudgetTally& tally) {
  ModifyOutput out;
  out.ticket = ticket;
  JobTicket& t = out.ticket;
  if (in.account) t.account = *in.account;
  if (in.partition) t.partitions = split_list(*in.partition);
  if (t.partitions.size() > 64) t.partitions.resize(64);
  if (in.tres) t.tres = *in.tres;
  if (in.min_nodes) t.min_nodes = *in.min_nodes;
  if (in.max_nodes) t.max_nodes = *in.max_nodes;
  if (in.qos) t.qos = *in.qos;
  if (in.time_limit_minutes) t.limit_minutes = *in.time_limit_minutes;
  if (ticket.awaiting) {
    // No prediction yet: the change is recorded (a new limit counts as the user's
    // own); the report applies the policy to the job as it is then.
    if (in.time_limit_minutes) t.user_limit_minutes = *in.time_limit_minutes;
    out.log_lines.push_back("uid " + std::to_string(t.uid) +
                            " update: awaiting its prediction, recorded for the report");
    return out;
  }
  out.rechecked = true;

  JobView job = job_view_of(policy, t, t.limit_minutes);
  Prediction pred = t.prediction;
  const StepBoundResult sb = apply_step_bounds(policy, job.partitions, job.gpu_type, pred);

  auto lock = tally.lock();
  // The job's own charge is given back before the check (it is replaced).
  const double refund = ticket.cost_gpu_hours;
  const auto states = budget_states(policy, t.account, job.partitions, in.slurm_budgets, tally, in.now,
                                    ticket.charged, refund);
  Decision d = decide(policy, job, pred, states);
  const std::string who = "uid " + std::to_string(t.uid) + " update";
  std::string line = who + ": " + d.log + ", cost " + fmt_hours(d.cost_gpu_hours) + " GPU-h (was " +
                     fmt_hours(ticket.cost_gpu_hours) + ")";
  if (!sb.note.empty()) line += ", " + sb.note;
  if (d.reject) {
    lock.unlock();
    out.rc = d.budget_reject ? ModifyOutput::Rc::reject_budget : ModifyOutput::Rc::reject_time;
    line += ", update refused";
    out.log_lines.push_back(line);
    out.user_messages.push_back("ttpred: update refused by the policy (the job stays as it was):");
    for (auto& m : d.user_messages) out.user_messages.push_back(std::move(m));
    out.ticket = ticket;
    return out;
  }
  // Accepted: move the charge (same period start only; an old period's charge is gone anyway).
  for (const auto& [key, per] : ticket.charged)
    if (period_start(per, ticket.charged_at) == period_start(per, in.now))
      tally.refund(key, per, in.now, refund);
  t.charged.clear();
  t.cost_gpu_hours = 0;
  if (t.account && !t.account->empty()) {
    for (const PolicyBudget* b : matching_budgets(policy, *t.account, job.partitions)) {
      tally.charge(b->key(), b->period, in.now, d.cost_gpu_hours);
      t.charged.emplace_back(b->key(), b->period);
    }
    if (!t.charged.empty()) t.cost_gpu_hours = d.cost_gpu_hours;
  }
  t.charged_at = in.now;
  lock.unlock();
  out.log_lines.push_back(line + ", update accepted");
  for (auto& m : d.user_messages)
    if (m.find("warning") != std::string::npos || m.find("cost") != std::string::npos)
      out.user_messages.push_back(std::move(m));
  return out;
}

SubmitOutput evaluate_submit_pending(const Policy* policy, const SubmitInput& in,
                                     std::uint32_t predict_job, BudgetTally& tally) {
  SubmitOutput out;
  out.ttpred = true;
  const std::string who = "uid " + std::to_string(in.uid) + " job '" + sanitize(in.name, 64) + "'";
  const std::string pj = std::to_string(predict_job);
  if (!policy) {
    out.log_lines.push_back(who + ": prediction job " + pj + ": no usable policy, job unchanged");
    return out;
  }
  JobView job = view_of(*policy, in);
  const Rule* r = match_rule(*policy, job);
  if (!r) {
    out.log_lines.push_back(who + ": prediction job " + pj + ": no rule matches: job unchanged");
    return out;
  }
  out.decided = true;
  double limit = r->time_limit.max_minutes;  // the fallback until the prediction reports
  bool own_limit = in.time_limit_minutes.has_value();
  if (own_limit) {
    limit = *in.time_limit_minutes;
  } else if (r->set_time_limit) {
    std::uint32_t m = r->time_limit.max_minutes;
    if (in.time_min_minutes && std::isfinite(*in.time_min_minutes) && *in.time_min_minutes > m &&
        *in.time_min_minutes < 4294967294.0)
      m = static_cast<std::uint32_t>(*in.time_min_minutes);
    out.set_time_limit = m;
    limit = m;
  }
  const double cost = job_cost_gpu_hours(limit, job.gpus, job.array_tasks);
  // The least any prediction can give (the rule's min_minutes, or the user's own
  // limit): a rule that rejects over-budget jobs refuses the job now when even
  // that does not fit what is left (the report cannot refuse a queued job).
  const double least = job_cost_gpu_hours(own_limit ? limit : r->time_limit.min_minutes, job.gpus, job.array_tasks);
  std::vector<std::pair<std::string, Period>> charged;
  {
    auto lock = tally.lock();
    if (r->budget.reject && job.gpus > 0)
      for (const auto& st : budget_states(*policy, in.account, job.partitions, {}, tally, in.now))
        if (least > st.remaining_hours) {
          lock.unlock();
          out.rc = SubmitOutput::Rc::reject_budget;
          out.user_messages.push_back("ttpred: job rejected: even its smallest limit costs " + fmt_hours(least) +
                                      " GPU-hours, more than the " + fmt_hours(st.remaining_hours) +
                                      " GPU-hours left to " + st.what + " (policy rule '" +
                                      sanitize(r->name, 64) + "')");
          out.log_lines.push_back(who + ": rule '" + sanitize(r->name, 64) + "': prediction job " + pj +
                                  ", over budget (" + st.what + " left " + fmt_hours(st.remaining_hours) +
                                  "), rejected");
          return out;
        }
    if (in.account && !in.account->empty())
      for (const PolicyBudget* b : matching_budgets(*policy, *in.account, job.partitions)) {
        tally.charge(b->key(), b->period, in.now, cost);
        charged.emplace_back(b->key(), b->period);
      }
  }
  out.wait_for_job = predict_job;
  out.comment = "ttpred: predicting (job " + pj + "); time limit " + minutes_text(limit) +
                (own_limit ? " (yours)" : " until it reports");
  out.user_messages.push_back("ttpred: the job waits for its prediction (job " + pj + "); time limit " +
                              minutes_text(limit) + (own_limit ? " (yours)" : " until then (policy rule '" +
                              sanitize(r->name, 64) + "' fallback)"));
  out.log_lines.push_back(who + ": rule '" + sanitize(r->name, 64) + "': waits for prediction job " + pj +
                          ", limit " + minutes_text(limit) + (own_limit ? " (user)" : " (fallback)") +
                          ", cost " + fmt_hours(cost) + " GPU-h" + (charged.empty() ? "" : " charged"));
  JobTicket t;
  t.uid = in.uid;
  t.account = in.account;
  t.partitions = job.partitions;
  t.qos = in.qos;
  t.user = in.user;
  t.tres = in.tres;
  t.min_nodes = in.min_nodes;
  t.max_nodes = in.max_nodes;
  t.exclusive = in.exclusive;
  t.array_tasks = job.array_tasks;
  t.limit_minutes = limit;
  t.cost_gpu_hours = charged.empty() ? 0 : cost;
  t.charged = charged;
  t.charged_at = in.now;
  t.awaiting = true;
  t.predict_job = predict_job;
  t.user_limit_minutes = in.time_limit_minutes;
  t.time_min_minutes = in.time_min_minutes;
  // Until a report: a prediction as long as the fallback (what job_modify re-checks).
  t.prediction.seconds = t.prediction.seconds_lo = t.prediction.seconds_hi = 0;
  out.ticket = std::move(t);
  return out;
}

ReportOutput evaluate_report(const Policy& policy, const JobTicket& ticket, const std::string& report,
                             std::time_t now, BudgetTally& tally) {
  ReportOutput out;
  out.ticket = ticket;
  JobTicket& t = out.ticket;
  const std::string who = "uid " + std::to_string(ticket.uid) + " report of prediction job " +
                          std::to_string(ticket.predict_job);
  if (!ticket.awaiting) {
    out.rc = ReportOutput::Rc::not_awaited;
    out.log_lines.push_back(who + ": refused: no prediction is awaited for this job (one report only)");
    return out;
  }
  const bool result = starts_with(report, kReportResult), failed = starts_with(report, kReportFailed);
  if (!result && !failed) {
    out.rc = ReportOutput::Rc::bad;
    return out;
  }
  t.awaiting = false;
  const std::string kept = "time limit " + minutes_text(ticket.limit_minutes) +
                           (ticket.user_limit_minutes ? " (yours)" : " (policy fallback)");
  std::string failure;
  std::optional<Prediction> pred;
  if (report.size() > kMaxReportBytes) {
    failure = "report larger than " + std::to_string(kMaxReportBytes) + " bytes";
  } else if (failed) {
    failure = sanitize(report.substr(std::strlen(kReportFailed)), 200);
    if (failure.empty()) failure = "no reason given";
  } else {
    try {
      Prediction p = prediction_from_json(report.substr(std::strlen(kReportResult)));
      // The same validation as the synchronous path's job control environment.
      std::vector<std::string> entries;
      for (const auto& [name, value] : prediction_to_env(p)) entries.push_back(name + "=" + value);
      std::vector<const char*> env;
      for (const auto& e : entries) env.push_back(e.c_str());
      EnvParse e = parse_env(env.data(), env.size(), policy.limits);
      for (const auto& prob : e.problems) out.log_lines.push_back(who + ": invalid prediction value: " + prob);
      if (e.prediction) pred = *e.prediction;
      else failure = "invalid prediction values";
      // The prediction job timed its steps on its own node (the partition's GPU).
      if (pred && pred->step_source == "measured") pred->step_source = "node";
    } catch (const JsonError& e) {
      failure = "invalid prediction: " + sanitize(e.what(), 160);
    }
  }
  if (!pred) {
    out.comment = "ttpred: no prediction (" + failure + "); " + kept;
    out.log_lines.push_back(who + ": no prediction (" + failure + "), " + kept);
    return out;
  }
  t.prediction = *pred;
  JobView job = job_view_of(policy, t, t.user_limit_minutes);
  job.time_min_minutes = t.time_min_minutes;
  Prediction p = *pred;
  const StepBoundResult sb = apply_step_bounds(policy, job.partitions, job.gpu_type, p);

  auto lock = tally.lock();
  const auto states = budget_states(policy, t.account, job.partitions, {}, tally, now, ticket.charged,
                                    ticket.cost_gpu_hours);
  Decision d = decide(policy, job, p, states);
  std::string line = who + ": " + d.log;
  if (!sb.note.empty()) line += ", " + sb.note;
  if (!d.rule || d.reject) {
    lock.unlock();
    std::string why = !d.rule ? std::string("no policy rule matches")
                              : (d.user_messages.empty() ? std::string("rejected by the policy")
                                                         : d.user_messages.back());
    if (starts_with(why, "ttpred: ")) why = why.substr(8);
    out.comment = "ttpred: prediction not applied (" + sanitize(why, 240) + "); " + kept;
    out.log_lines.push_back(line + ", not applied, " + kept);
    return out;
  }
  // Accepted: the charge moves from the fallback's cost to the new one.
  for (const auto& [key, per] : ticket.charged)
    if (period_start(per, ticket.charged_at) == period_start(per, now))
      tally.refund(key, per, now, ticket.cost_gpu_hours);
  t.charged.clear();
  t.cost_gpu_hours = 0;
  if (t.account && !t.account->empty()) {
    for (const PolicyBudget* b : matching_budgets(policy, *t.account, job.partitions)) {
      tally.charge(b->key(), b->period, now, d.cost_gpu_hours);
      t.charged.emplace_back(b->key(), b->period);
    }
    if (!t.charged.empty()) t.cost_gpu_hours = d.cost_gpu_hours;
  }
  t.charged_at = now;
  lock.unlock();
  t.limit_minutes = d.limit_minutes;
  out.set_time_limit = d.set_time_limit;
  const Rule& r = *d.rule;
  const bool horizon = r.time_limit.basis == Basis::horizon;
  const std::string band = format_duration(basis_point_seconds(r.time_limit, p)) + ", 5-95%: " +
                           format_duration(horizon ? p.horizon_lo : p.seconds_lo) + "-" +
                           format_duration(horizon ? p.horizon_hi : p.seconds_hi);
  const std::string what = horizon ? "horizon " : "converge ";
  if (d.set_time_limit) {
    out.comment = "ttpred: " + std::to_string(*d.set_time_limit) + " min (predicted " + what + band +
                  "; rule '" + sanitize(r.name, 64) + "')";
  } else {
    out.comment = "ttpred: predicted " + what + band + "; " + kept;
    for (const auto& m : d.user_messages)
      if (m.find("warning") != std::string::npos) {
        out.comment += "; " + m.substr(starts_with(m, "ttpred: ") ? 8 : 0);
        break;
      }
  }
  if (!sb.note.empty()) out.comment += "; " + sb.note;
  if (!sb.source.empty()) out.comment += "; " + sb.source;
  out.comment = sanitize(out.comment, 480);
  out.log_lines.push_back(line + ", report applied");
  return out;
}

std::string TicketStore::add(JobTicket t) {
  std::lock_guard<std::mutex> lock(m_);
  if (seed_ == 0) {
    std::random_device rd;
    seed_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^ 0x9e3779b97f4a7c15ULL;
  }
  ++counter_;
  // splitmix64 of seed + counter: unique per slurmctld run, not guessable by users.
  auto mix = [](std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  char buf[48];
  std::snprintf(buf, sizeof buf, "%016llx%016llx",
                static_cast<unsigned long long>(mix(seed_ + counter_)),
                static_cast<unsigned long long>(mix(seed_ ^ (counter_ * 0x2545F4914F6CDD1DULL))));
  std::string key = buf;
  map_[key] = std::move(t);
  order_.push_back(key);
  while (order_.size() > max_) {
    map_.erase(order_.front());
    order_.pop_front();
  }
  return key;
}

std::optional<JobTicket> TicketStore::get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(m_);
  auto it = map_.find(key);
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

void TicketStore::put(const std::string& key, JobTicket t) {
  std::lock_guard<std::mutex> lock(m_);
  auto it = map_.find(key);
  if (it != map_.end()) it->second = std::move(t);
}

void TicketStore::clear() {
  std::lock_guard<std::mutex> lock(m_);
  map_.clear();
  order_.clear();
}

std::size_t TicketStore::size() const {
  std::lock_guard<std::mutex> lock(m_);
  return map_.size();
}

}  // namespace ttpred::slurm
