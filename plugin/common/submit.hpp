// ttpred Slurm integration: the pure core of job_submit() and job_modify() of
// job_submit/ttpred (no Slurm headers: unit-tested in tests/slurm/test_policy.cpp,
// fuzzed in tests/fuzz/). The plugin only translates job_desc into SubmitInput /
// ModifyInput, resolves the account with slurmctld's association manager, and
// applies the output.
#pragma once

#include <cstdint>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "budget.hpp"
#include "policy.hpp"
#include "prediction.hpp"

namespace ttpred::slurm {

// Environment variable job_submit/ttpred adds to a batch job's environment: the
// key of its JobTicket, so that job_modify finds what was granted.
inline constexpr const char* kEnvTicket = "TTPRED_TICKET";

// Job mode (plugstack.conf mode=job): the SPANK plugin submits a prediction job P
// and passes its id as TTPRED_PREDICT_JOB (untrusted); job_submit makes the job
// depend on P (afterany:P), gives it the rule's max_minutes until P reports, and
// keeps an awaiting ticket. P reports with `scontrol update jobid=JOB
// comment=ttpred-result:JSON` (or ttpred-failed:REASON); job_modify turns that
// into the policy's limit and a readable comment (evaluate_report).
inline constexpr const char* kEnvPredictJob = "TTPRED_PREDICT_JOB";
inline constexpr const char* kReportResult = "ttpred-result:";
inline constexpr const char* kReportFailed = "ttpred-failed:";
inline constexpr std::size_t kMaxReportBytes = 65536;

struct SubmitInput {
  const char* const* env = nullptr;  // job_desc->spank_job_env (untrusted)
  std::size_t env_count = 0;
  const char* name = nullptr;        // job name (untrusted, any bytes)
  std::uint32_t uid = 0;
  std::string partition;             // job_desc->partition, "" if none
  std::string default_partition;
  // The job's account as slurmctld resolves it (job_desc->account, else the
  // user's default account from the association manager); nullopt when it could
  // not be resolved safely: then no policy budget is checked or charged.
  std::optional<std::string> account;
  std::string account_note;          // why unresolved, for the log
  std::string qos, user;
  std::optional<double> time_limit_minutes;  // +inf: UNLIMITED
  std::optional<double> time_min_minutes;
  TresRequest tres;                  // tres.nodes: ignored, see min/max_nodes
  std::uint32_t min_nodes = 0, max_nodes = 0;  // 0 = not given
  bool exclusive = false;            // --exclusive (whole nodes)
  std::string array_inx;             // job_desc->array_inx, "" if not an array
  std::time_t now = 0;
};

// What job_submit granted a job, kept for job_modify.
struct JobTicket {
  std::uint32_t uid = 0;
  std::optional<std::string> account;
  std::vector<std::string> partitions;
  std::string qos, user;
  Prediction prediction;     // as parsed (before step bounds)
  TresRequest tres;
  std::uint32_t min_nodes = 0, max_nodes = 0;
  bool exclusive = false;
  double array_tasks = 1;
  double limit_minutes = 0;  // the limit the job got
  double cost_gpu_hours = 0; // what was charged
  std::vector<std::pair<std::string, Period>> charged;  // budget keys charged
  std::time_t charged_at = 0;
  // Job mode: the prediction job's report is awaited (one report only).
  bool awaiting = false;
  std::uint32_t predict_job = 0;
  std::optional<double> user_limit_minutes;  // the job's own --time (nullopt: none)
  std::optional<double> time_min_minutes;
};

struct SubmitOutput {
  bool ttpred = false;                 // the job carries TTPRED_* values
  bool decided = false;                // a prediction and a policy rule were applied
  enum class Rc { ok, reject_time, reject_budget } rc = Rc::ok;
  std::optional<std::uint32_t> set_time_limit;
  std::vector<std::string> user_messages;  // sanitized, bounded
  std::vector<std::string> log_lines;      // sanitized, bounded (at most kMaxProblems + 2)
  std::optional<JobTicket> ticket;         // set when the job is accepted with a decision
  // Job mode: the dependency to add (afterany:P) and the job's comment.
  std::optional<std::uint32_t> wait_for_job;
  std::string comment;
};

// The budget states (policy budgets from the tally, the Slurm budget from
// TTPRED_SLURM_BUDGET) that apply to account/partitions; `refund` lists budget
// keys whose tally already contains `refund_hours` of this job (job_modify).
std::vector<BudgetState> budget_states(const Policy& policy, const std::optional<std::string>& account,
                                       const std::vector<std::string>& partitions,
                                       const std::vector<SlurmBudget>& slurm_budgets,
                                       const BudgetTally& tally, std::time_t now,
                                       const std::vector<std::pair<std::string, Period>>& refund = {},
                                       double refund_hours = 0);

// job_submit()'s decision. Checks and charges `tally` atomically (takes its lock).
SubmitOutput evaluate_submit(const Policy* policy, const SubmitInput& in, BudgetTally& tally);

// A change requested with `scontrol update` (job_modify): each field set = changed.
struct ModifyInput {
  std::optional<double> time_limit_minutes;
  std::optional<std::optional<std::string>> account;  // resolved account of the change
  std::optional<std::string> partition;
  std::optional<TresRequest> tres;
  std::optional<std::uint32_t> min_nodes, max_nodes;
  std::optional<std::string> qos;
  std::time_t now = 0;
  std::vector<SlurmBudget> slurm_budgets;  // from the job (not re-read)
};

struct ModifyOutput {
  bool rechecked = false;
  enum class Rc { ok, reject_time, reject_budget } rc = Rc::ok;
  std::vector<std::string> user_messages;
  std::vector<std::string> log_lines;
  JobTicket ticket;  // updated (when accepted)
};

// Re-applies the policy to a ttpred job after a change: the new limit, GPUs,
// account or partition give a new cost, checked against the budgets (the job's
// old charge refunded first) and the reject rules. Accepted: the tally is moved
// from the old charge to the new one. Takes tally's lock.
ModifyOutput evaluate_modify(const Policy& policy, const JobTicket& ticket, const ModifyInput& in,
                             BudgetTally& tally);

// Job mode at submission: no prediction yet (TTPRED_PREDICT_JOB=predict_job).
// The matching rule gives the job its max_minutes (the fallback) when it has no
// limit and set_time_limit is on; the budgets are charged with that (never
// rejected here: the real cost comes with the report); the ticket is awaiting.
SubmitOutput evaluate_submit_pending(const Policy* policy, const SubmitInput& in,
                                     std::uint32_t predict_job, BudgetTally& tally);

// A report of the prediction job (the comment of an `scontrol update`, untrusted:
// it comes from a job that runs as the user). `report` starts with kReportResult
// (the estimator's JSON) or kReportFailed (a reason).
struct ReportOutput {
  enum class Rc { ok, not_awaited, bad } rc = Rc::ok;
  std::optional<std::uint32_t> set_time_limit;  // the policy's limit (job had none)
  std::string comment;                          // the job's new comment
  std::vector<std::string> log_lines;
  JobTicket ticket;  // updated (awaiting cleared)
};
ReportOutput evaluate_report(const Policy& policy, const JobTicket& ticket, const std::string& report,
                             std::time_t now, BudgetTally& tally);

// Tickets of the accepted ttpred jobs, by key (random, in the job's environment as
// TTPRED_TICKET). Bounded: the oldest are dropped beyond max_size. Thread-safe.
class TicketStore {
 public:
  explicit TicketStore(std::size_t max_size = 65536) : max_(max_size) {}
  std::string add(JobTicket t);  // returns the new key
  std::optional<JobTicket> get(const std::string& key) const;
  void put(const std::string& key, JobTicket t);  // replace an existing one
  void clear();
  std::size_t size() const;

 private:
  mutable std::mutex m_;
  std::size_t max_;
  std::uint64_t counter_ = 0;
  std::uint64_t seed_ = 0;
  std::map<std::string, JobTicket> map_;
  std::deque<std::string> order_;
};

// Value of NAME (or SPANK_NAME when spank_prefix) in env, bounded scan
// (kMaxEnvScan entries); nullptr if absent.
const char* env_lookup(const char* const* env, std::size_t count, const char* name,
                       bool spank_prefix = true);

}  // namespace ttpred::slurm
