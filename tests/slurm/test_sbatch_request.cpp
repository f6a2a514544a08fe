// Unit tests of plugin/common/sbatch_request.cpp: the partition and GPU type a
// batch job asks for, read from sbatch's command line, environment and script
// (plugstack follow_job=yes, issue 17).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "sbatch_request.hpp"

using namespace ttpred::slurm;

TEST_CASE("sbatch request: the GPU type of --gres and --gpus values") {
  CHECK(gpu_type_of_gres("gpu:a100:2") == "a100");
  CHECK(gpu_type_of_gres("gpu:h100") == "h100");
  CHECK(gpu_type_of_gres("gpu:2").empty());
  CHECK(gpu_type_of_gres("gpu").empty());
  CHECK(gpu_type_of_gres("shard:4,gpu:l40s:1") == "l40s");
  CHECK(gpu_type_of_gres("gres/gpu:a100:1") == "a100");
  CHECK(gpu_type_of_gres("mps:100").empty());
  CHECK(gpu_type_of_gres("gpu:a$(reboot):1").empty());  // not a plain name: ignored
  CHECK(gpu_type_of_gpus("a100:2") == "a100");
  CHECK(gpu_type_of_gpus("4").empty());
  CHECK(gpu_type_of_gpus("v100:1,a100:1") == "v100");
  CHECK(gpu_type_of_gpus("a/b:1").empty());
}

TEST_CASE("sbatch request: command line, as sbatch's getopt reads it") {
  auto r = request_from_args({"sbatch", "-p", "gpu", "--gres=gpu:a100:2", "--ttpred=job.yaml", "train.sh", "-p", "x"});
  REQUIRE(r.partition);
  CHECK(*r.partition == "gpu");  // options after the script are the script's
  CHECK(r.gpu_type() == "a100");
  CHECK(r.script == "train.sh");
  r = request_from_args({"sbatch", "-pdebug,gpu", "-G", "h100:1", "--ttpred", "job.yaml", "--hold", "run.sh"});
  CHECK(*r.partition == "debug,gpu");
  CHECK(r.gpu_type() == "h100");
  CHECK(r.script == "run.sh");
  // clustered short options, abbreviated long options, --opt VALUE
  r = request_from_args({"sbatch", "-Hpgpu", "--part", "big", "--gpus-per-node", "l40s:1", "s.sh"});
  CHECK(*r.partition == "big");
  CHECK(r.gpu_type() == "l40s");
  CHECK(r.script == "s.sh");
  // --gres's type wins over --gpus's; an untyped request has none
  r = request_from_args({"sbatch", "--gpus=v100:1", "--gres=gpu:a100:1", "x.sh"});
  CHECK(r.gpu_type() == "a100");
  r = request_from_args({"sbatch", "--gpus=2", "x.sh"});
  CHECK(r.gpus_type);
  CHECK(r.gpu_type().empty());
  // --wrap: no script; no options at all
  r = request_from_args({"sbatch", "--wrap", "python train.py", "-p", "ignored"});
  CHECK(r.script.empty());
  CHECK(*r.partition == "ignored");  // --wrap's value was consumed, -p still an option
  r = request_from_args({"sbatch"});
  CHECK_FALSE(r.partition);
  CHECK(r.script.empty());
  // a partition that is not a plain name is not given
  r = request_from_args({"sbatch", "--partition=a b;c", "x.sh"});
  CHECK_FALSE(r.partition);
}

TEST_CASE("sbatch request: #SBATCH lines before the first command") {
  const std::string script =
      "#!/bin/bash\n"
      "# a comment\n"
      "\n"
      "#SBATCH --partition=gpu   # the GPU nodes\n"
      "#SBATCH --gres=gpu:a100:4 --time=60\n"
      "#SBATCH -J 'my job'\n"
      "python train.py\n"
      "#SBATCH -p late\n";
  auto r = request_from_script(script);
  REQUIRE(r.partition);
  CHECK(*r.partition == "gpu");  // the line after the first command is not read
  CHECK(r.gpu_type() == "a100");
  r = request_from_script("#!/bin/sh\n#SBATCH -p first\n#SBATCH hetjob\n#SBATCH -p second\ntrue\n");
  CHECK(*r.partition == "first");
  r = request_from_script(std::string(kMaxScriptHead + 10, '#'));  // bounded, no crash
  CHECK_FALSE(r.partition);
  r = request_from_script("");
  CHECK_FALSE(r.partition);
}

TEST_CASE("sbatch request: precedence command line > environment > script") {
  const char* env[] = {"HOME=/root", "SBATCH_PARTITION=envp", "SBATCH_GPUS=v100:1", nullptr};
  const auto e = request_from_env(env);
  CHECK(*e.partition == "envp");
  CHECK(e.gpu_type() == "v100");
  const auto script = request_from_script("#!/bin/sh\n#SBATCH -p scriptp --gres=gpu:a100:1\ntrue\n");
  auto r = merge_requests(request_from_args({"sbatch", "x.sh"}), e, script);
  CHECK(*r.partition == "envp");
  CHECK(r.gpu_type() == "a100");  // --gres (script) over --gpus (environment)
  r = merge_requests(request_from_args({"sbatch", "-p", "cmdp", "--gres=gpu:2", "x.sh"}), e, script);
  CHECK(*r.partition == "cmdp");
  CHECK(r.gpu_type() == "v100");  // the command line's untyped --gres replaced the script's
  CHECK(r.script == "x.sh");
}

TEST_CASE("sbatch request: /proc/self/cmdline") {
  const std::string bytes("sbatch\0-p\0gpu\0x.sh\0", 19);
  const auto v = split_cmdline(bytes);
  REQUIRE(v.size() == 4);
  CHECK(v[1] == "-p");
  CHECK(v[3] == "x.sh");
  CHECK(split_cmdline("").empty());
}
