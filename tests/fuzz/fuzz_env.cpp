// libFuzzer harness: the job control environment parser (parse_env) and the
// TTPRED_SLURM_BUDGET parser; and sbatch's options as follow_job=yes reads them
// (sbatch_request.hpp: argv, environment, script). The input is split at NUL bytes into entries.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "budget.hpp"
#include "prediction.hpp"
#include "sbatch_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> entries;
  std::string cur;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      entries.push_back(cur);
      cur.clear();
    } else {
      cur += static_cast<char>(data[i]);
    }
  }
  entries.push_back(cur);
  std::vector<const char*> env;
  for (const auto& e : entries) env.push_back(e.c_str());
  auto r = ttpred::slurm::parse_env(env.data(), env.size());
  if (r.problems.size() > ttpred::slurm::kMaxProblems) __builtin_trap();
  for (const auto& p : r.problems)
    for (char c : p)
      if (static_cast<unsigned char>(c) < 0x20) __builtin_trap();  // sanitized
  if (r.prediction) {
    const auto& p = *r.prediction;
    if (!(p.horizon_lo <= p.horizon_seconds && p.horizon_seconds <= p.horizon_hi)) __builtin_trap();
    if (!(p.seconds <= p.horizon_seconds)) __builtin_trap();
  }
  (void)ttpred::slurm::parse_slurm_budgets(entries.empty() ? "" : entries[0]);
  (void)ttpred::slurm::array_task_count(entries.empty() ? "" : entries[0]);
  // sbatch's options: a name is a plain Slurm name or absent.
  env.push_back(nullptr);
  const auto req = ttpred::slurm::merge_requests(
      ttpred::slurm::request_from_args(entries), ttpred::slurm::request_from_env(env.data()),
      ttpred::slurm::request_from_script(std::string(reinterpret_cast<const char*>(data), size)));
  for (char c : req.gpu_type() + req.partition.value_or(""))
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' || c == ','))
      __builtin_trap();
  return 0;
}
