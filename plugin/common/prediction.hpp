// ttpred Slurm integration: the prediction handed from the SPANK plugin (sbatch,
// runs ttpred-estimate) to the job_submit plugin (slurmctld) through the job
// control environment (job_desc->spank_job_env).
//
// Pure C++: no Slurm headers, unit-tested in tests/slurm/test_policy.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ttpred::slurm {

// Names of the job control environment variables (without the SPANK_ prefix that
// Slurm prepends; parse_env accepts both spellings).
inline constexpr const char* kEnvSeconds = "TTPRED_SECONDS";
inline constexpr const char* kEnvSecondsLo = "TTPRED_SECONDS_LO";
inline constexpr const char* kEnvSecondsHi = "TTPRED_SECONDS_HI";
inline constexpr const char* kEnvHorizonSeconds = "TTPRED_HORIZON_SECONDS";
inline constexpr const char* kEnvHorizonSecondsLo = "TTPRED_HORIZON_SECONDS_LO";
inline constexpr const char* kEnvHorizonSecondsHi = "TTPRED_HORIZON_SECONDS_HI";
inline constexpr const char* kEnvSteps = "TTPRED_STEPS";
inline constexpr const char* kEnvHorizonSteps = "TTPRED_HORIZON_STEPS";
inline constexpr const char* kEnvStepSeconds = "TTPRED_STEP_SECONDS";
// Where the step time came from (measured | spec: the estimator's step_seconds_source)
// and the model's file name (its basename), for the policy's step_seconds: table.
inline constexpr const char* kEnvStepSource = "TTPRED_STEP_SOURCE";
inline constexpr const char* kEnvModel = "TTPRED_MODEL";
// GPUs of the spec (hardware.gpus) and the cost it implies (horizon x GPUs, in
// GPU-hours). Informational: job_submit/ttpred prefers the job's own GPU request
// and recomputes the cost; TTPRED_GPU_HOURS is only for the batch job's environment.
inline constexpr const char* kEnvGpus = "TTPRED_GPUS";
inline constexpr const char* kEnvGpuHours = "TTPRED_GPU_HOURS";

// A prediction in seconds. Bands are [lo, hi]; when absent they equal the point.
struct Prediction {
  double seconds = 0;           // wall-clock to converge, T(eps)
  double seconds_lo = 0, seconds_hi = 0;
  double horizon_seconds = 0;   // wall-clock of the whole horizon
  double horizon_lo = 0, horizon_hi = 0;
  double step_seconds = 0;      // 0 = unknown
  std::int64_t steps = -1;      // -1 = unknown
  std::int64_t horizon_steps = -1;
  std::int64_t gpus = -1;       // GPUs of the spec; -1 = unknown
  // measured (timed by the estimator where it ran: the submit host in sync mode),
  // spec (the user's hardware.step_seconds), node (job mode: timed on the
  // prediction job's node); "" = unknown. Untrusted like every value here.
  std::string step_source;
  std::string model;            // the model file's name (no directory), [A-Za-z0-9._+-], "" = unknown
  std::vector<std::string> warnings;  // estimator warnings (SPANK side only)
};

struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses `ttpred-estimate --json` output (docs/json.md, schema 1). Throws JsonError
// with a one-line reason when it is not a JSON object or required fields
// (seconds, horizon_seconds) are missing, non-numeric, negative or non-finite.
Prediction prediction_from_json(const std::string& text);

// The NAME=VALUE pairs the SPANK plugin sets with spank_job_control_setenv.
std::vector<std::pair<std::string, std::string>> prediction_to_env(const Prediction& p);

// Validation of untrusted values (any libslurm client can set spank_job_env).
struct EnvLimits {
  double max_seconds = 31536000.0;  // 1 year: anything above is absurd
  double max_steps = 1e12;
  double max_gpus = 100000;
};

struct EnvParse {
  bool present = false;                  // at least one TTPRED_* variable was seen
  std::optional<Prediction> prediction;  // set when the values are usable
  std::vector<std::string> problems;     // at most kMaxProblems lines, for the log
  std::size_t problem_count = 0;         // all problems, including those not kept
  bool truncated = false;                // the scan stopped at a bound (entries or bytes)
};

// Bounds of parse_env (work per job in slurmctld): at most kMaxEnvScan entries of
// the job control environment are looked at, at most kMaxTtpredEntries TTPRED_*
// entries and kMaxTtpredBytes bytes of them are parsed, at most kMaxProblems
// problem lines are kept (problem_count has the total).
inline constexpr std::size_t kMaxEnvScan = 4096;
inline constexpr std::size_t kMaxTtpredEntries = 64;
inline constexpr std::size_t kMaxTtpredBytes = 16384;
inline constexpr std::size_t kMaxProblems = 3;

// For every log line and user message: control characters and non-ASCII bytes
// replaced by '?', at most max_len characters ("..." appended when cut).
std::string sanitize(const std::string& s, std::size_t max_len = 64);
std::string sanitize(const char* s, std::size_t max_len = 64);

// Reads TTPRED_* (or SPANK_TTPRED_*) entries from a NAME=VALUE array. A value that
// is non-numeric, negative, NaN/Inf, longer than 64 chars or above the limits is
// ignored (and reported in `problems`); bands are fixed up so lo <= point <= hi.
// A name given twice: the first value counts, the repeat is a problem. Bounded:
// see kMaxEnvScan and friends above.
// The prediction is usable when horizon_seconds or seconds is valid (a missing
// one is taken from the other).
EnvParse parse_env(const char* const* env, std::size_t count, const EnvLimits& limits = {});

// Strict number parsing: the whole string must be a finite decimal number.
std::optional<double> parse_number(const std::string& s);
// TTPRED_STEP_SOURCE values (measured | spec | node) and TTPRED_MODEL names (1-64 of [A-Za-z0-9._+-]).
bool valid_step_source(const std::string& s);
bool valid_model_name(const std::string& s);

// "1h02m03s"-style human duration, for messages.
std::string format_duration(double seconds);

// Predicted cost of the full horizon in GPU-hours: horizon_seconds x gpus / 3600.
double gpu_hours(double horizon_seconds, double gpus);

// The one-line summary shown to the user by sbatch (with the cost when gpus >= 0).
std::string summary_line(const Prediction& p);

}  // namespace ttpred::slurm
