// What the user's batch job asks for, read the way sbatch reads it: the partition
// and the GPU type (issue 17, plugstack follow_job=yes). The prediction job of
// mode=job is submitted by the SPANK plugin inside sbatch *before* the user's job,
// and SPANK gives a plugin no access to sbatch's other options; so the plugin reads
// them itself from sbatch's command line (/proc/self/cmdline), the SBATCH_*
// environment and the script's #SBATCH lines, with sbatch's precedence: command
// line over environment over script. Pure (no Slurm headers): unit-tested in
// tests/slurm/test_policy.cpp. Everything here is untrusted user input: bounded,
// and a value that is not a plain Slurm name is ignored.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace ttpred::slurm {

// At most this many bytes of the script are read for #SBATCH lines.
inline constexpr std::size_t kMaxScriptHead = 65536;

struct SbatchRequest {
  // Each set when its option was given (a later source overrides it even when
  // the new value names no type: --gres=gpu:2 on the command line wins over the
  // script's --gres=gpu:a100:2); a value that is not a plain name counts as not given.
  std::optional<std::string> partition;  // -p/--partition (a comma list as given)
  std::optional<std::string> gres_type;  // the GPU type of --gres=gpu:TYPE[:N] ("" untyped)
  std::optional<std::string> gpus_type;  // of --gpus/-G/--gpus-per-node/-task/-socket=TYPE:N ("" untyped)
  std::string script;                    // the batch script's path as given ("" with --wrap or from stdin)
  // The GPU type the job asks for: --gres's, else --gpus's; "" when none.
  std::string gpu_type() const;
};

// sbatch's options from argv (argv[0] = the program): stops at the script (the
// first argument that is not an option), as sbatch does.
SbatchRequest request_from_args(const std::vector<std::string>& argv);
// From the script's text: its #SBATCH lines before the first command.
SbatchRequest request_from_script(const std::string& text);
// From SBATCH_PARTITION, SBATCH_GRES, SBATCH_GPUS, SBATCH_GPUS_PER_NODE, SBATCH_GPUS_PER_TASK.
SbatchRequest request_from_env(const char* const* env);
// sbatch's precedence: command line, then environment, then script.
SbatchRequest merge_requests(const SbatchRequest& cmdline, const SbatchRequest& env, const SbatchRequest& script);

// The GPU type in a --gres list ("gpu:a100:2,shard:1" -> "a100") or a --gpus value
// ("a100:2" -> "a100"); "" when untyped or not a plain name.
std::string gpu_type_of_gres(const std::string& gres);
std::string gpu_type_of_gpus(const std::string& gpus);

// The NUL-separated argv of /proc/self/cmdline, bounded.
std::vector<std::string> split_cmdline(const std::string& bytes);

}  // namespace ttpred::slurm
