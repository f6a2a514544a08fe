// libFuzzer harness: the policy loader (parse_policy) on arbitrary YAML.
// Every input must either parse or throw PolicyError (one line); nothing else.
#include <cstddef>
#include <cstdint>
#include <string>

#include "policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    ttpred::slurm::Policy p = ttpred::slurm::parse_policy(text, "fuzz.yaml");
    // Exercise the parsed policy a little.
    ttpred::slurm::JobView j;
    j.partitions = {"gpu"};
    j.gpus = 2;
    ttpred::slurm::Prediction pr;
    pr.seconds = pr.seconds_lo = pr.seconds_hi = 100;
    pr.horizon_seconds = pr.horizon_lo = pr.horizon_hi = 200;
    (void)ttpred::slurm::decide(p, j, pr);
  } catch (const ttpred::slurm::PolicyError& e) {
    const std::string msg = e.what();
    if (msg.find('\n') != std::string::npos && msg.size() > 100000) __builtin_trap();
  }
  return 0;
}
