// ttpred Slurm integration, issue 7 part 3: GPU-hour budgets. Pure C++ (no Slurm
// headers), unit-tested in tests/slurm/test_policy.cpp. Reference: docs/budgets.md.
//
//  - gpus_from_tres(): GPUs a job asks for, from job_desc's tres_per_* strings.
//  - Slurm accounting budgets (GrpTRESMins=gres/gpu=N minus the association's
//    usage): computed on the submit host by the SPANK plugin from
//    slurm_load_assoc_mgr_info() (compute_slurm_budgets), passed to the
//    controller as TTPRED_SLURM_BUDGET (format_slurm_budgets / parse_slurm_budgets).
//  - Policy budgets (budgets: in ttpred.yaml): an in-memory tally of the predicted
//    GPU-hours of the jobs job_submit/ttpred let through (BudgetTally).
#pragma once

#include <cstdint>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ttpred::slurm {

inline constexpr const char* kEnvSlurmBudget = "TTPRED_SLURM_BUDGET";

// GPUs requested by a job, from job_desc->tres_per_{job,node,task,socket}
// ("gres:gpu:2", "gres/gpu:a100:2", "gres/gpu=2", several separated by ',' or ';').
// nodes/tasks/sockets_per_node: 0 = not given. Returns 0 when no GPU is asked for.
struct TresRequest {
  std::string per_job, per_node, per_task, per_socket;
  std::uint32_t nodes = 0, tasks = 0, sockets_per_node = 0;
};
double gpus_in_tres(const std::string& tres);  // sum of the gpu entries of one string
double gpus_from_tres(const TresRequest& r);
// Whether any of the strings has a gpu entry (so that "gpu:0" is an explicit 0).
bool tres_mentions_gpu(const TresRequest& r);
// Type of the first typed gpu entry ("gres/gpu:a100:2" -> "a100"), "" if none.
std::string gpu_type_in_tres(const TresRequest& r);
// Number of tasks of a job array from job_desc->array_inx ("0-99%5", "1,3,5-9:2");
// nullopt when it cannot be parsed (more than 4096 characters, more than 1e7 tasks).
std::optional<double> array_task_count(const std::string& inx);

// One association chain's GPU budget as the SPANK plugin sees it in slurmctld's
// assoc_mgr (public API slurm_load_assoc_mgr_info).
struct AssocInfo {
  std::uint32_t id = 0, parent_id = 0;
  std::string account, user, partition;  // user empty: the account's own association
  std::optional<double> gpu_limit_minutes;  // GrpTRESMins gres/gpu; nullopt: none
  double gpu_usage_seconds = 0;             // usage_tres_raw[gres/gpu] (decayed)
};

struct SlurmBudget {
  std::string account, partition;  // partition empty: any
  bool is_default = false;         // the user's default account
  double remaining_hours = 0;      // may be 0 (never negative)
  double limit_hours = 0;          // the limit of the tightest level
  std::string limited_by;          // the account whose GrpTRESMins binds
};

// For every association of `user`: walks its parents (parent_id) and keeps the
// level with the least GPU-minutes left. Associations whose chain has no
// gres/gpu limit are omitted (except that the default account is still marked
// with is_default and a negative limit_hours, meaning "no limit").
std::vector<SlurmBudget> compute_slurm_budgets(const std::vector<AssocInfo>& assocs,
                                               const std::string& user,
                                               const std::string& default_account);

// "*physics:1.5:10:physics,chem@gpu:3:4:chem/alice": [*]ACCOUNT[@PARTITION]:
// REMAINING:LIMIT:LIMITED_BY ('*' = default account; LIMIT -1 = no limit;
// LIMITED_BY = the association whose GrpTRESMins binds, "account[/user]").
// Hours with 6 significant digits.
std::string format_slurm_budgets(const std::vector<SlurmBudget>& b);
// Untrusted input (any libslurm client can set it): at most 4096 characters and
// 64 entries; names of [A-Za-z0-9_.+-], at most 64 characters; finite numbers
// >= -1 and <= 1e12. Anything else: nullopt (and `problem` says why).
std::optional<std::vector<SlurmBudget>> parse_slurm_budgets(const std::string& s,
                                                            std::string* problem = nullptr);
// The entry for the job: exact account (or the default-marked one when account is
// empty) and partition (an entry with a partition must be one of the job's).
const SlurmBudget* find_slurm_budget(const std::vector<SlurmBudget>& b, const std::string& account,
                                     const std::vector<std::string>& partitions);

// Budget periods of the policy, in UTC: the tally restarts at each period start.
enum class Period { day, week, month, year, none };
std::optional<Period> period_from_string(const std::string& s);
const char* period_name(Period p);     // "day", ...
const char* period_phrase(Period p);   // "today", "this week", ..., "" for none
std::time_t period_start(Period p, std::time_t now);  // none: 0

// In-memory tally of predicted GPU-hours per budget key and period. Thread-safe;
// lock() lets job_submit check and charge atomically. Resets on slurmctld restart.
class BudgetTally {
 public:
  std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(m_); }
  // Caller holds lock().
  double used(const std::string& key, Period p, std::time_t now) const;
  void charge(const std::string& key, Period p, std::time_t now, double gpu_hours);
  // Gives back up to gpu_hours of the current period (never below 0).
  void refund(const std::string& key, Period p, std::time_t now, double gpu_hours);
  void clear();

 private:
  mutable std::mutex m_;
  struct Slot {
    std::time_t start = 0;
    double hours = 0;
  };
  std::map<std::string, Slot> slots_;  // key -> current period
};

std::string fmt_hours(double h);  // "3.33", "120", "0.05", for messages

}  // namespace ttpred::slurm
