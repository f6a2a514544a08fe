// ttpred Slurm integration: plugstack.conf arguments of the SPANK plugin and
// running ttpred-estimate with a timeout. Pure C++/POSIX, no Slurm headers.
#pragma once

#include <string>
#include <vector>

namespace ttpred::slurm {

#ifndef TTPRED_DEFAULT_ESTIMATOR
#define TTPRED_DEFAULT_ESTIMATOR "/usr/local/bin/ttpred-estimate"
#endif

#ifndef TTPRED_DEFAULT_PREDICT_JOB
#define TTPRED_DEFAULT_PREDICT_JOB "/usr/local/bin/ttpred-predict-job"
#endif

struct SpankArgs {
  std::string estimator = TTPRED_DEFAULT_ESTIMATOR;
  double timeout_seconds = 60;
  std::string device = "auto";  // auto | cpu | cuda
  bool slurm_budget = true;     // read GrpTRESMins/usage from slurmctld's assoc_mgr
  // mode=job: the prediction runs as a Slurm job of the user (ttpred-predict-job)
  // and the job waits for it; mode=sync (default): ttpred-estimate runs in sbatch.
  bool job_mode = false;
  std::string partition, account, qos, gres;  // of the prediction job ("" = Slurm's default)
  // follow_job=yes: the prediction job takes the user job's partition and GPU type
  // (one GPU of it) where the job names them (sbatch_request.hpp); partition= and
  // gres= stay the defaults for a job that does not.
  bool follow_job = false;
  std::string predictor = TTPRED_DEFAULT_PREDICT_JOB;  // the prediction job's program
  std::string output = "/dev/null";                    // its stdout/stderr (%j = job id)
  std::string cache_dir;                               // passed as --cache-dir ("" = none)
  double max_seconds = 0;                              // > 0: passed as --max-seconds (engine.max_seconds cap)
  std::vector<std::string> problems;  // unknown/invalid arguments (ignored, logged)
};

// plugstack.conf arguments: estimator=PATH timeout=SECONDS device=auto|cpu|cuda
// slurm_budget=yes|no mode=sync|job partition= account= qos= gres= follow_job=yes|no
// predictor=PATH output=PATH cache_dir=PATH max_seconds=SECONDS
SpankArgs parse_spank_args(int argc, const char* const* argv);

struct RunResult {
  enum class Status { ok, failed, timeout, exec_error } status = Status::exec_error;
  int exit_code = -1;  // exit status, or 128+signal
  std::string out;     // stdout (truncated at max_output)
  std::string err;     // stderr (last bytes only)
  std::string error;   // what went wrong, one line
};

// Runs argv[0] (a path, not searched in PATH) with stdin from /dev/null in its own
// process group; kills the group (SIGTERM, then SIGKILL 1 s later) after
// timeout_seconds. Uses poll/waitpid only (no alarm, no signal handlers). When the
// child exits, its status and output are used even if a grandchild keeps the
// pipes open (after 200 ms the runner stops reading and SIGTERMs the group).
RunResult run_with_timeout(const std::vector<std::string>& argv, double timeout_seconds,
                           std::size_t max_output = 16u << 20);

// Last non-empty line of s, trimmed to at most `max` chars.
std::string last_line(const std::string& s, std::size_t max = 300);

}  // namespace ttpred::slurm
