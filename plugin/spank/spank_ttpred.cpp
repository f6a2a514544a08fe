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
//            slurm_budget=yes
// User environment: TTPRED_SAVE_JSON=FILE writes the estimator's JSON to FILE.
//
// mode=job (docs/admin-guide.md, "Job mode"): for sbatch, instead of running the
// estimator, submits a prediction job (ttpred-predict-job, same user) and passes its
// id as TTPRED_PREDICT_JOB; job_submit/ttpred makes the job wait for it and
// job_modify applies its report. sbatch returns after one RPC.
//
// Budgets (docs/budgets.md): with slurm_budget=yes (default) the plugin also asks
// slurmctld for the user's associations (slurm_load_assoc_mgr_info, the public API
// behind `scontrol show assoc_mgr`: GrpTRESMins and usage, available where
// slurmdbd is configured) and passes the GPU-hours left per account as
// TTPRED_SLURM_BUDGET; job_submit/ttpred shows them and applies the policy.
#include <errno.h>
#include <pwd.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <vector>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

extern "C" {
#include <slurm/slurm.h>
#include <slurm/slurm_version.h>
#include <slurm/slurmdb.h>
#include <slurm/spank.h>
}

// libslurm(full) API, resolved from the loading process (sbatch/salloc/srun).
// Weak: when absent, the Slurm budget is simply not read.
#pragma weak slurm_load_assoc_mgr_info
#pragma weak slurm_free_assoc_mgr_info_msg
#pragma weak slurm_list_create
#pragma weak slurm_list_append
#pragma weak slurm_list_destroy
#pragma weak slurm_list_iterator_create
#pragma weak slurm_list_next
#pragma weak slurm_list_iterator_destroy
#pragma weak slurm_init_job_desc_msg
#pragma weak slurm_submit_batch_job
#pragma weak slurm_free_submit_response_response_msg

#include "../common/budget.hpp"
#include "../common/estimator.hpp"
#include "../common/prediction.hpp"
#include "../common/sbatch_request.hpp"
#include "../common/submit.hpp"

extern char** environ;

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

std::string user_name() {
  struct passwd pw {};
  struct passwd* res = nullptr;
  char buf[4096];
  if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) != 0 || !res || !res->pw_name) return "";
  return res->pw_name;
}

// The user's GPU budgets from slurmctld's association manager, formatted for
// TTPRED_SLURM_BUDGET; "" when there is no accounting, no gres/gpu TRES or no
// gres/gpu GrpTRESMins on the user's associations (and their parents).
std::string read_slurm_budgets() {
  if (!slurm_load_assoc_mgr_info || !slurm_free_assoc_mgr_info_msg || !slurm_list_create ||
      !slurm_list_append || !slurm_list_destroy || !slurm_list_iterator_create ||
      !slurm_list_next || !slurm_list_iterator_destroy)
    return "";
  const std::string user = user_name();
  if (user.empty()) return "";
  assoc_mgr_info_request_msg_t req{};
  req.flags = ASSOC_MGR_INFO_FLAG_ASSOC | ASSOC_MGR_INFO_FLAG_USERS;
  req.user_list = slurm_list_create(nullptr);
  slurm_list_append(req.user_list, const_cast<char*>(user.c_str()));
  assoc_mgr_info_msg_t* msg = nullptr;
  const int rc = slurm_load_assoc_mgr_info(&req, &msg);
  slurm_list_destroy(req.user_list);
  if (rc != SLURM_SUCCESS || !msg) {
    if (msg) slurm_free_assoc_mgr_info_msg(msg);
    return "";
  }
  std::vector<AssocInfo> assocs;
  std::string default_account;
  try {
    int gpu = -1;
    for (uint32_t i = 0; msg->tres_names && i < msg->tres_cnt; ++i)
      if (msg->tres_names[i] && std::string(msg->tres_names[i]) == "gres/gpu") gpu = static_cast<int>(i);
    if (msg->user_list) {
      // ListIterator (22.05) is list_itr_t* since 23.11; 24.11 dropped the old name.
      auto* it = slurm_list_iterator_create(msg->user_list);
      while (auto* u = static_cast<slurmdb_user_rec_t*>(slurm_list_next(it)))
        if (u->name && user == u->name && u->default_acct) default_account = u->default_acct;
      slurm_list_iterator_destroy(it);
    }
    if (gpu >= 0 && msg->assoc_list) {
      auto* it = slurm_list_iterator_create(msg->assoc_list);
      while (auto* a = static_cast<slurmdb_assoc_rec_t*>(slurm_list_next(it))) {
        AssocInfo ai;
        ai.id = a->id;
        ai.parent_id = a->parent_id;
        ai.account = a->acct ? a->acct : "";
        ai.user = a->user ? a->user : "";
        ai.partition = a->partition ? a->partition : "";
        if (a->grp_tres_mins_ctld) {
          const uint64_t v = a->grp_tres_mins_ctld[gpu];
          if (v != INFINITE64 && v != NO_VAL64) ai.gpu_limit_minutes = static_cast<double>(v);
        }
        if (a->usage && a->usage->usage_tres_raw && a->usage->tres_cnt > static_cast<uint32_t>(gpu)) {
          const double u = static_cast<double>(a->usage->usage_tres_raw[gpu]);
          if (std::isfinite(u) && u > 0) ai.gpu_usage_seconds = u;
        }
        assocs.push_back(ai);
      }
      slurm_list_iterator_destroy(it);
    }
  } catch (...) {
    slurm_free_assoc_mgr_info_msg(msg);
    throw;
  }
  slurm_free_assoc_mgr_info_msg(msg);
  return format_slurm_budgets(compute_slurm_budgets(assocs, user, default_account));
}

// cache_dir= with %u replaced by the user's name (a directory per user).
std::string user_cache_dir() {
  std::string d = g_args.cache_dir;
  for (auto pos = d.find("%u"); pos != std::string::npos; pos = d.find("%u", pos)) {
    const std::string u = user_name();
    d.replace(pos, 2, u);
    pos += u.size();
  }
  return d;
}

// max_seconds= as a command-line number (plain digits: safe in the job script).
std::string seconds_arg(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", s);
  return buf;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// At most `limit` bytes of a file ("" when it cannot be read).
std::string read_head(const std::string& path, std::size_t limit) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return "";
  std::string out(limit, '\0');
  f.read(&out[0], static_cast<std::streamsize>(limit));
  out.resize(static_cast<std::size_t>(f.gcount()));
  return out;
}

// follow_job=yes: the partition and GPU type the user's job asks for, read from
// sbatch's own command line, environment and script (sbatch_request.hpp).
SbatchRequest users_request() {
  const SbatchRequest cmd = request_from_args(split_cmdline(read_head("/proc/self/cmdline", 262144)));
  SbatchRequest script;
  if (!cmd.script.empty() && cmd.script != "-") script = request_from_script(read_head(cmd.script, kMaxScriptHead));
  return merge_requests(cmd, request_from_env(environ), script);
}

// mode=job: submits the prediction job (same user, working directory and
// environment; the plugstack's partition/account/qos/gres, or with follow_job=yes
// the job's own partition and GPU type) and passes its id to
// job_submit/ttpred, which makes this job wait for it. One RPC: sbatch returns at
// once whatever the model.
void submit_prediction_job(spank_t sp) {
  if (!slurm_init_job_desc_msg || !slurm_submit_batch_job || !slurm_free_submit_response_response_msg) {
    slurm_error("ttpred: warning: no time prediction (mode=job needs libslurm's job submission API); "
                "submitting the job without it");
    return;
  }
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) {
    slurm_error("ttpred: warning: no time prediction (cannot read the working directory); "
                "submitting the job without it");
    return;
  }
  char spec[PATH_MAX];
  if (!realpath(g_spec.c_str(), spec)) {
    slurm_error("ttpred: warning: no time prediction (%s: %s); submitting the job without it",
                sanitize(g_spec, 256).c_str(), std::strerror(errno));
    return;
  }
  const int limit_minutes = static_cast<int>(std::ceil(g_args.timeout_seconds / 60.0)) + 1;
  std::string script = "#!/bin/sh\n# ttpred prediction job (mode=job): reports to slurmctld, then ends\nexec " +
                       shell_quote(g_args.predictor) + " --estimator " + shell_quote(g_args.estimator) +
                       " --spec " + shell_quote(spec) + " --device " + g_args.device + " --timeout " +
                       std::to_string(static_cast<int>(std::ceil(g_args.timeout_seconds)));
  if (!g_args.cache_dir.empty()) script += " --cache-dir " + shell_quote(user_cache_dir());
  if (g_args.max_seconds > 0) script += " --max-seconds " + seconds_arg(g_args.max_seconds);
  script += "\n";
  std::vector<char*> env;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "SPANK_", 6) != 0 && std::strncmp(*e, "TTPRED_", 7) != 0) env.push_back(*e);
  env.push_back(nullptr);
  std::string partition = g_args.partition, gres_spec = g_args.gres, followed;
  if (g_args.follow_job) {
    const SbatchRequest r = users_request();
    if (r.partition && !r.partition->empty()) {
      partition = *r.partition;
      followed = "partition " + partition;
    }
    if (const std::string t = r.gpu_type(); !t.empty()) {
      gres_spec = "gpu:" + t + ":1";
      followed += (followed.empty() ? "" : ", ") + std::string("gres ") + gres_spec;
    }
  }
  std::string gres;
  if (!gres_spec.empty()) {
#if SLURM_VERSION_NUMBER >= SLURM_VERSION_NUM(23, 11, 0)
    gres = "gres/" + gres_spec;
#else
    gres = "gres:" + gres_spec;
#endif
  }
  job_desc_msg_t d;
  slurm_init_job_desc_msg(&d);
  d.name = const_cast<char*>("ttpred-predict");
  d.comment = const_cast<char*>("ttpred: prediction job");
  d.script = const_cast<char*>(script.c_str());
  d.environment = env.data();
  d.env_size = static_cast<uint32_t>(env.size() - 1);
  d.user_id = getuid();
  d.group_id = getgid();
  d.work_dir = cwd;
  d.std_out = const_cast<char*>(g_args.output.c_str());
  d.std_err = const_cast<char*>(g_args.output.c_str());
  d.time_limit = static_cast<uint32_t>(limit_minutes);
  d.min_nodes = 1;
  if (!partition.empty()) d.partition = const_cast<char*>(partition.c_str());
  if (!g_args.account.empty()) d.account = const_cast<char*>(g_args.account.c_str());
  if (!g_args.qos.empty()) d.qos = const_cast<char*>(g_args.qos.c_str());
  if (!gres.empty()) d.tres_per_node = const_cast<char*>(gres.c_str());
  submit_response_msg_t* resp = nullptr;
  if (slurm_submit_batch_job(&d, &resp) != SLURM_SUCCESS || !resp) {
    const int e = errno;  // slurm_get_errno() is gone in 24.11; libslurm sets errno
    if (resp) slurm_free_submit_response_response_msg(resp);
    slurm_error("ttpred: warning: no time prediction (the prediction job was refused: %s); "
                "submitting the job without it", slurm_strerror(e));
    return;
  }
  const uint32_t id = resp->job_id;
  slurm_free_submit_response_response_msg(resp);
  const std::string value = std::to_string(id);
  spank_err_t e = spank_job_control_setenv(sp, kEnvPredictJob, value.c_str(), 1);
  if (e != ESPANK_SUCCESS) {
    // The job would not wait for it: the prediction job finds no job and ends.
    slurm_error("ttpred: warning: cannot pass %s to the controller: %s", kEnvPredictJob, spank_strerror(e));
    return;
  }
  if (followed.empty())
    slurm_info("ttpred: predicting in job %u (mode=job)", id);
  else
    slurm_info("ttpred: predicting in job %u (mode=job; %s, as the job asks)", id, followed.c_str());
}

void run_prediction(spank_t sp) {
  if (spank_context() == S_CTX_LOCAL && std::getenv("SLURM_JOB_ID")) {
    slurm_info("ttpred: --ttpred ignored for a step inside an existing allocation");
    return;
  }
  for (const auto& p : g_args.problems) slurm_error("ttpred: plugstack.conf: %s", p.c_str());
  // Job mode for batch jobs only: salloc/srun wait for their allocation anyway.
  if (g_args.job_mode && spank_context() == S_CTX_ALLOCATOR &&
      std::strcmp(program_invocation_short_name, "sbatch") == 0) {
    submit_prediction_job(sp);
    return;
  }
  std::vector<std::string> argv = {g_args.estimator, "--spec", g_spec, "--json", "--device",
                                   g_args.device};
  if (!g_args.cache_dir.empty()) {
    argv.push_back("--cache-dir");
    argv.push_back(user_cache_dir());
  }
  if (g_args.max_seconds > 0) {
    argv.push_back("--max-seconds");
    argv.push_back(seconds_arg(g_args.max_seconds));
  }
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
  auto env = prediction_to_env(p);
  if (g_args.slurm_budget) {
    try {  // a budget problem must not cost the user the prediction
      std::string budgets = read_slurm_budgets();
      if (!budgets.empty()) env.emplace_back(kEnvSlurmBudget, budgets);
    } catch (const std::exception& e) {
      slurm_error("ttpred: warning: cannot read the Slurm GPU budget (%s)", e.what());
    } catch (...) {
      slurm_error("ttpred: warning: cannot read the Slurm GPU budget");
    }
  }
  for (const auto& [name, value] : env) {
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
