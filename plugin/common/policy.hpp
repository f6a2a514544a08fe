// ttpred Slurm integration: the admin policy (YAML) and the decision it takes for
// one job. Pure C++ (yaml-cpp, no Slurm headers), unit-tested in
// tests/slurm/test_policy.cpp. Reference: docs/admin-guide.md.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "budget.hpp"
#include "prediction.hpp"

namespace ttpred::slurm {

inline constexpr const char* kDefaultPolicyPath = "/etc/slurm/ttpred.yaml";
inline constexpr const char* kPolicyEnvVar = "TTPRED_POLICY";

// One line: "FILE:LINE: KEY: message".
struct PolicyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Basis { horizon, converge };
enum class BandUse { upper, none };

struct TimeLimitRule {
  Basis basis = Basis::horizon;
  BandUse use_band = BandUse::upper;
  double safety_factor = 1.2;
  double margin_minutes = 5;
  std::uint32_t min_minutes = 1;
  std::uint32_t max_minutes = 7 * 24 * 60;
};

struct WarnRule {
  bool under = true;       // limit below the predicted time
  double over_factor = 4;  // limit above factor x predicted (upper band); 0 = off
};

struct RejectRule {
  bool under = false;
  double over_factor = 0;    // 0 = off
  double above_minutes = 0;  // reject when the prediction exceeds this; 0 = off
};

// What a rule does with GPU-hour budgets (policy budgets and, with `slurm: true`,
// Slurm's GrpTRESMins as reported by the SPANK plugin).
struct BudgetAction {
  bool warn = true;     // warn when the predicted cost exceeds what is left
  bool reject = false;  // reject such a job (ESLURM_ACCOUNTING_POLICY)
  bool slurm = true;    // also check Slurm's accounting budget (TTPRED_SLURM_BUDGET)
  bool show = true;     // tell the user the cost and what is left, when a budget applies
};

// One entry of `budgets:`: GPU-hours per period for an account (exact name),
// optionally only for one partition.
struct PolicyBudget {
  std::string account, partition;  // partition empty: all partitions
  double gpu_hours = 0;
  Period period = Period::month;
  int line = 0;
  std::string key() const;  // tally key: "account@partition/period"
  std::string label() const;  // "physics" or "physics on partition gpu"
};

struct Match {  // each list: glob patterns (fnmatch); empty = any
  std::vector<std::string> partition, account, user, qos;
};

struct Rule {
  std::string name;
  int line = 0;
  Match match;
  TimeLimitRule time_limit;
  bool set_time_limit = true;
  WarnRule warn;
  RejectRule reject;
  BudgetAction budget;
};

// One entry of `step_seconds:` (admin bound on the seconds per training step the
// prediction may assume, per partition and GPU type; first match wins). The
// prediction's step time (TTPRED_STEP_SECONDS, else horizon seconds / horizon
// steps) is clamped to [min, max] and every predicted duration scaled with it.
// With `seconds`, the entry is also the site's step-time table: a step time the
// estimator measured where it ran (sync mode: the submit host, not the job's GPU)
// is replaced by it; the user's hardware.step_seconds and a step time timed on
// the node (job mode) are only bounded.
struct StepBound {
  std::vector<std::string> partition, gpu_type, model;  // globs; empty = any (model: the model file's name)
  double min = 0, max = 0;                               // seconds; 0 = no bound
  double seconds = 0;                                    // > 0: the step time on this GPU type (for this model)
  int line = 0;
};

struct Policy {
  std::string path;
  EnvLimits limits;
  double exclusive_node_gpus = 0;  // limits.exclusive_node_gpus: GPUs counted per node of an --exclusive job
  std::vector<StepBound> step_bounds;
  std::vector<PolicyBudget> budgets;
  std::vector<Rule> rules;  // first match wins
};

Policy parse_policy(const std::string& yaml_text, const std::string& path);
Policy load_policy_file(const std::string& path);  // throws PolicyError

// Which policy file to load: $TTPRED_POLICY, else ttpred.yaml next to slurm.conf,
// else /etc/slurm/ttpred.yaml.
std::string policy_path(const char* env_value, const char* slurm_conf_path);

struct JobView {
  std::vector<std::string> partitions;  // requested (or the default partition)
  std::string account, user, qos;
  std::optional<double> time_limit_minutes;  // nullopt: none given; +inf: UNLIMITED
  std::optional<double> time_min_minutes;    // --time-min; nullopt: none
  double gpus = 0;                  // GPUs the job holds (its request); the cost's factor
  std::string gpus_source;          // "job request", "--exclusive nodes", for messages
  std::string gpu_type;             // first typed GPU request ("a100"), "" if none
  double array_tasks = 1;           // tasks of a job array (1: not an array)
};

// What a step bound did to a prediction.
struct StepBoundResult {
  const StepBound* bound = nullptr;  // the matching bound, nullptr: none
  double factor = 1;                 // durations were multiplied by this
  std::string note;                  // for the log and the user ("" when unchanged)
  // Where the step time used comes from, for the user and the job's comment:
  // "step 0.031 s from the policy table (line 12)", "... measured on the submit host", ...
  // ("" when the prediction has no step time).
  std::string source;
};
// Applies the first matching `step_seconds:` entry to p (in place): its
// `seconds` replaces a step time measured off the node, then [min, max] bound it.
StepBoundResult apply_step_bounds(const Policy& policy, const std::vector<std::string>& partitions,
                                  const std::string& gpu_type, Prediction& p);

// State of one budget that applies to the job, as input to decide().
struct BudgetState {
  std::string what;       // "account physics (Slurm GrpTRESMins)", "policy budget physics ..."
  double remaining_hours = 0;
  double limit_hours = 0;
  bool from_slurm = false;
};

// Policy budgets that apply to the job (account, or the default account the SPANK
// plugin reported, and partition).
std::vector<const PolicyBudget*> matching_budgets(const Policy& policy, const std::string& account,
                                                  const std::vector<std::string>& partitions);

std::vector<std::string> split_list(const std::string& s, char sep = ',');

// Cost of a job in GPU-hours: limit (minutes, may be +inf) x gpus x tasks / 60.
double job_cost_gpu_hours(double limit_minutes, double gpus, double tasks);

const Rule* match_rule(const Policy& policy, const JobView& job);

// Predicted seconds a rule is about: the basis' point estimate, and the value the
// time limit is computed from (upper band when use_band: upper).
double basis_point_seconds(const TimeLimitRule& r, const Prediction& p);
double basis_limit_seconds(const TimeLimitRule& r, const Prediction& p);
// ceil((basis_limit_seconds * safety_factor + margin) / 60), clamped.
// reject.above_minutes is compared with basis_limit_seconds too (the value the
// limit is computed from, so a forged narrow point with a wide band gains nothing).
std::uint32_t compute_time_limit_minutes(const TimeLimitRule& r, const Prediction& p);

struct Decision {
  const Rule* rule = nullptr;  // nullptr: no rule matched, job untouched
  std::optional<std::uint32_t> set_time_limit;
  bool reject = false;
  bool budget_reject = false;   // rejected (only) because of a budget
  // The time limit Slurm will enforce (the job's own, the one set here, or the
  // rule's max_minutes when neither; +inf for UNLIMITED) and the cost charged and
  // checked: limit x GPUs the job holds x array tasks, in GPU-hours.
  double limit_minutes = 0;
  double cost_gpu_hours = 0;
  std::vector<std::string> user_messages;  // each starts with "ttpred: "
  std::string log;                         // one line for slurmctld's log
};

// budgets: the states of the budgets that apply (from matching_budgets and the
// tally, and the Slurm budget when the rule's budget.slurm is true).
Decision decide(const Policy& policy, const JobView& job, const Prediction& p,
                const std::vector<BudgetState>& budgets = {});

}  // namespace ttpred::slurm
