// libFuzzer harness: job_submit()'s pure core (evaluate_submit) and job_modify's
// (evaluate_modify) with the test policy, arbitrary env entries, job name,
// partition, account, TRES, array index, limits; and job mode's pending submission
// and prediction report (evaluate_submit_pending, evaluate_report).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "submit.hpp"

namespace {

const char* kPolicy = R"(version: 1
limits: {max_seconds: 864000, exclusive_node_gpus: 8}
defaults:
  time_limit: {basis: horizon, use_band: upper, safety_factor: 1.2, margin_minutes: 2, max_minutes: 1440}
  budget: {reject: true}
budgets:
  - {account: a, gpu_hours: 10}
  - {account: a, partition: gpu, gpu_hours: 5, period: day}
step_seconds:
  - {partition: gpu, min: 0.05, max: 10}
rules:
  - name: strict
    match: {partition: strict}
    reject: {under: true, over_factor: 10, above_minutes: 60}
  - name: rest
)";

struct Reader {
  const std::uint8_t* d;
  std::size_t n, i = 0;
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int k = 0; k < 4 && i < n; ++k) v = (v << 8) | d[i++];
    return v;
  }
  std::string str() {  // length-prefixed (1 byte), bounded
    std::size_t len = i < n ? d[i++] : 0;
    std::string s;
    for (std::size_t k = 0; k < len && i < n; ++k) s += static_cast<char>(d[i++]);
    return s;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const ttpred::slurm::Policy policy = ttpred::slurm::parse_policy(kPolicy, "fuzz.yaml");
  static ttpred::slurm::BudgetTally tally;
  Reader r{data, size};
  using namespace ttpred::slurm;
  SubmitInput in;
  std::string name = r.str(), part = r.str(), acct = r.str();
  in.name = name.c_str();
  in.partition = part;
  in.default_partition = "debug";
  if (!acct.empty()) in.account = acct;
  in.tres.per_node = r.str();
  in.tres.per_job = r.str();
  in.array_inx = r.str();
  std::uint32_t tl = r.u32(), tm = r.u32();
  if (tl & 1) in.time_limit_minutes = (tl >> 1) == 0x7fffffff ? HUGE_VAL : static_cast<double>(tl >> 1);
  if (tm & 1) in.time_min_minutes = static_cast<double>(tm >> 1);
  in.min_nodes = r.u32() & 0xffff;
  in.max_nodes = r.u32() & 0xffff;
  in.exclusive = r.u32() & 1;
  in.tres.tasks = r.u32() & 0xffff;
  in.now = 1700000000 + (r.u32() % 100000000);
  std::vector<std::string> entries;
  while (r.i < r.n && entries.size() < 256) entries.push_back(r.str());
  std::vector<const char*> env;
  for (const auto& e : entries) env.push_back(e.c_str());
  in.env = env.data();
  in.env_count = env.size();
  SubmitOutput out = evaluate_submit(&policy, in, tally);
  if (out.log_lines.size() > kMaxProblems + 3) __builtin_trap();
  for (const auto& l : out.log_lines)
    if (l.find('\n') != std::string::npos) __builtin_trap();
  if (out.ticket) {
    ModifyInput m;
    m.now = in.now;
    m.time_limit_minutes = static_cast<double>(tl % 100000);
    if (tm & 2) m.partition = part;
    if (tm & 4) m.account = std::optional<std::string>(acct);
    ModifyOutput mo = evaluate_modify(policy, *out.ticket, m, tally);
    (void)mo;
  }
  // Job mode (issue 17): the same job waiting for a prediction job, then a report
  // made of the env entries (an untrusted comment of `scontrol update`).
  SubmitOutput pend = evaluate_submit_pending(&policy, in, 1 + (tl % 1000), tally);
  if (pend.ticket) {
    std::string report = (tm & 8) ? kReportFailed : kReportResult;
    for (const auto& e : entries) report += e;
    ReportOutput ro = evaluate_report(policy, *pend.ticket, report, in.now, tally);
    if (ro.comment.size() > 480 || ro.comment.find('\n') != std::string::npos) __builtin_trap();
    if (ro.set_time_limit && *ro.set_time_limit > 1440 && !in.time_min_minutes) __builtin_trap();  // max_minutes
    if (ro.rc == ReportOutput::Rc::ok && ro.ticket.awaiting) __builtin_trap();
    if (evaluate_report(policy, ro.ticket, report, in.now, tally).rc == ReportOutput::Rc::ok) __builtin_trap();
  }
  auto lock = tally.lock();
  if (tally.used("a@/month", Period::month, in.now) < 0) __builtin_trap();
  return 0;
}
