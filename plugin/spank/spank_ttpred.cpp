// SPANK plugin spank_ttpred.so: `sbatch --ttpred=SPEC` (or `#SBATCH --ttpred=SPEC`)
// runs `ttpred-estimate --spec SPEC --json --device DEV` as the submitting user,
// prints a one-line summary and hands the prediction to slurmctld through the job
// control environment (spank_job_control_setenv -> job_desc->spank_job_env), where
// job_submit/ttpred applies the site policy. Fails open: any problem is a warning
// and the submission goes on.
//
// plugstack.conf (one line):
//   optional /usr/lib/x86_64-linux-gnu/slurm-wlm/spank_ttpred.so
//            estimator=/usr/local/bin/ttpred-estimate timeout=60 device=auto
// User environment: TTPRED_SAVE_JSON=FILE writes the estimator's JSON to FILE.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

extern "C" {
#include <slurm/slurm_version.h>
#include <slurm/spank.h>
}

#include "../common/estimator.hpp"
#include "../common/prediction.hpp"

#define TTPRED_EXPORT __attribute__((visibility("default")))

extern "C" {
// Declared extern first: a const global would otherwise get internal linkage in C++.
extern TTPRED_EXPORT const char plugin_name[];
extern TTPRED_EXPORT const char plugin_type[];
extern TTPRED_EXPORT const unsigned int plugin_version;
const char plugin_name[] = "ttpred";
const char plugin_type[] = "spank";
const unsigned int plugin_version = SLURM_VERSION_NUMBER;

TTPRED_EXPORT int slurm_spank_init(spank_t sp, int ac, char** av);
TTPRED_EXPORT int slurm_spank_init_post_opt(spank_t sp, int ac, char** av);
}

namespace {

using namespace ttpred::slurm;

std::string g_spec;        // --ttpred=SPEC as given
bool g_requested = false;  // option seen
SpankArgs g_args;

int opt_ttpred(int /*val*/, const char* optarg, int remote) {
  try {
    if (remote) return 0;  // nothing to do in slurmstepd
    if (!optarg || !*optarg) {
      slurm_error("ttpred: --ttpred needs a spec file (--ttpred=SPEC)");
      return 0;  // fail open: no prediction
    }
    g_spec = optarg;
    g_requested = true;
  } catch (...) {
  }
  return 0;
}

struct spank_option g_option = {
    const_cast<char*>("ttpred"), const_cast<char*>("SPEC"),
    const_cast<char*>("Predict the training time of the ttpred spec SPEC (runs ttpred-estimate) "
                      "and let the site policy set or check the time limit."),
    1, 0, opt_ttpred};

bool acting_context() {
  spank_context_t ctx = spank_context();
  return ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL;
}

void run_prediction(spank_t sp) {
  if (spank_context() == S_CTX_LOCAL && std::getenv("SLURM_JOB_ID")) {
    slurm_info("ttpred: --ttpred ignored for a step inside an existing allocation");
    return;
  }
  for (const auto& p : g_args.problems) slurm_error("ttpred: plugstack.conf: %s", p.c_str());
  std::vector<std::string> argv = {g_args.estimator, "--spec", g_spec, "--json", "--device",
                                   g_args.device};
  RunResult r = run_with_timeout(argv, g_args.timeout_seconds);
  if (r.status != RunResult::Status::ok) {
    std::string why = r.error;
    std::string detail = last_line(r.err);
    if (!detail.empty()) why += ": " + detail;
    slurm_error("ttpred: warning: no time prediction (estimator %s); submitting the job without it",
                why.c_str());
    return;
  }
  Prediction p;
  try {
    p = prediction_from_json(r.out);
  } catch (const JsonError& e) {
    slurm_error("ttpred: warning: no time prediction (%s); submitting the job without it", e.what());
    return;
  }
  if (const char* save = std::getenv("TTPRED_SAVE_JSON"); save && *save) {
    std::ofstream f(save);
    f << r.out;
    if (!f) slurm_error("ttpred: warning: cannot write TTPRED_SAVE_JSON=%s", save);
  }
  slurm_info("%s", summary_line(p).c_str());
  for (const auto& w : p.warnings) slurm_info("ttpred: estimator warning: %s", w.c_str());
  for (const auto& [name, value] : prediction_to_env(p)) {
    spank_err_t e = spank_job_control_setenv(sp, name.c_str(), value.c_str(), 1);
    if (e != ESPANK_SUCCESS) {
      slurm_error("ttpred: warning: cannot pass %s to the controller: %s", name.c_str(),
                  spank_strerror(e));
      return;
    }
    // Also visible to the batch job itself (sbatch exports its environment by default).
    ::setenv(name.c_str(), value.c_str(), 1);
  }
}

}  // namespace

extern "C" int slurm_spank_init(spank_t sp, int ac, char** av) {
  try {
    spank_context_t ctx = spank_context();
    if (ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL || ctx == S_CTX_REMOTE) {
      if (spank_option_register(sp, &g_option) != ESPANK_SUCCESS)
        slurm_error("ttpred: cannot register --ttpred");
    }
    if (ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL) {
      g_args = parse_spank_args(ac, av);  // problems are reported when --ttpred is used
    }
  } catch (const std::exception& e) {
    slurm_error("ttpred: internal error in init: %s", e.what());
  } catch (...) {
    slurm_error("ttpred: internal error in init");
  }
  return 0;  // never fail the submission
}

extern "C" int slurm_spank_init_post_opt(spank_t sp, int /*ac*/, char** /*av*/) {
  try {
    if (g_requested && acting_context()) run_prediction(sp);
  } catch (const std::exception& e) {
    slurm_error("ttpred: warning: internal error (%s); submitting the job without a prediction", e.what());
  } catch (...) {
    slurm_error("ttpred: warning: internal error; submitting the job without a prediction");
  }
  return 0;
}
