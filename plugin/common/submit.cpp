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
  JobView job;
  if (!in.partition.empty()) job.partitions = split_list(in.partition);
  else if (!in.default_partition.empty()) job.partitions.push_back(in.default_partition);
  if (job.partitions.size() > 64) job.partitions.resize(64);
  job.account = in.account.value_or("");
  job.qos = in.qos;
  job.user = in.user;
  job.time_limit_minutes = in.time_limit_minutes;
  job.time_min_minutes = in.time_min_minutes;
  job_gpus(*policy, in.tres, in.min_nodes, in.max_nodes, in.exclusive, job);
  if (!in.array_inx.empty()) {
    auto n = array_task_count(in.array_inx);
    // Unparseable: count it as large as it can be (Slurm's MaxArraySize is at most 4000001).
    job.array_tasks = n ? *n : 4000001;
  }

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
  for (auto& m : d.user_messages) out.user_messages.push_back(std::move(m));
  if (d.reject) {
    out.rc = d.budget_reject ? SubmitOutput::Rc::reject_budget : SubmitOutput::Rc::reject_time;
    return out;
  }
  out.set_time_limit = d.set_time_limit;
  if (d.rule) {
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
  out.rechecked = true;

  JobView job;
  job.partitions = t.partitions;
  job.account = t.account.value_or("");
  job.qos = t.qos;
  job.user = t.user;
  job.time_limit_minutes = t.limit_minutes;
  job.array_tasks = t.array_tasks;
  job_gpus(policy, t.tres, t.min_nodes, t.max_nodes, t.exclusive, job);
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
