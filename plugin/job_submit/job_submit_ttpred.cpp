// job_submit/ttpred: reads the prediction the SPANK plugin put in
// job_desc->spank_job_env, validates it (untrusted) and applies the site policy
// (YAML, see docs/admin-guide.md): set the time limit when none was given, warn
// or reject when the user's limit is far off. Fails open everywhere: a missing or
// broken policy, bad values or an internal error leave the job unchanged.
//
// Budgets (docs/budgets.md): the predicted cost (horizon x the job's GPU request,
// else the spec's GPUs) is checked against the policy's `budgets:` (an in-memory
// tally of the predicted GPU-hours of the jobs let through: resets when slurmctld
// restarts) and against Slurm's GrpTRESMins budget the SPANK plugin read at sbatch
// (TTPRED_SLURM_BUDGET: untrusted, advisory; Slurm itself enforces GrpTRESMins).
//
// Policy file: $TTPRED_POLICY in slurmctld's environment, else ttpred.yaml next to
// slurm.conf, else /etc/slurm/ttpred.yaml. Loaded in init() and again after
// `scontrol reconfigure` (22.05 does not re-init job_submit plugins on reconfigure,
// so the first ttpred job after slurm_conf.last_update changes reloads it once;
// this is the only file I/O outside init, once per reconfigure).
#include <sys/types.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>

extern "C" {
#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>
#include <slurm/slurm_version.h>
}

#include "../common/budget.hpp"
#include "../common/policy.hpp"
#include "../common/prediction.hpp"

#define TTPRED_EXPORT __attribute__((visibility("default")))

extern "C" {
extern TTPRED_EXPORT const char plugin_name[];
extern TTPRED_EXPORT const char plugin_type[];
extern TTPRED_EXPORT const uint32_t plugin_version;
const char plugin_name[] = "ttpred job_submit plugin";
const char plugin_type[] = "job_submit/ttpred";
const uint32_t plugin_version = SLURM_VERSION_NUMBER;

TTPRED_EXPORT int init(void);
TTPRED_EXPORT int fini(void);
TTPRED_EXPORT int job_submit(job_desc_msg_t* job_desc, uint32_t submit_uid, char** err_msg);
#if SLURM_VERSION_NUMBER >= SLURM_VERSION_NUM(23, 2, 0)
TTPRED_EXPORT int job_modify(job_desc_msg_t* job_desc, void* job_ptr, uint32_t submit_uid,
                             char** err_msg);
#else
TTPRED_EXPORT int job_modify(job_desc_msg_t* job_desc, void* job_ptr, uint32_t submit_uid);
#endif

// Provided by slurmctld / libslurmfull at load time (not in the public headers).
extern char* slurm_xstrdup(const char* str);
extern void slurm_xstrcat(char** str1, const char* str2);
extern char* uid_to_string_cached(uid_t uid);
extern void slurm_info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
extern void slurm_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
extern void slurm_verbose(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
extern void slurm_debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
extern slurm_conf_t slurm_conf __attribute__((weak));
extern char* default_part_name __attribute__((weak));
}

namespace {

using namespace ttpred::slurm;

std::mutex g_mutex;  // guards the two below; held only to copy/swap the pointer
std::shared_ptr<const Policy> g_policy;
time_t g_conf_stamp = 0;   // slurm_conf.last_update when the policy was loaded
time_t g_loaded_wall = 0;  // time() of that load
BudgetTally g_tally;       // predicted GPU-hours per policy budget (own mutex)

time_t conf_stamp() { return &slurm_conf ? slurm_conf.last_update : 0; }

void load_policy() {
  const char* conf_path = &slurm_conf ? slurm_conf.slurm_conf : nullptr;
  const std::string path = policy_path(std::getenv(kPolicyEnvVar), conf_path);
  std::shared_ptr<const Policy> next;
  try {
    next = std::make_shared<const Policy>(load_policy_file(path));
    slurm_info("job_submit/ttpred: loaded policy %s (%zu rules)", path.c_str(), next->rules.size());
  } catch (const PolicyError& e) {
    slurm_error("job_submit/ttpred: policy error: %s; jobs pass unchanged until it is fixed "
                "(then scontrol reconfigure)", e.what());
  } catch (const std::exception& e) {
    slurm_error("job_submit/ttpred: cannot load policy %s: %s; jobs pass unchanged", path.c_str(),
                e.what());
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_policy = std::move(next);
  g_conf_stamp = conf_stamp();
  g_loaded_wall = time(nullptr);
}

std::shared_ptr<const Policy> current_policy() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    // last_update has a one-second resolution: a load in the same second as the
    // reconfigure may have missed a second reconfigure in that second, so it is
    // redone once, at the first ttpred job after that second.
    const bool same_second = g_loaded_wall <= g_conf_stamp && time(nullptr) > g_conf_stamp;
    if (g_conf_stamp == conf_stamp() && !same_second) return g_policy;
  }
  // slurm.conf was re-read (scontrol reconfigure) since the last load: reload.
  load_policy();
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_policy;
}

void append_msg(char** err_msg, const std::string& msg) {
  if (!err_msg) return;
  if (*err_msg && **err_msg) slurm_xstrcat(err_msg, "\n");
  slurm_xstrcat(err_msg, msg.c_str());
}

std::string str(const char* s) { return s ? s : ""; }

// Value of NAME (or SPANK_NAME) in the job control environment, or nullptr.
const char* env_value(const job_desc_msg_t* jd, const char* name) {
  const std::size_t n = std::strlen(name);
  for (std::uint32_t i = 0; i < jd->spank_job_env_size; ++i) {
    const char* e = jd->spank_job_env[i];
    if (!e) continue;
    if (std::strncmp(e, "SPANK_", 6) == 0) e += 6;
    if (std::strncmp(e, name, n) == 0 && e[n] == '=') return e + n + 1;
  }
  return nullptr;
}

// GPUs for the cost: the job's own request (Slurm enforces it), else the spec's.
void resolve_gpus(const job_desc_msg_t* jd, const Prediction& p, const EnvLimits& limits,
                  JobView& job) {
  TresRequest t;
  t.per_job = str(jd->tres_per_job);
  t.per_node = str(jd->tres_per_node);
  t.per_task = str(jd->tres_per_task);
  t.per_socket = str(jd->tres_per_socket);
  t.nodes = jd->min_nodes != NO_VAL ? jd->min_nodes : 0;
  t.tasks = jd->num_tasks != NO_VAL ? jd->num_tasks : 0;
  t.sockets_per_node = jd->sockets_per_node != NO_VAL16 ? jd->sockets_per_node : 0;
  double g = gpus_from_tres(t);
  if (g > 0) {
    job.gpus_source = "job request";
  } else {
    g = p.gpus >= 0 ? static_cast<double>(p.gpus) : 1.0;
    job.gpus_source = p.gpus >= 0 ? "spec" : "spec (default)";
  }
  job.gpus = std::min(g, limits.max_gpus);
}

int do_submit(job_desc_msg_t* job_desc, uint32_t submit_uid, char** err_msg) {
  if (!job_desc || !job_desc->spank_job_env || job_desc->spank_job_env_size == 0)
    return SLURM_SUCCESS;
  auto policy = current_policy();
  EnvLimits limits = policy ? policy->limits : EnvLimits{};
  EnvParse env = parse_env(job_desc->spank_job_env, job_desc->spank_job_env_size, limits);
  if (!env.present) return SLURM_SUCCESS;  // not a ttpred job
  const uid_t uid = job_desc->user_id != NO_VAL ? job_desc->user_id : submit_uid;
  const std::string who = "uid " + std::to_string(uid) + " job '" + str(job_desc->name) + "'";
  for (const auto& p : env.problems)
    slurm_error("job_submit/ttpred: %s: invalid prediction value: %s", who.c_str(), p.c_str());
  if (!env.prediction) return SLURM_SUCCESS;
  if (!policy) {
    slurm_verbose("job_submit/ttpred: %s: no usable policy, job unchanged", who.c_str());
    return SLURM_SUCCESS;
  }
  JobView job;
  if (job_desc->partition)
    job.partitions = split_list(job_desc->partition);
  else if (&default_part_name && default_part_name)
    job.partitions.push_back(default_part_name);
  job.account = str(job_desc->account);
  job.qos = str(job_desc->qos);
  bool need_user = false;
  for (const auto& r : policy->rules) need_user = need_user || !r.match.user.empty();
  if (need_user) job.user = str(uid_to_string_cached(uid));  // cached NSS lookup
  if (job_desc->time_limit == INFINITE)
    job.time_limit_minutes = HUGE_VAL;
  else if (job_desc->time_limit != NO_VAL)
    job.time_limit_minutes = static_cast<double>(job_desc->time_limit);

  resolve_gpus(job_desc, *env.prediction, limits, job);

  // Slurm's accounting budget as the SPANK plugin read it (advisory).
  std::vector<SlurmBudget> slurm_budgets;
  if (const char* v = env_value(job_desc, kEnvSlurmBudget)) {
    std::string problem;
    if (auto parsed = parse_slurm_budgets(v, &problem)) slurm_budgets = std::move(*parsed);
    else
      slurm_error("job_submit/ttpred: %s: invalid %s (%s): ignored", who.c_str(), kEnvSlurmBudget,
                  problem.c_str());
  }
  std::string budget_account = job.account;
  if (budget_account.empty())
    for (const auto& b : slurm_budgets)
      if (b.is_default) budget_account = b.account;

  const time_t now = time(nullptr);
  auto tally_lock = g_tally.lock();  // check and charge atomically
  std::vector<BudgetState> states;
  const auto policy_budgets = matching_budgets(*policy, budget_account, job.partitions);
  for (const PolicyBudget* b : policy_budgets) {
    BudgetState st;
    const char* phrase = period_phrase(b->period);
    st.what = "account " + b->label() + " (policy budget" + (*phrase ? std::string(", ") + phrase : "") + ")";
    st.limit_hours = b->gpu_hours;
    st.remaining_hours = std::max(0.0, b->gpu_hours - g_tally.used(b->key(), b->period, now));
    states.push_back(st);
  }
  if (const SlurmBudget* sb = find_slurm_budget(slurm_budgets, budget_account, job.partitions);
      sb && sb->limit_hours >= 0) {
    BudgetState st;
    st.what = "account " + sb->account + (sb->partition.empty() ? "" : " on partition " + sb->partition) +
              " (Slurm GrpTRESMins" + (sb->limited_by != sb->account ? " of " + sb->limited_by : "") + ")";
    st.limit_hours = sb->limit_hours;
    st.remaining_hours = sb->remaining_hours;
    st.from_slurm = true;
    states.push_back(st);
  }

  Decision d = decide(*policy, job, *env.prediction, states);
  if (!d.reject)
    for (const PolicyBudget* b : policy_budgets) g_tally.charge(b->key(), b->period, now, d.cost_gpu_hours);
  tally_lock.unlock();
  slurm_info("job_submit/ttpred: %s: %s", who.c_str(), d.log.c_str());
  for (const auto& m : d.user_messages) append_msg(err_msg, m);
  if (d.reject) return d.budget_reject ? ESLURM_ACCOUNTING_POLICY : ESLURM_INVALID_TIME_LIMIT;
  if (d.set_time_limit) job_desc->time_limit = *d.set_time_limit;
  return SLURM_SUCCESS;
}

}  // namespace

extern "C" int init(void) {
  try {
    load_policy();
  } catch (...) {
    slurm_error("job_submit/ttpred: internal error while loading the policy; jobs pass unchanged");
  }
  return SLURM_SUCCESS;  // never fail: it would stop every submission
}

extern "C" int fini(void) {
  try {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_policy.reset();
    auto tally_lock = g_tally.lock();
    g_tally.clear();
  } catch (...) {
  }
  return SLURM_SUCCESS;
}

extern "C" int job_submit(job_desc_msg_t* job_desc, uint32_t submit_uid, char** err_msg) {
  try {
    return do_submit(job_desc, submit_uid, err_msg);
  } catch (const std::exception& e) {
    slurm_error("job_submit/ttpred: internal error: %s; job unchanged", e.what());
  } catch (...) {
    slurm_error("job_submit/ttpred: internal error; job unchanged");
  }
  return SLURM_SUCCESS;
}

#if SLURM_VERSION_NUMBER >= SLURM_VERSION_NUM(23, 2, 0)
extern "C" int job_modify(job_desc_msg_t*, void*, uint32_t, char**) { return SLURM_SUCCESS; }
#else
extern "C" int job_modify(job_desc_msg_t*, void*, uint32_t) { return SLURM_SUCCESS; }
#endif
