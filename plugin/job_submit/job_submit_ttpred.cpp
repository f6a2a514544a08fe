// job_submit/ttpred: reads the prediction the SPANK plugin put in
// job_desc->spank_job_env, validates it (untrusted) and applies the site policy
// (YAML, see docs/admin-guide.md): set the time limit when none was given, warn
// or reject when the user's limit is far off. Fails open everywhere: a missing or
// broken policy, bad values or an internal error leave the job unchanged.
//
// Budgets (docs/budgets.md): the cost (the time limit Slurm enforces x the GPUs
// the job requests x its array tasks) is checked against the policy's `budgets:`
// (an in-memory tally of the jobs let through: resets when slurmctld restarts)
// for the job's account as slurmctld's association manager resolves it (never a
// user-supplied marker), and against Slurm's GrpTRESMins budget the SPANK plugin
// read at sbatch (TTPRED_SLURM_BUDGET: untrusted, advisory). job_modify re-applies
// the policy when `scontrol update` changes the limit, GPUs, account or partition.
// Job mode (TTPRED_PREDICT_JOB=P from the SPANK plugin's mode=job): the job gets
// the dependency afterany:P, the rule's max_minutes as its fallback limit and a
// comment; P's report (`scontrol update comment=ttpred-result:JSON`, untrusted) is
// applied once by job_modify through the same validation and policy.
// The logic is in plugin/common/submit.cpp; this file only talks to Slurm.
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
#include <slurm/slurmdb.h>
}

#include "../common/budget.hpp"
#include "../common/policy.hpp"
#include "../common/prediction.hpp"
#include "../common/submit.hpp"

#define TTPRED_EXPORT __attribute__((visibility("default")))

// slurmctld's association manager (libslurmfull, src/common/assoc_mgr.h; the same
// declarations from 22.05 to 24.11). Weak: when absent, accounts are not resolved.
extern "C" {
typedef enum { TTPRED_NO_LOCK, TTPRED_READ_LOCK, TTPRED_WRITE_LOCK } ttpred_lock_level_t;
typedef struct {
  ttpred_lock_level_t assoc, file, qos, res, tres, user, wckey;
} ttpred_assoc_mgr_lock_t;
void assoc_mgr_lock(ttpred_assoc_mgr_lock_t* locks) __attribute__((weak));
void assoc_mgr_unlock(ttpred_assoc_mgr_lock_t* locks) __attribute__((weak));
int assoc_mgr_fill_in_assoc(void* db_conn, slurmdb_assoc_rec_t* assoc, int enforce,
                            slurmdb_assoc_rec_t** assoc_pptr, bool locked) __attribute__((weak));
extern void* assoc_mgr_assoc_list __attribute__((weak));
extern void* acct_db_conn __attribute__((weak));
extern uint16_t accounting_enforce __attribute__((weak));
// slurmctld: the batch environment of a job (state save file), for TTPRED_TICKET.
char** get_job_env(void* job_ptr, uint32_t* env_size) __attribute__((weak));
void* find_part_record(char* name) __attribute__((weak));  // slurmctld, part read lock held
// Its result is one buffer (env[0]) plus the pointer array, not NULL-terminated:
// freed with xfree(env[0]); xfree(env) (as accounting_storage/slurmdbd does).
void slurm_xfree(void** p) __attribute__((weak));
int slurm_env_array_overwrite(char*** array_ptr, const char* name, const char* value)
    __attribute__((weak));
}
#define TTPRED_ACCOUNTING_ENFORCE_ASSOCS 0x0001  // slurm_accounting_storage.h

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
BudgetTally g_tally;       // GPU-hours charged per policy budget (own mutex)
TicketStore g_tickets;     // what each accepted ttpred job was granted (own mutex)

time_t conf_stamp() { return &slurm_conf ? slurm_conf.last_update : 0; }

void load_policy() {
  const char* conf_path = &slurm_conf ? slurm_conf.slurm_conf : nullptr;
  const std::string path = policy_path(std::getenv(kPolicyEnvVar), conf_path);
  std::shared_ptr<const Policy> next;
  try {
    next = std::make_shared<const Policy>(load_policy_file(path));
    slurm_info("job_submit/ttpred: loaded policy %s (%zu rules)", sanitize(path, 256).c_str(),
               next->rules.size());
  } catch (const PolicyError& e) {
    slurm_error("job_submit/ttpred: policy error: %s; jobs pass unchanged until it is fixed "
                "(then scontrol reconfigure)", sanitize(e.what(), 512).c_str());
  } catch (const std::exception& e) {
    slurm_error("job_submit/ttpred: cannot load policy %s: %s; jobs pass unchanged",
                sanitize(path, 256).c_str(), sanitize(e.what(), 256).c_str());
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

std::string str(const char* s) { return s ? std::string(s, strnlen(s, 4096)) : ""; }

bool have_associations() {
  return assoc_mgr_lock && assoc_mgr_unlock && assoc_mgr_fill_in_assoc && &assoc_mgr_assoc_list &&
         assoc_mgr_assoc_list && &accounting_enforce &&
         (accounting_enforce & TTPRED_ACCOUNTING_ENFORCE_ASSOCS);
}

// The account slurmctld will give the job: with enforced associations, the
// association of (uid, account or the user's default account, partition) must
// exist (else slurmctld rejects the job: nothing is charged); without them
// (no slurmdbd), Slurm accepts any --account and none is resolved without one.
std::optional<std::string> resolve_account(uid_t uid, const char* account, const std::string& partition,
                                           std::string& note) {
  if (!have_associations()) {
    if (account && *account) {
      if (sanitize(account, 64) == account) return std::string(account);
      note = "account name too long or not printable";
      return std::nullopt;
    }
    note = "no --account and no enforced associations";
    return std::nullopt;
  }
  slurmdb_assoc_rec_t assoc;
  std::memset(&assoc, 0, sizeof assoc);
  assoc.uid = uid;
  assoc.acct = (account && *account) ? const_cast<char*>(account) : nullptr;
  assoc.partition = partition.empty() || partition.find(',') != std::string::npos
                        ? nullptr
                        : const_cast<char*>(partition.c_str());
  ttpred_assoc_mgr_lock_t locks{};
  locks.assoc = TTPRED_READ_LOCK;
  locks.user = TTPRED_READ_LOCK;
  std::optional<std::string> out;
  assoc_mgr_lock(&locks);
  slurmdb_assoc_rec_t* found = nullptr;
  const int rc = assoc_mgr_fill_in_assoc(&acct_db_conn ? acct_db_conn : nullptr, &assoc,
                                         TTPRED_ACCOUNTING_ENFORCE_ASSOCS, &found, true);
  if (rc == SLURM_SUCCESS && found && found->acct) out = std::string(found->acct, strnlen(found->acct, 256));
  assoc_mgr_unlock(&locks);  // assoc holds borrowed pointers only: nothing to free
  if (!out) note = "no association for this user and account: slurmctld rejects the job";
  return out;
}

std::optional<double> minutes_of(uint32_t v) {
  if (v == NO_VAL) return std::nullopt;
  if (v == INFINITE) return HUGE_VAL;
  return static_cast<double>(v);
}

void log_lines(const std::vector<std::string>& lines, bool error_first) {
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string l = sanitize(lines[i], 1024);
    if (error_first && i + 1 < lines.size()) slurm_error("job_submit/ttpred: %s", l.c_str());
    else slurm_info("job_submit/ttpred: %s", l.c_str());
  }
}

// TTPRED_TICKET in a job's environment is only ever the one job_submit set: a
// user-supplied one (copied from another job, or inherited by a job submitted
// from inside a ttpred job) is blanked, so that job_modify cannot be pointed at
// another job's ticket. (job_modify reads only the first exact TTPRED_TICKET among
// the first kMaxEnvScan entries, the one env_array_overwrite replaces.)
void scrub_ticket(job_desc_msg_t* job_desc) {
  if (!job_desc->environment || !slurm_env_array_overwrite) return;
  if (!env_lookup(job_desc->environment, job_desc->env_size, kEnvTicket, false)) return;
  slurm_env_array_overwrite(&job_desc->environment, kEnvTicket, "");
}

// job_desc as the policy's input (the account resolved with the association manager).
void fill_input(const job_desc_msg_t* job_desc, uint32_t submit_uid, const Policy* policy, SubmitInput& in) {
  const uid_t uid = job_desc->user_id != NO_VAL ? job_desc->user_id : submit_uid;
  in.name = job_desc->name;
  in.uid = uid;
  in.partition = str(job_desc->partition);
  if (&default_part_name && default_part_name) in.default_partition = str(default_part_name);
  const std::string first_part = !in.partition.empty() ? in.partition : in.default_partition;
  in.account = resolve_account(uid, job_desc->account, first_part, in.account_note);
  if (in.account && find_part_record && !in.partition.empty()) {
    // A partition that does not exist: slurmctld rejects the job, charge nothing.
    for (const auto& p : split_list(in.partition))
      if (!find_part_record(const_cast<char*>(p.c_str()))) {
        in.account.reset();
        in.account_note = "partition '" + sanitize(p, 64) + "' does not exist: slurmctld rejects the job";
        break;
      }
  }
  in.qos = str(job_desc->qos);
  bool need_user = false;
  if (policy)
    for (const auto& r : policy->rules) need_user = need_user || !r.match.user.empty();
  if (need_user) in.user = str(uid_to_string_cached(uid));  // cached NSS lookup
  in.time_limit_minutes = minutes_of(job_desc->time_limit);
  in.time_min_minutes = minutes_of(job_desc->time_min);
  in.tres.per_job = str(job_desc->tres_per_job);
  in.tres.per_node = str(job_desc->tres_per_node);
  in.tres.per_task = str(job_desc->tres_per_task);
  in.tres.per_socket = str(job_desc->tres_per_socket);
  in.tres.tasks = job_desc->num_tasks != NO_VAL ? job_desc->num_tasks : 0;
  in.tres.sockets_per_node = job_desc->sockets_per_node != NO_VAL16 ? job_desc->sockets_per_node : 0;
  in.min_nodes = job_desc->min_nodes != NO_VAL ? job_desc->min_nodes : 0;
  in.max_nodes = job_desc->max_nodes != NO_VAL ? job_desc->max_nodes : 0;
  in.exclusive = job_desc->shared == JOB_SHARED_NONE;
  in.array_inx = str(job_desc->array_inx);
  in.now = time(nullptr);

}

// The prediction job of a job-mode submission (TTPRED_PREDICT_JOB, untrusted): a
// job id in decimal, or 0 when absent or not one.
uint32_t predict_job_of(const job_desc_msg_t* job_desc) {
  const char* v = env_lookup(job_desc->spank_job_env, job_desc->spank_job_env_size, kEnvPredictJob);
  if (!v) return 0;
  const std::string s(v, strnlen(v, 16));
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos) return 0;
  const unsigned long long id = std::stoull(s);
  return id > 0 && id < 0xfffffff0ULL ? static_cast<uint32_t>(id) : 0;
}

void add_ticket(job_desc_msg_t* job_desc, JobTicket t) {
  if (!job_desc->environment || !slurm_env_array_overwrite) return;
  // Batch jobs: the ticket's key in the job's environment, for job_modify.
  const std::string key = g_tickets.add(std::move(t));
  slurm_env_array_overwrite(&job_desc->environment, kEnvTicket, key.c_str());
  uint32_t n = 0;
  while (job_desc->environment[n]) ++n;
  job_desc->env_size = n;
}

// Job mode: the job depends on its prediction job (afterany: whatever becomes of
// it, the job is released) and shows its state in its comment.
int submit_pending(job_desc_msg_t* job_desc, uint32_t submit_uid, uint32_t predict_job, char** err_msg) {
  auto policy = current_policy();
  SubmitInput in;
  in.env = job_desc->spank_job_env;
  in.env_count = job_desc->spank_job_env_size;
  fill_input(job_desc, submit_uid, policy.get(), in);
  const std::string dep = str(job_desc->dependency);
  if (dep.find('?') != std::string::npos) {
    // "a?b" (any of) cannot be combined with "and after the prediction".
    append_msg(err_msg, "ttpred: warning: --dependency with '?' cannot wait for the prediction; "
                        "the job is submitted without it");
    slurm_info("job_submit/ttpred: uid %u: dependency with '?': prediction job %u not waited for",
               in.uid, predict_job);
    return SLURM_SUCCESS;
  }
  SubmitOutput out = evaluate_submit_pending(policy.get(), in, predict_job, g_tally);
  log_lines(out.log_lines, false);
  for (const auto& m : out.user_messages) append_msg(err_msg, sanitize(m, 1024));
  if (out.rc == SubmitOutput::Rc::reject_budget) return ESLURM_ACCOUNTING_POLICY;
  if (!out.wait_for_job || !out.ticket || !job_desc->environment || !slurm_env_array_overwrite)
    return SLURM_SUCCESS;
  if (out.set_time_limit) job_desc->time_limit = *out.set_time_limit;
  const std::string d = "afterany:" + std::to_string(*out.wait_for_job);
  slurm_xstrcat(&job_desc->dependency, (dep.empty() ? d : "," + d).c_str());
  if (!job_desc->comment || !*job_desc->comment) slurm_xstrcat(&job_desc->comment, out.comment.c_str());
  add_ticket(job_desc, std::move(*out.ticket));
  return SLURM_SUCCESS;
}

int do_submit(job_desc_msg_t* job_desc, uint32_t submit_uid, char** err_msg) {
  if (!job_desc) return SLURM_SUCCESS;
  scrub_ticket(job_desc);
  if (!job_desc->spank_job_env || job_desc->spank_job_env_size == 0) return SLURM_SUCCESS;
  if (const uint32_t pj = predict_job_of(job_desc)) return submit_pending(job_desc, submit_uid, pj, err_msg);
  auto policy = current_policy();
  SubmitInput in;
  in.env = job_desc->spank_job_env;
  in.env_count = job_desc->spank_job_env_size;
  // Cheap check first: not a ttpred job, nothing more to do.
  {
    EnvParse probe = parse_env(in.env, in.env_count, policy ? policy->limits : EnvLimits{});
    if (!probe.present) return SLURM_SUCCESS;
  }
  fill_input(job_desc, submit_uid, policy.get(), in);
  SubmitOutput out = evaluate_submit(policy.get(), in, g_tally);
  log_lines(out.log_lines, true);
  for (const auto& m : out.user_messages) append_msg(err_msg, sanitize(m, 1024));
  if (out.rc == SubmitOutput::Rc::reject_budget) return ESLURM_ACCOUNTING_POLICY;
  if (out.rc == SubmitOutput::Rc::reject_time) return ESLURM_INVALID_TIME_LIMIT;
  if (out.set_time_limit) job_desc->time_limit = *out.set_time_limit;
  if (!out.comment.empty() && (!job_desc->comment || !*job_desc->comment))
    slurm_xstrcat(&job_desc->comment, out.comment.c_str());
  if (out.ticket) add_ticket(job_desc, std::move(*out.ticket));
  return SLURM_SUCCESS;
}

// job_modify: re-applies the policy to a ttpred batch job when `scontrol update`
// changes its TimeLimit, TRES/GRES (GPUs), node count, account, partition or QOS.
// The TTPRED_TICKET key in a job's environment ("" if none).
std::string ticket_key_of(void* job_ptr) {
  uint32_t n = 0;
  char** env = get_job_env(job_ptr, &n);  // one small state file read, only on updates
  std::string key;
  if (env) {
    if (const char* v = env_lookup(env, n, kEnvTicket, false)) key = std::string(v, strnlen(v, 64));
    if (n > 0) slurm_xfree(reinterpret_cast<void**>(&env[0]));
    slurm_xfree(reinterpret_cast<void**>(&env));
  }
  return key;
}

bool is_report(const char* comment) {
  return comment && (std::strncmp(comment, kReportResult, std::strlen(kReportResult)) == 0 ||
                     std::strncmp(comment, kReportFailed, std::strlen(kReportFailed)) == 0);
}

// Job mode: the prediction job's report (`scontrol update jobid=JOB
// comment=ttpred-result:JSON`), untrusted. Accepted once per job, alone (no other
// field in the same update), from the job's owner or root; it becomes the policy's
// time limit and a readable comment.
int do_report(job_desc_msg_t* job_desc, void* job_ptr, uint32_t submit_uid, char** err_msg,
              const std::string& id) {
  const bool others = job_desc->time_limit != NO_VAL || job_desc->account || job_desc->partition ||
                      job_desc->tres_per_job || job_desc->tres_per_node || job_desc->tres_per_task ||
                      job_desc->tres_per_socket || job_desc->min_nodes != NO_VAL ||
                      job_desc->max_nodes != NO_VAL || job_desc->qos || job_desc->dependency ||
                      job_desc->priority != NO_VAL;
  auto refuse = [&](const char* why) {
    slurm_info("job_submit/ttpred: job %s: report by uid %u refused: %s", id.c_str(), submit_uid, why);
    append_msg(err_msg, std::string("ttpred: report refused: ") + why);
    return ESLURM_NOT_SUPPORTED;
  };
  if (others) return refuse("a prediction report must be the only change of its update");
  if (!get_job_env || !slurm_xfree) return refuse("not supported by this slurmctld");
  auto policy = current_policy();
  if (!policy) return refuse("no usable policy");
  const std::string key = ticket_key_of(job_ptr);
  auto ticket = key.empty() ? std::nullopt : g_tickets.get(key);
  if (!ticket) return refuse("the job does not await a prediction");
  if (submit_uid != 0 && submit_uid != ticket->uid) return refuse("not the job's owner");
  const std::string report(job_desc->comment, strnlen(job_desc->comment, kMaxReportBytes + 1));
  ReportOutput out = evaluate_report(*policy, *ticket, report, time(nullptr), g_tally);
  std::vector<std::string> lines;
  for (const auto& l : out.log_lines) lines.push_back("job " + id + ": " + l);
  log_lines(lines, false);
  if (out.rc != ReportOutput::Rc::ok) return refuse("the job does not await a prediction");
  g_tickets.put(key, std::move(out.ticket));
  if (out.set_time_limit) job_desc->time_limit = *out.set_time_limit;
  slurm_xfree(reinterpret_cast<void**>(&job_desc->comment));
  job_desc->comment = slurm_xstrdup(out.comment.c_str());
  return SLURM_SUCCESS;
}

int do_modify(job_desc_msg_t* job_desc, void* job_ptr, uint32_t submit_uid, char** err_msg) {
  if (!job_desc || !job_ptr) return SLURM_SUCCESS;
  if (is_report(job_desc->comment)) {
    const std::string id = job_desc->job_id != NO_VAL ? std::to_string(job_desc->job_id)
                                                      : sanitize(job_desc->job_id_str, 32);
    return do_report(job_desc, job_ptr, submit_uid, err_msg, id);
  }
  const bool changes = job_desc->time_limit != NO_VAL || job_desc->account || job_desc->partition ||
                       job_desc->tres_per_job || job_desc->tres_per_node || job_desc->tres_per_task ||
                       job_desc->tres_per_socket || job_desc->min_nodes != NO_VAL ||
                       job_desc->max_nodes != NO_VAL || job_desc->qos;
  if (!changes || !get_job_env || !slurm_xfree) return SLURM_SUCCESS;
  auto policy = current_policy();
  if (!policy) return SLURM_SUCCESS;
  const std::string key = ticket_key_of(job_ptr);
  if (key.empty()) return SLURM_SUCCESS;  // not a ttpred batch job
  auto ticket = g_tickets.get(key);
  if (!ticket) {
    slurm_info("job_submit/ttpred: update of job %s by uid %u: ticket unknown (slurmctld restarted?): "
               "not re-checked",
               job_desc->job_id != NO_VAL ? std::to_string(job_desc->job_id).c_str()
                                          : sanitize(job_desc->job_id_str, 32).c_str(),
               submit_uid);
    return SLURM_SUCCESS;
  }
  ModifyInput in;
  in.now = time(nullptr);
  if (job_desc->time_limit != NO_VAL) in.time_limit_minutes = minutes_of(job_desc->time_limit);
  if (job_desc->partition) in.partition = str(job_desc->partition);
  if (job_desc->qos) in.qos = str(job_desc->qos);
  if (job_desc->account) {
    std::string note;
    const std::string part = in.partition ? *in.partition
                                          : (ticket->partitions.size() == 1 ? ticket->partitions[0] : "");
    in.account = resolve_account(ticket->uid, job_desc->account, part, note);
  }
  if (job_desc->tres_per_job || job_desc->tres_per_node || job_desc->tres_per_task ||
      job_desc->tres_per_socket) {
    TresRequest t = ticket->tres;
    if (job_desc->tres_per_job) t.per_job = str(job_desc->tres_per_job);
    if (job_desc->tres_per_node) t.per_node = str(job_desc->tres_per_node);
    if (job_desc->tres_per_task) t.per_task = str(job_desc->tres_per_task);
    if (job_desc->tres_per_socket) t.per_socket = str(job_desc->tres_per_socket);
    in.tres = t;
  }
  if (job_desc->min_nodes != NO_VAL) in.min_nodes = job_desc->min_nodes;
  if (job_desc->max_nodes != NO_VAL) in.max_nodes = job_desc->max_nodes;
  ModifyOutput out = evaluate_modify(*policy, *ticket, in, g_tally);
  const std::string id = job_desc->job_id != NO_VAL ? std::to_string(job_desc->job_id)
                                                    : sanitize(job_desc->job_id_str, 32);
  std::vector<std::string> lines;
  for (const auto& l : out.log_lines) lines.push_back("job " + id + ": " + l);
  log_lines(lines, false);
  for (const auto& m : out.user_messages) append_msg(err_msg, sanitize(m, 1024));
  if (out.rc == ModifyOutput::Rc::reject_budget) return ESLURM_ACCOUNTING_POLICY;
  if (out.rc == ModifyOutput::Rc::reject_time) return ESLURM_INVALID_TIME_LIMIT;
  g_tickets.put(key, std::move(out.ticket));
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
    g_tickets.clear();
  } catch (...) {
  }
  return SLURM_SUCCESS;
}

extern "C" int job_submit(job_desc_msg_t* job_desc, uint32_t submit_uid, char** err_msg) {
  try {
    return do_submit(job_desc, submit_uid, err_msg);
  } catch (const std::exception& e) {
    slurm_error("job_submit/ttpred: internal error: %s; job unchanged", sanitize(e.what(), 256).c_str());
  } catch (...) {
    slurm_error("job_submit/ttpred: internal error; job unchanged");
  }
  return SLURM_SUCCESS;
}

static int modify_entry(job_desc_msg_t* job_desc, void* job_ptr, uint32_t submit_uid, char** err_msg) {
  try {
    return do_modify(job_desc, job_ptr, submit_uid, err_msg);
  } catch (const std::exception& e) {
    slurm_error("job_submit/ttpred: internal error in job_modify: %s; update not re-checked",
                sanitize(e.what(), 256).c_str());
  } catch (...) {
    slurm_error("job_submit/ttpred: internal error in job_modify; update not re-checked");
  }
  return SLURM_SUCCESS;
}

#if SLURM_VERSION_NUMBER >= SLURM_VERSION_NUM(23, 2, 0)
extern "C" int job_modify(job_desc_msg_t* job_desc, void* job_ptr, uint32_t submit_uid, char** err_msg) {
  return modify_entry(job_desc, job_ptr, submit_uid, err_msg);
}
#else
extern "C" int job_modify(job_desc_msg_t* job_desc, void* job_ptr, uint32_t submit_uid) {
  // 22.05: no err_msg; the reason is in slurmctld's log and the error code.
  return modify_entry(job_desc, job_ptr, submit_uid, nullptr);
}
#endif
