// Unit tests of the pure C++ part of the Slurm integration (plugin/common):
// policy parsing and matching, time-limit computation, validation of the
// untrusted spank_job_env values, estimator JSON and plugstack arguments.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <algorithm>
#include <ctime>

#include "budget.hpp"
#include "estimator.hpp"
#include "policy.hpp"
#include "prediction.hpp"
#include "submit.hpp"

#include <sys/stat.h>
#include <chrono>
#include <cstdio>
#include <fstream>

using namespace ttpred::slurm;

namespace {

Prediction sample() {
  Prediction p;
  p.seconds = 1200; p.seconds_lo = 1000; p.seconds_hi = 1500;
  p.horizon_seconds = 3000; p.horizon_lo = 2800; p.horizon_hi = 3400;
  p.steps = 1200; p.horizon_steps = 3000; p.step_seconds = 1;
  return p;
}

EnvParse parse(const std::vector<std::string>& v, EnvLimits lim = {}) {
  std::vector<const char*> c;
  for (const auto& s : v) c.push_back(s.c_str());
  return parse_env(c.data(), c.size(), lim);
}

std::string error_of(const std::string& yaml) {
  try {
    parse_policy(yaml, "/etc/slurm/ttpred.yaml");
  } catch (const PolicyError& e) {
    return e.what();
  }
  return "";
}

const char* kPolicy = R"(version: 1
defaults:
  time_limit: {basis: horizon, use_band: upper, safety_factor: 1.2, margin_minutes: 2, max_minutes: 1440}
rules:
  - name: gpu
    match: {partition: [gpu, "a100*"], qos: high}
    time_limit: {basis: converge, use_band: none, safety_factor: 1.0, margin_minutes: 0}
  - name: alice
    match: {user: alice}
    set_time_limit: false
    warn: {under: true, over_factor: 2}
  - name: strict
    match: {account: physics}
    reject: {under: true, over_factor: 10, above_minutes: 60}
  - name: rest
)";

}  // namespace

TEST_CASE("parse_number is strict") {
  CHECK(parse_number("12.5") == 12.5);
  CHECK(parse_number("1e3") == 1000.0);
  CHECK_FALSE(parse_number(""));
  CHECK_FALSE(parse_number("abc"));
  CHECK_FALSE(parse_number("12abc"));
  CHECK_FALSE(parse_number(" 12"));
  CHECK_FALSE(parse_number("nan"));
  CHECK_FALSE(parse_number("inf"));
  CHECK_FALSE(parse_number("1e400"));
  CHECK_FALSE(parse_number(std::string(100, '1')));
  CHECK(parse_number("-3") == -3.0);  // sign handled by the callers
}

TEST_CASE("prediction round-trips through the job control environment") {
  auto env = prediction_to_env(sample());
  std::vector<std::string> v;
  for (auto& [k, val] : env) v.push_back("SPANK_" + k + "=" + val);
  v.push_back("SPANK_OTHER=1");
  auto r = parse(v);
  REQUIRE(r.present);
  REQUIRE(r.prediction);
  CHECK(r.problems.empty());
  CHECK(r.prediction->horizon_hi == 3400);
  CHECK(r.prediction->seconds_lo == 1000);
  CHECK(r.prediction->steps == 1200);
  // without the SPANK_ prefix too
  auto r2 = parse({"TTPRED_HORIZON_SECONDS=60"});
  REQUIRE(r2.prediction);
  CHECK(r2.prediction->seconds == 60);  // taken from the horizon
  CHECK(r2.prediction->horizon_hi == 60);
}

TEST_CASE("forged or broken values are ignored") {
  CHECK_FALSE(parse({"PATH=/bin", "SPANK_FOO=1"}).present);
  auto r = parse({"SPANK_TTPRED_HORIZON_SECONDS=nan", "SPANK_TTPRED_SECONDS=-5"});
  CHECK(r.present);
  CHECK_FALSE(r.prediction);
  CHECK(r.problems.size() == 3);
  r = parse({"SPANK_TTPRED_HORIZON_SECONDS=1e300"});
  CHECK_FALSE(r.prediction);
  r = parse({"SPANK_TTPRED_HORIZON_SECONDS=abc", "SPANK_TTPRED_SECONDS=100"});
  REQUIRE(r.prediction);
  CHECK(r.prediction->horizon_seconds == 100);
  // absurd but numeric: above limits.max_seconds
  EnvLimits lim;
  lim.max_seconds = 1000;
  r = parse({"SPANK_TTPRED_HORIZON_SECONDS=5000"}, lim);
  CHECK_FALSE(r.prediction);
  // inconsistent band is fixed so that lo <= point <= hi, converge <= horizon
  r = parse({"SPANK_TTPRED_HORIZON_SECONDS=100", "SPANK_TTPRED_HORIZON_SECONDS_HI=50",
             "SPANK_TTPRED_HORIZON_SECONDS_LO=500", "SPANK_TTPRED_SECONDS=300"});
  REQUIRE(r.prediction);
  CHECK(r.prediction->horizon_hi == 100);
  CHECK(r.prediction->horizon_lo == 100);
  CHECK(r.prediction->seconds == 100);
  // entries without '=' and control characters do not crash
  r = parse({"SPANK_TTPRED_SECONDS", "SPANK_TTPRED_SECONDS=\x01\x02"});
  CHECK_FALSE(r.prediction);
}

TEST_CASE("estimator JSON") {
  auto p = prediction_from_json(R"({"seconds": 10, "seconds_band": [8, 12], "horizon_seconds": 20,
      "horizon_seconds_band": [18, 25], "steps": 5, "horizon_steps": 10, "step_seconds": 2,
      "warnings": ["w1"]})");
  CHECK(p.seconds_hi == 12);
  CHECK(p.horizon_lo == 18);
  CHECK(p.warnings.size() == 1);
  CHECK_THROWS_AS(prediction_from_json("not json"), JsonError);
  CHECK_THROWS_AS(prediction_from_json("[1,2]"), JsonError);
  CHECK_THROWS_AS(prediction_from_json(R"({"steps": 3})"), JsonError);
  CHECK_THROWS_AS(prediction_from_json(R"({"seconds": -1, "horizon_seconds": 3})"), JsonError);
  CHECK_THROWS_AS(prediction_from_json(R"({"seconds": "1", "horizon_seconds": 3})"), JsonError);
  // band without the point is widened to contain it
  p = prediction_from_json(R"({"seconds": 10, "seconds_band": [11, 12], "horizon_seconds": 20})");
  CHECK(p.seconds_lo == 10);
  CHECK(p.horizon_hi == 20);
  CHECK(summary_line(p).rfind("ttpred: ", 0) == 0);
}

TEST_CASE("durations") {
  CHECK(format_duration(2.16) == "2.2s");
  CHECK(format_duration(59.6) == "1m00s");
  CHECK(format_duration(3000) == "50m00s");
  CHECK(format_duration(60000) == "16h40m00s");
  CHECK(format_duration(200000) == "2d07h33m");
  CHECK(format_duration(-1) == "?");
}

TEST_CASE("time limit computation") {
  TimeLimitRule r;  // horizon, upper, 1.2, +5 min
  CHECK(compute_time_limit_minutes(r, sample()) == 73);  // ceil((3400*1.2+300)/60)
  r.margin_minutes = 2;
  CHECK(compute_time_limit_minutes(r, sample()) == 70);  // exactly 4200 s: no rounding up
  r.basis = Basis::converge;
  r.use_band = BandUse::none;
  r.safety_factor = 1.5;
  r.margin_minutes = 0;
  CHECK(compute_time_limit_minutes(r, sample()) == 30);
  r.max_minutes = 20;
  CHECK(compute_time_limit_minutes(r, sample()) == 20);
  Prediction tiny;
  r = TimeLimitRule{};
  r.margin_minutes = 0;
  CHECK(compute_time_limit_minutes(r, tiny) == 1);
}

TEST_CASE("rule matching: first match wins, globs, lists") {
  Policy pol = parse_policy(kPolicy, "p.yaml");
  REQUIRE(pol.rules.size() == 4);
  JobView j;
  j.partitions = {"debug", "a100-big"};
  j.qos = "high";
  CHECK(match_rule(pol, j)->name == "gpu");
  j.qos = "low";
  CHECK(match_rule(pol, j)->name == "rest");
  j.user = "alice";
  CHECK(match_rule(pol, j)->name == "alice");
  j.user = "bob";
  j.account = "physics";
  CHECK(match_rule(pol, j)->name == "strict");
  Policy empty = parse_policy("rules: []\n", "p.yaml");
  CHECK(match_rule(empty, j) == nullptr);
  CHECK(decide(empty, j, sample()).set_time_limit == std::nullopt);
  CHECK(split_list("a,,b,") == std::vector<std::string>{"a", "b"});
}

TEST_CASE("decisions: set, warn, reject") {
  Policy pol = parse_policy(kPolicy, "p.yaml");
  JobView j;
  j.partitions = {"debug"};
  auto d = decide(pol, j, sample());
  REQUIRE(d.set_time_limit);
  CHECK(*d.set_time_limit == 70);
  CHECK(d.user_messages.size() == 1);
  // a user limit is never overridden; far below -> warning
  j.time_limit_minutes = 10;
  d = decide(pol, j, sample());
  CHECK_FALSE(d.set_time_limit);
  CHECK_FALSE(d.reject);
  REQUIRE(d.user_messages.size() == 1);
  CHECK(d.user_messages[0].find("ttpred: warning: your time limit 10m00s is below") == 0);
  // far above (default over_factor 4 x 3400 s)
  j.time_limit_minutes = 60 * 24;
  d = decide(pol, j, sample());
  REQUIRE(d.user_messages.size() == 1);
  CHECK(d.user_messages[0].find("more than 4x") != std::string::npos);
  j.time_limit_minutes = HUGE_VAL;  // UNLIMITED
  d = decide(pol, j, sample());
  REQUIRE(d.user_messages.size() == 1);
  CHECK(d.user_messages[0].find("UNLIMITED") != std::string::npos);
  // within range: silent
  j.time_limit_minutes = 70;
  CHECK(decide(pol, j, sample()).user_messages.empty());
  // alice: no time limit set when missing
  j.user = "alice";
  j.time_limit_minutes.reset();
  d = decide(pol, j, sample());
  CHECK_FALSE(d.set_time_limit);
  CHECK(d.user_messages.empty());
  // strict: reject under, reject over 10x, reject prediction above 60 min
  j.user = "bob";
  j.account = "physics";
  j.time_limit_minutes = 10;
  d = decide(pol, j, sample());
  CHECK(d.reject);
  CHECK(d.user_messages[0].find("ttpred: job rejected") == 0);
  Prediction shortp = sample();
  shortp.horizon_seconds = shortp.horizon_hi = shortp.horizon_lo = 600;
  j.time_limit_minutes = 20;
  CHECK_FALSE(decide(pol, j, shortp).reject);
  j.time_limit_minutes = 200;  // > 10 x 10 min
  CHECK(decide(pol, j, shortp).reject);
  j.time_limit_minutes.reset();
  d = decide(pol, j, sample());  // 3000 s = 50 min < 60: accepted, limit set
  CHECK_FALSE(d.reject);
  Prediction longp = sample();
  longp.horizon_seconds = longp.horizon_hi = 7200;
  d = decide(pol, j, longp);
  CHECK(d.reject);
  CHECK_FALSE(d.set_time_limit);
}

TEST_CASE("policy errors name file, line and key") {
  CHECK(error_of("rules:\n  - name: a\n    match: {partition: x}\n    bogus: 1\n") ==
        "/etc/slurm/ttpred.yaml:4: rules[0].bogus: unknown key (expected one of: budget, match, name, "
        "reject, set_time_limit, time_limit, warn)");
  CHECK(error_of("rules:\n  - time_limit:\n      safety_factor: abc\n")
            .find("/etc/slurm/ttpred.yaml:3: rules[0].time_limit.safety_factor: expected a number") == 0);
  CHECK(error_of("rules:\n  - time_limit: {basis: forever}\n")
            .find(":2: rules[0].time_limit.basis: expected horizon or converge") != std::string::npos);
  CHECK(error_of("rules: [\n").find("/etc/slurm/ttpred.yaml:") == 0);
  CHECK(error_of("rules: 3\n").find(":1: rules: expected a list") != std::string::npos);
  CHECK(error_of("version: 2\n").find(":1: version:") != std::string::npos);
  CHECK(error_of("defaults:\n  warn: {over_factor: 0.5}\n").find(":2: defaults.warn.over_factor") !=
        std::string::npos);
  CHECK(error_of("rules:\n  - match: {partition: []}\n").find("rules[0].match.partition") !=
        std::string::npos);
  CHECK(error_of("").empty());  // empty file: no rules
  CHECK_THROWS_AS(load_policy_file("/nonexistent/ttpred.yaml"), PolicyError);
}

TEST_CASE("policy path selection") {
  CHECK(policy_path("/x/p.yaml", "/etc/slurm/slurm.conf") == "/x/p.yaml");
  CHECK(policy_path(nullptr, "/tmp/c/slurm.conf") == "/tmp/c/ttpred.yaml");
  CHECK(policy_path("", nullptr) == kDefaultPolicyPath);
}

TEST_CASE("shipped example policies parse") {
  for (const char* f : {"default.yaml", "strict.yaml", "gpu-sites.yaml", "budgets.yaml"}) {
    CAPTURE(f);
    CHECK_NOTHROW(load_policy_file(std::string(TTPRED_POLICY_DIR) + "/" + f));
  }
  CHECK_NOTHROW(load_policy_file(TTPRED_TEST_POLICY));
}

TEST_CASE("plugstack.conf arguments") {
  const char* argv[] = {"estimator=/opt/bin/ttpred-estimate", "timeout=12.5", "device=cpu"};
  auto a = parse_spank_args(3, argv);
  CHECK(a.estimator == "/opt/bin/ttpred-estimate");
  CHECK(a.timeout_seconds == 12.5);
  CHECK(a.device == "cpu");
  CHECK(a.problems.empty());
  const char* bad[] = {"estimator=relative", "timeout=-1", "device=tpu", "verbose"};
  a = parse_spank_args(4, bad);
  CHECK(a.problems.size() == 4);
  CHECK(a.timeout_seconds == 60);
  CHECK(a.device == "auto");
}

TEST_CASE("running the estimator: success, failure, garbage, missing") {
  const std::string fake = TTPRED_FAKE_ESTIMATOR;
  const std::string specs = TTPRED_SPEC_DIR;
  auto r = run_with_timeout({fake, "--spec", specs + "/ok.yaml", "--json"}, 60);
  REQUIRE(r.status == RunResult::Status::ok);
  CHECK(prediction_from_json(r.out).horizon_hi == 3400);
  r = run_with_timeout({fake, "--spec", specs + "/fail.yaml", "--json"}, 60);
  CHECK(r.status == RunResult::Status::failed);
  CHECK(r.exit_code == 3);
  CHECK(last_line(r.err).find("fake failure") != std::string::npos);
  r = run_with_timeout({fake, "--spec", specs + "/garbage.yaml", "--json"}, 60);
  CHECK(r.status == RunResult::Status::ok);
  CHECK_THROWS_AS(prediction_from_json(r.out), JsonError);
  r = run_with_timeout({"/nonexistent/ttpred-estimate"}, 60);
  CHECK(r.status == RunResult::Status::exec_error);
  CHECK(r.error.find("No such file") != std::string::npos);
}

// --- budgets (issue 7 part 3) ----------------------------------------------

TEST_CASE("GPUs from the job's TRES request") {
  CHECK(gpus_in_tres("gres:gpu:2") == 2);
  CHECK(gpus_in_tres("gres/gpu:a100:3") == 3);
  CHECK(gpus_in_tres("gres/gpu=4") == 4);
  CHECK(gpus_in_tres("gres:gpu") == 1);
  CHECK(gpus_in_tres("gres:gpu:a100") == 1);
  CHECK(gpus_in_tres("gres:nic:2,gres:gpu:1;gres:gpu:tesla:2") == 3);
  CHECK(gpus_in_tres("gres:gpuish:2") == 0);
  CHECK(gpus_in_tres("gres:gpu:nan") == 1);  // a type name, count defaults to 1
  CHECK(gpus_in_tres("gres:gpu:1e99") == 0);
  CHECK(gpus_in_tres("") == 0);
  TresRequest r;
  r.per_node = "gres:gpu:2";
  r.nodes = 3;
  CHECK(gpus_from_tres(r) == 6);
  r = {};
  r.per_task = "gres:gpu:1";
  r.tasks = 8;
  CHECK(gpus_from_tres(r) == 8);
  r = {};
  r.per_job = "gres:gpu:5";
  r.nodes = 2;
  CHECK(gpus_from_tres(r) == 5);
  CHECK(gpus_from_tres(TresRequest{}) == 0);
}

TEST_CASE("Slurm budgets from the association tree") {
  // root(1) <- physics(3, 600 GPU-min, 120 used) <- physics/alice(6)
  //         <- chem(4) <- chem/alice(5, 120 GPU-min, 30 used)  ; bio/alice: no limit
  std::vector<AssocInfo> a(6);
  a[0].id = 1; a[0].account = "root";
  a[1].id = 3; a[1].parent_id = 1; a[1].account = "physics"; a[1].gpu_limit_minutes = 600;
  a[1].gpu_usage_seconds = 120 * 60;
  a[2].id = 6; a[2].parent_id = 3; a[2].account = "physics"; a[2].user = "alice";
  a[3].id = 4; a[3].parent_id = 1; a[3].account = "chem";
  a[4].id = 5; a[4].parent_id = 4; a[4].account = "chem"; a[4].user = "alice";
  a[4].gpu_limit_minutes = 120; a[4].gpu_usage_seconds = 30 * 60;
  a[5].id = 7; a[5].parent_id = 1; a[5].account = "bio"; a[5].user = "alice";
  auto b = compute_slurm_budgets(a, "alice", "physics");
  REQUIRE(b.size() == 2);
  CHECK(b[0].account == "physics");
  CHECK(b[0].is_default);
  CHECK(b[0].remaining_hours == doctest::Approx(8));
  CHECK(b[0].limit_hours == doctest::Approx(10));
  CHECK(b[0].limited_by == "physics");
  CHECK(b[1].account == "chem");
  CHECK(b[1].remaining_hours == doctest::Approx(1.5));
  CHECK(b[1].limited_by == "chem/alice");
  // the tighter level wins; over-used budgets are 0, not negative
  a[4].gpu_limit_minutes = 6000;
  a[3].gpu_limit_minutes = 60;
  a[3].gpu_usage_seconds = 7200;
  b = compute_slurm_budgets(a, "alice", "bio");
  REQUIRE(b.size() == 3);
  CHECK(b[1].account == "chem");
  CHECK(b[1].remaining_hours == 0);
  CHECK(b[1].limit_hours == doctest::Approx(1));
  CHECK(b[2].account == "bio");
  CHECK(b[2].is_default);
  CHECK(b[2].limit_hours < 0);
  // a parent loop does not hang
  a[1].parent_id = 6;
  CHECK(compute_slurm_budgets(a, "alice", "").size() == 2);

  const std::string s = format_slurm_budgets(b);
  CHECK(s == "physics:8:10:physics,chem:0:1:chem,*bio:0:-1:");
  b[1].limited_by = "chem/alice";
  auto user_level = parse_slurm_budgets(format_slurm_budgets(b));
  REQUIRE(user_level);
  CHECK((*user_level)[1].limited_by == "chem/alice");
  CHECK_FALSE(parse_slurm_budgets("a:1:2:a/b/c"));
  auto back = parse_slurm_budgets(s);
  REQUIRE(back);
  REQUIRE(back->size() == 3);
  CHECK((*back)[0].remaining_hours == 8);
  CHECK((*back)[2].is_default);
  CHECK(find_slurm_budget(*back, "", {"debug"})->account == "bio");
  CHECK(find_slurm_budget(*back, "chem", {"debug"})->limit_hours == 1);
  CHECK(find_slurm_budget(*back, "nope", {"debug"}) == nullptr);
  auto part = parse_slurm_budgets("phys@gpu:1:2:phys,phys:5:6:phys");
  REQUIRE(part);
  CHECK(find_slurm_budget(*part, "phys", {"gpu"})->remaining_hours == 1);
  CHECK(find_slurm_budget(*part, "phys", {"cpu"})->remaining_hours == 5);
}

TEST_CASE("TTPRED_SLURM_BUDGET is validated") {
  std::string why;
  CHECK_FALSE(parse_slurm_budgets("$(reboot):1:2:", &why));
  CHECK(why == "invalid account name");
  CHECK_FALSE(parse_slurm_budgets("a:nan:2:", &why));
  CHECK_FALSE(parse_slurm_budgets("a:1:2", &why));
  CHECK_FALSE(parse_slurm_budgets("a:-5:2:", &why));
  CHECK_FALSE(parse_slurm_budgets(std::string(5000, 'a'), &why));
  std::string many;
  for (int i = 0; i < 65; ++i) many += "a:1:2:,";
  CHECK_FALSE(parse_slurm_budgets(many, &why));
  auto ok = parse_slurm_budgets("a:9:2:");  // remaining clamped to the limit
  REQUIRE(ok);
  CHECK((*ok)[0].remaining_hours == 2);
  CHECK(parse_slurm_budgets("")->empty());
}

TEST_CASE("budget periods and the tally") {
  const std::time_t t = 1700000000;  // Tue 2023-11-14 22:13:20 UTC
  CHECK(period_start(Period::day, t) == 1699920000);
  CHECK(period_start(Period::week, t) == 1699833600);   // Mon 2023-11-13
  CHECK(period_start(Period::month, t) == 1698796800);  // 2023-11-01
  CHECK(period_start(Period::year, t) == 1672531200);
  CHECK(period_start(Period::none, t) == 0);
  BudgetTally tally;
  auto lock = tally.lock();
  tally.charge("a@/month", Period::month, t, 3.5);
  tally.charge("a@/month", Period::month, t + 10, 1.5);
  tally.charge("a@/month", Period::month, t, std::nan(""));
  CHECK(tally.used("a@/month", Period::month, t) == 5);
  CHECK(tally.used("b@/month", Period::month, t) == 0);
  CHECK(tally.used("a@/month", Period::month, t + 40 * 86400) == 0);  // next month
  tally.charge("a@/month", Period::month, t + 40 * 86400, 1);
  CHECK(tally.used("a@/month", Period::month, t + 40 * 86400) == 1);
  CHECK(fmt_hours(3.3333) == "3.33");
  CHECK(fmt_hours(10) == "10");
  CHECK(fmt_hours(0.8333) == "0.833");
  CHECK(fmt_hours(5000) == "5000");
}

TEST_CASE("policy budgets: parsing and decisions") {
  const char* yaml = R"(version: 1
defaults:
  budget: {warn: true}
budgets:
  - {account: physics, gpu_hours: 5000}
  - {account: physics, partition: gpu, gpu_hours: 100, period: week}
rules:
  - name: strict
    match: {partition: strict}
    budget: {reject: true}
  - name: quiet
    match: {partition: quiet}
    budget: false
  - name: rest
)";
  Policy pol = parse_policy(yaml, "b.yaml");
  REQUIRE(pol.budgets.size() == 2);
  CHECK(pol.budgets[1].period == Period::week);
  CHECK(matching_budgets(pol, "physics", {"gpu"}).size() == 2);
  CHECK(matching_budgets(pol, "physics", {"cpu"}).size() == 1);
  CHECK(matching_budgets(pol, "", {"gpu"}).empty());
  CHECK(matching_budgets(pol, "chem", {"gpu"}).empty());

  Prediction p = sample();  // horizon 3000 s
  JobView job;
  job.partitions = {"debug"};
  job.account = "physics";
  job.gpus = 4;
  job.gpus_source = "job request";
  BudgetState slurm{"account physics (Slurm GrpTRESMins)", 10, 10, true};
  BudgetState pb{"account physics (policy budget, this month)", 2, 5000, false};
  auto d = decide(pol, job, p, {slurm});
  // cost = the limit set (73 min) x 4 GPUs, not the prediction
  CHECK(d.cost_gpu_hours == doctest::Approx(73.0 / 60 * 4));
  CHECK(d.limit_minutes == 73);
  REQUIRE(d.user_messages.size() == 2);
  CHECK(d.user_messages[0] == "ttpred: cost 4.87 GPU-hours (4 GPUs from the job request x time limit 1h13m00s); "
                              "account physics (Slurm GrpTRESMins) has 10 of 10 GPU-hours left");
  CHECK(d.set_time_limit);
  d = decide(pol, job, p, {slurm, pb});
  CHECK_FALSE(d.reject);
  REQUIRE(d.user_messages.size() == 3);
  CHECK(d.user_messages[1] == "ttpred: warning: the cost 4.87 GPU-hours exceeds the 2 GPU-hours "
                              "left to account physics (policy budget, this month)");
  job.partitions = {"strict"};
  d = decide(pol, job, p, {slurm, pb});
  CHECK(d.reject);
  CHECK(d.budget_reject);
  CHECK_FALSE(d.set_time_limit);
  CHECK(d.user_messages.back() == "ttpred: job rejected: the cost 4.87 GPU-hours exceeds the 2 "
                                  "GPU-hours left to account physics (policy budget, this month) "
                                  "(policy rule 'strict')");
  job.time_limit_minutes = 40;  // also a time-limit problem: no reject.under here, so still budget
  d = decide(pol, job, p, {pb});
  CHECK(d.budget_reject);
  job.time_limit_minutes = 20;  // 20 min x 4 GPUs = 1.33 GPU-hours: fits
  d = decide(pol, job, p, {pb});
  CHECK_FALSE(d.reject);
  job.time_limit_minutes = HUGE_VAL;  // UNLIMITED: counted as max_minutes (7 days)
  d = decide(pol, job, p, {pb});
  CHECK(d.reject);
  CHECK(d.limit_minutes == 7 * 24 * 60);
  job.time_limit_minutes.reset();
  job.partitions = {"quiet"};
  d = decide(pol, job, p, {slurm, pb});
  CHECK_FALSE(d.reject);
  CHECK(d.user_messages.size() == 1);  // only the time limit
  job.partitions = {"debug"};
  job.gpus = 0;  // no cost: budgets are not mentioned
  d = decide(pol, job, p, {pb});
  CHECK(d.user_messages.size() == 1);
  // slurm: false ignores Slurm's budget
  Policy p2 = parse_policy("rules:\n  - name: r\n    budget: {slurm: false, reject: true}\n", "c.yaml");
  job.gpus = 4;
  d = decide(p2, job, p, {BudgetState{"account physics (Slurm GrpTRESMins)", 0, 10, true}});
  CHECK_FALSE(d.reject);
  CHECK(d.user_messages.size() == 1);

  CHECK(error_of("budgets:\n  - {account: 'phys*', gpu_hours: 1}\n") ==
        "/etc/slurm/ttpred.yaml:2: budgets[0].account: expected an exact name (no globs), got 'phys*'");
  CHECK(error_of("budgets:\n  - {account: a}\n") == "/etc/slurm/ttpred.yaml:2: budgets[0].gpu_hours: missing");
  CHECK(error_of("budgets:\n  - {account: a, gpu_hours: 1, period: fortnight}\n") ==
        "/etc/slurm/ttpred.yaml:2: budgets[0].period: expected day, week, month, year or none, got 'fortnight'");
  CHECK(error_of("budgets:\n  - {account: a, gpu_hours: 1}\n  - {account: a, gpu_hours: 2}\n") ==
        "/etc/slurm/ttpred.yaml:3: budgets[1]: duplicate budget for a");
  CHECK(error_of("rules:\n  - budget: {refuse: true}\n") ==
        "/etc/slurm/ttpred.yaml:2: rules[0].budget.refuse: unknown key (expected one of: reject, show, slurm, warn)");
}

TEST_CASE("GPUs and cost in the JSON, the environment and the summary") {
  Prediction p = prediction_from_json(R"({"seconds": 1200, "horizon_seconds": 3600, "gpus": 8})");
  CHECK(p.gpus == 8);
  CHECK(gpu_hours(p.horizon_seconds, 8) == 8);
  CHECK(summary_line(p).find("; cost 8 GPU-hours (8 GPUs)") != std::string::npos);
  auto env = prediction_to_env(p);
  std::vector<std::string> flat;
  for (const auto& [k, v] : env) flat.push_back(k + "=" + v);
  CHECK(std::find(flat.begin(), flat.end(), "TTPRED_GPUS=8") != flat.end());
  CHECK(std::find(flat.begin(), flat.end(), "TTPRED_GPU_HOURS=8") != flat.end());
  auto back = parse(flat);
  REQUIRE(back.prediction);
  CHECK(back.prediction->gpus == 8);
  auto forged = parse({"TTPRED_HORIZON_SECONDS=60", "TTPRED_GPUS=1e9"});
  REQUIRE(forged.prediction);
  CHECK(forged.prediction->gpus == -1);
  CHECK(forged.problems.size() == 1);
  Prediction none = prediction_from_json(R"({"seconds": 1, "horizon_seconds": 2})");
  CHECK(none.gpus == -1);
  CHECK(summary_line(none).find("cost") == std::string::npos);
}

// --- issue 13: enforcement on what Slurm enforces ----------------------------

namespace {

const char* kTrustPolicy = R"(version: 1
limits: {max_seconds: 864000, exclusive_node_gpus: 8}
defaults:
  time_limit: {basis: horizon, use_band: upper, safety_factor: 1.2, margin_minutes: 2, max_minutes: 1440}
budgets:
  - {account: victim-lab, gpu_hours: 10}
  - {account: mine, gpu_hours: 10}
step_seconds:
  - {partition: gpu, gpu_type: a100, min: 0.05}
  - {partition: gpu, min: 0.1, max: 30}
rules:
  - name: strict
    match: {partition: strict}
    reject: {above_minutes: 60}
    budget: {reject: true}
  - name: rest
    budget: {reject: true}
)";

struct EnvVec {
  std::vector<std::string> v;
  std::vector<const char*> c;
  EnvVec(std::initializer_list<std::string> l) : v(l) { refresh(); }
  void refresh() {
    c.clear();
    for (auto& s : v) c.push_back(s.c_str());
  }
};

SubmitInput input(const EnvVec& e, const char* account = "mine") {
  SubmitInput in;
  in.env = e.c.data();
  in.env_count = e.c.size();
  in.name = "job";
  in.uid = 1000;
  in.default_partition = "debug";
  if (account) in.account = std::string(account);
  in.tres.per_node = "gres:gpu:4";
  in.now = 1700000000;
  return in;
}

}  // namespace

TEST_CASE("checks use the value the limit is computed from (forged wide band)") {
  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  JobView j;
  j.partitions = {"strict"};
  Prediction p;
  p.seconds = p.seconds_lo = p.seconds_hi = 1;
  p.horizon_seconds = p.horizon_lo = 1;
  p.horizon_hi = 864000;  // forged: point 1 s, band up to 10 days
  auto d = decide(pol, j, p);
  CHECK(d.reject);  // the upper band (what the limit would be) exceeds above_minutes
  j.partitions = {"debug"};
  j.gpus = 4;
  d = decide(pol, j, p, {BudgetState{"account mine (policy budget)", 10, 10, false}});
  CHECK(d.limit_minutes == 1440);  // the limit is the clamp of the upper band ...
  CHECK(d.cost_gpu_hours == doctest::Approx(96));  // ... and so is the cost: 24 h x 4 GPUs
  CHECK(d.reject);
  CHECK(d.budget_reject);
}

TEST_CASE("cost = limit x GPUs x array tasks; GPU counting") {
  CHECK(job_cost_gpu_hours(60, 4, 100) == doctest::Approx(400));
  CHECK(job_cost_gpu_hours(60, 0, 100) == 0);
  CHECK(std::isinf(job_cost_gpu_hours(HUGE_VAL, 1, 1)));
  CHECK(array_task_count("0-99") == 100.0);
  CHECK(array_task_count("0-99%5") == 100.0);
  CHECK(array_task_count("1,3,5-9:2") == 5.0);
  CHECK(array_task_count("7") == 1.0);
  CHECK_FALSE(array_task_count("9-1"));
  CHECK_FALSE(array_task_count("a-b"));
  CHECK_FALSE(array_task_count(std::string(5000, '1')));
  TresRequest zero;
  zero.per_node = "gres:gpu:0";
  CHECK(gpus_from_tres(zero) == 0);
  CHECK(tres_mentions_gpu(zero));
  TresRequest typed;
  typed.per_node = "gres:gpu:a100:2";
  CHECK(gpu_type_in_tres(typed) == "a100");
  typed.per_node = "gres:gpu:2";
  CHECK(gpu_type_in_tres(typed).empty());

  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  BudgetTally tally;
  EnvVec e{"SPANK_TTPRED_HORIZON_SECONDS=3000", "SPANK_TTPRED_HORIZON_SECONDS_HI=3400"};
  auto in = input(e);
  in.time_limit_minutes = 60;
  in.array_inx = "0-99";
  in.tres.per_node = "gres:gpu:1";
  auto out = evaluate_submit(&pol, in, tally);
  CHECK(out.rc == SubmitOutput::Rc::reject_budget);  // 100 tasks x 1 GPU x 1 h = 100 > 10
  in.array_inx = "0-4";
  out = evaluate_submit(&pol, in, tally);
  CHECK(out.rc == SubmitOutput::Rc::ok);
  REQUIRE(out.ticket);
  CHECK(out.ticket->cost_gpu_hours == doctest::Approx(5));
  // -N 1-2 counts 2 nodes; gpu:0 is 0 (no fallback to the spec's GPUs)
  in.array_inx.clear();
  in.min_nodes = 1;
  in.max_nodes = 2;
  in.time_limit_minutes = 30;
  out = evaluate_submit(&pol, in, tally);
  REQUIRE(out.ticket);
  CHECK(out.ticket->cost_gpu_hours == doctest::Approx(1));  // 2 nodes x 1 GPU x 0.5 h
  in.tres.per_node = "gres:gpu:0";
  EnvVec e2{"TTPRED_HORIZON_SECONDS=3000", "TTPRED_GPUS=8"};
  in.env = e2.c.data();
  in.env_count = e2.c.size();
  out = evaluate_submit(&pol, in, tally);
  REQUIRE(out.ticket);
  CHECK(out.ticket->cost_gpu_hours == 0);
  // --exclusive: limits.exclusive_node_gpus per node
  in.exclusive = true;
  in.min_nodes = in.max_nodes = 1;
  in.time_limit_minutes = 30;
  out = evaluate_submit(&pol, in, tally);
  REQUIRE(out.ticket);
  CHECK(out.ticket->cost_gpu_hours == doctest::Approx(4));  // 8 GPUs x 0.5 h
}

TEST_CASE("the budget account is the resolved one, never the user's '*' marker") {
  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  BudgetTally tally;
  EnvVec e{"SPANK_TTPRED_HORIZON_SECONDS=600", "SPANK_TTPRED_SLURM_BUDGET=*victim-lab:0:-1:"};
  auto in = input(e, nullptr);  // no --account, default account not resolvable
  in.account_note = "test";
  auto out = evaluate_submit(&pol, in, tally);
  CHECK(out.rc == SubmitOutput::Rc::ok);
  REQUIRE(out.ticket);
  CHECK(out.ticket->charged.empty());
  CHECK(tally.used("victim-lab@/month", Period::month, in.now) == 0);
  // resolved account: charged there, and a forged Slurm budget of another account is not used
  EnvVec e2{"SPANK_TTPRED_HORIZON_SECONDS=600", "SPANK_TTPRED_SLURM_BUDGET=*victim-lab:0:10:"};
  in = input(e2, "mine");
  out = evaluate_submit(&pol, in, tally);
  CHECK(out.rc == SubmitOutput::Rc::ok);
  CHECK(tally.used("mine@/month", Period::month, in.now) > 0);
  CHECK(tally.used("victim-lab@/month", Period::month, in.now) == 0);
  // a job the policy rejects charges nothing
  const double before = tally.used("mine@/month", Period::month, in.now);
  in.time_limit_minutes = 1000;  // 1000 min x 4 GPUs = 66.7 GPU-hours > what is left
  out = evaluate_submit(&pol, in, tally);
  CHECK(out.rc == SubmitOutput::Rc::reject_budget);
  CHECK(tally.used("mine@/month", Period::month, in.now) == before);
}

TEST_CASE("bounded parsing and sanitized output (env flood, control characters)") {
  std::vector<std::string> flood(1000000, "SPANK_TTPRED_SECONDS=x");
  std::vector<const char*> c;
  for (auto& s : flood) c.push_back(s.c_str());
  auto r = parse_env(c.data(), c.size());
  CHECK(r.present);
  CHECK(r.truncated);
  CHECK(r.problems.size() <= kMaxProblems);
  std::string huge = "SPANK_TTPRED_SECONDS=" + std::string(1 << 20, '9');
  const char* one[] = {huge.c_str()};
  r = parse_env(one, 1);
  CHECK_FALSE(r.prediction);
  REQUIRE(r.problems.size() >= 1);
  CHECK(r.problems[0].size() < 200);
  CHECK(sanitize("a\nb\x1b[31m'c\xc3\xa9", 64) == "a?b?[31m'c??");
  CHECK(sanitize(std::string(100, 'x'), 10) == "xxxxxxxxxx...");

  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  BudgetTally tally;
  SubmitInput in;
  in.env = c.data();
  in.env_count = c.size();
  std::string name = "evil\nerror: forged line" + std::string(50000, 'n');
  in.name = name.c_str();
  in.account = std::string("mine");
  auto out = evaluate_submit(&pol, in, tally);
  CHECK(out.log_lines.size() <= kMaxProblems + 2);
  for (const auto& l : out.log_lines) {
    CHECK(l.find('\n') == std::string::npos);
    CHECK(l.size() < 600);
  }
}

TEST_CASE("duplicate policy keys are errors") {
  CHECK(error_of("rules:\n  - name: a\n    name: b\n") ==
        "/etc/slurm/ttpred.yaml:3: rules[0].name: duplicate key (each key may appear once per mapping)");
  CHECK(error_of("limits: {max_seconds: 10, max_seconds: 20}\n").find(":1: limits.max_seconds: duplicate key") !=
        std::string::npos);
  CHECK(error_of("version: 1\nversion: 1\n").find(":2: version: duplicate key") != std::string::npos);
}

TEST_CASE("--time-min without --time") {
  Policy pol = parse_policy(kPolicy, "p.yaml");
  JobView j;
  j.partitions = {"debug"};
  j.time_min_minutes = 120;  // above the 70 min the policy would set
  auto d = decide(pol, j, sample());
  REQUIRE(d.set_time_limit);
  CHECK(*d.set_time_limit == 120);
  j.time_min_minutes = 10;
  d = decide(pol, j, sample());
  CHECK(*d.set_time_limit == 70);
}

TEST_CASE("step_seconds bounds per partition and GPU type") {
  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  REQUIRE(pol.step_bounds.size() == 2);
  Prediction p = sample();  // 1 s/step, 3000 horizon steps
  p.step_seconds = 0.000001;
  p.horizon_seconds = p.horizon_lo = p.horizon_hi = 0.003;
  auto r = apply_step_bounds(pol, {"gpu"}, "", p);
  REQUIRE(r.bound);
  CHECK(p.step_seconds == doctest::Approx(0.1));
  CHECK(p.horizon_seconds == doctest::Approx(300));
  CHECK(r.note.find("outside the policy bound") != std::string::npos);
  p = sample();
  p.step_seconds = 0.01;
  r = apply_step_bounds(pol, {"gpu"}, "a100", p);
  CHECK(p.step_seconds == doctest::Approx(0.05));
  p = sample();  // within bounds: unchanged
  r = apply_step_bounds(pol, {"gpu"}, "", p);
  CHECK(r.factor == 1);
  CHECK(p.horizon_seconds == 3000);
  p.step_seconds = 0;  // no step time: from horizon seconds / steps
  p.horizon_seconds = 3;
  apply_step_bounds(pol, {"gpu"}, "", p);
  CHECK(p.horizon_seconds == doctest::Approx(300));
  p = sample();
  r = apply_step_bounds(pol, {"debug"}, "", p);
  CHECK_FALSE(r.bound);
  CHECK(error_of("step_seconds:\n  - {partition: gpu}\n").find("needs seconds, min or max") != std::string::npos);
  CHECK(error_of("step_seconds:\n  - {min: 2, max: 1}\n").find("min is above max") != std::string::npos);
}

TEST_CASE("job_modify: raising the limit is re-checked against the budget") {
  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  BudgetTally tally;
  EnvVec e{"SPANK_TTPRED_HORIZON_SECONDS=600", "SPANK_TTPRED_STEP_SECONDS=0.000001",
           "SPANK_TTPRED_HORIZON_STEPS=3000"};
  auto in = input(e);
  in.tres.per_node = "gres:gpu:1";
  auto out = evaluate_submit(&pol, in, tally);
  REQUIRE(out.ticket);
  REQUIRE(out.set_time_limit);
  const double charged = tally.used("mine@/month", Period::month, in.now);
  CHECK(charged == doctest::Approx(*out.set_time_limit / 60.0));
  ModifyInput m;
  m.now = in.now;
  m.time_limit_minutes = 1440;  // 24 GPU-hours > the 10 of the budget
  auto mo = evaluate_modify(pol, *out.ticket, m, tally);
  CHECK(mo.rc == ModifyOutput::Rc::reject_budget);
  CHECK(tally.used("mine@/month", Period::month, in.now) == doctest::Approx(charged));
  m.time_limit_minutes = 300;  // 5 GPU-hours: fits; the charge moves
  mo = evaluate_modify(pol, *out.ticket, m, tally);
  CHECK(mo.rc == ModifyOutput::Rc::ok);
  CHECK(tally.used("mine@/month", Period::month, in.now) == doctest::Approx(5));
  // more GPUs on the same limit
  ModifyInput g;
  g.now = in.now;
  TresRequest t;
  t.per_node = "gres:gpu:4";
  g.tres = t;
  auto go = evaluate_modify(pol, mo.ticket, g, tally);
  CHECK(go.rc == ModifyOutput::Rc::reject_budget);  // 4 x 5 h = 20
  // account change: refunded from the old one, charged to the new one
  ModifyInput a;
  a.now = in.now;
  a.account = std::optional<std::string>("victim-lab");
  auto ao = evaluate_modify(pol, mo.ticket, a, tally);
  CHECK(ao.rc == ModifyOutput::Rc::ok);
  CHECK(tally.used("mine@/month", Period::month, in.now) == doctest::Approx(0));
  CHECK(tally.used("victim-lab@/month", Period::month, in.now) == doctest::Approx(5));
  // the ticket is looked up by its exact name (no SPANK_ spelling a user could add first)
  const char* envp[] = {"SPANK_TTPRED_TICKET=forged", "TTPRED_TICKET=real"};
  CHECK(std::string(env_lookup(envp, 2, kEnvTicket, false)) == "real");
  CHECK(std::string(env_lookup(envp, 2, kEnvTicket)) == "forged");
  TicketStore store(2);
  auto k1 = store.add(ao.ticket);
  auto k2 = store.add(ao.ticket);
  auto k3 = store.add(ao.ticket);
  CHECK(k1 != k2);
  CHECK_FALSE(store.get(k1));  // bounded: the oldest is dropped
  CHECK(store.get(k3));
}

TEST_CASE("the runner keeps the child's result when a grandchild holds the pipes") {
  const std::string script = "/tmp/ttpred-test-grandchild.sh";
  {
    std::ofstream f(script);
    f << "#!/bin/sh\n(sleep 30) &\necho '{\"seconds\": 5, \"horizon_seconds\": 9}'\nexit 0\n";
  }
  ::chmod(script.c_str(), 0755);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_with_timeout({script}, 20);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(r.status == RunResult::Status::ok);
  CHECK(dt < 3);
  CHECK(prediction_from_json(r.out).horizon_seconds == 9);
  std::remove(script.c_str());
}

TEST_CASE("job mode: the job waits with the fallback, the report sets the policy's limit once") {
  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  BudgetTally tally;
  EnvVec e{"SPANK_TTPRED_PREDICT_JOB=41"};
  auto in = input(e);
  in.tres.per_node = "gres:gpu:1";
  auto out = evaluate_submit_pending(&pol, in, 41, tally);
  REQUIRE(out.ticket);
  REQUIRE(out.wait_for_job);
  CHECK(*out.wait_for_job == 41);
  REQUIRE(out.set_time_limit);
  CHECK(*out.set_time_limit == 1440);  // the rule's max_minutes until the report
  CHECK(out.comment.find("ttpred: predicting (job 41)") == 0);
  CHECK(out.rc == SubmitOutput::Rc::ok);  // never rejected before the prediction
  CHECK(tally.used("mine@/month", Period::month, in.now) == doctest::Approx(24));
  const std::string json =
      R"({"schema": 1, "seconds": 1200, "seconds_band": [1000, 1500], "horizon_seconds": 3000,)"
      R"( "horizon_seconds_band": [2800, 3400], "steps": 1200, "horizon_steps": 3000, "step_seconds": 1})";
  auto r = evaluate_report(pol, *out.ticket, kReportResult + json, in.now, tally);
  CHECK(r.rc == ReportOutput::Rc::ok);
  REQUIRE(r.set_time_limit);
  CHECK(*r.set_time_limit == 70);  // ceil((3400 * 1.2 + 120) / 60)
  CHECK(r.comment.find("ttpred: 70 min (predicted horizon 50m00s, 5-95%: 46m40s-56m40s") == 0);
  CHECK_FALSE(r.ticket.awaiting);
  CHECK(tally.used("mine@/month", Period::month, in.now) == doctest::Approx(70 / 60.0));  // charge moved
  // one report only: a second one (e.g. by the user, by hand) is refused
  auto again = evaluate_report(pol, r.ticket, kReportResult + json, in.now, tally);
  CHECK(again.rc == ReportOutput::Rc::not_awaited);
  // after the report, updates are re-checked against the prediction as usual
  ModifyInput m;
  m.now = in.now;
  m.time_limit_minutes = 1440;
  CHECK(evaluate_modify(pol, r.ticket, m, tally).rc == ModifyOutput::Rc::reject_budget);
}

TEST_CASE("job mode: failed, forged and garbage reports keep the fallback") {
  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  BudgetTally tally;
  EnvVec e{"SPANK_TTPRED_PREDICT_JOB=7"};
  auto in = input(e);
  in.tres.per_node = "gres:gpu:0";  // no budget in the way of the user-limit case below
  auto out = evaluate_submit_pending(&pol, in, 7, tally);
  REQUIRE(out.ticket);
  auto f = evaluate_report(pol, *out.ticket, std::string(kReportFailed) + "estimator exit 3: boom\n", in.now, tally);
  CHECK(f.rc == ReportOutput::Rc::ok);
  CHECK_FALSE(f.set_time_limit);
  CHECK(f.comment == "ttpred: no prediction (estimator exit 3: boom?); time limit 1440 min (policy fallback)");
  auto forged = evaluate_report(pol, *out.ticket,
                                std::string(kReportResult) + R"({"seconds": 1e15, "horizon_seconds": 1e15})",
                                in.now, tally);
  CHECK_FALSE(forged.set_time_limit);  // above limits.max_seconds: ignored
  CHECK(forged.comment.find("invalid prediction values") != std::string::npos);
  auto garbage = evaluate_report(pol, *out.ticket, std::string(kReportResult) + "{not json", in.now, tally);
  CHECK_FALSE(garbage.set_time_limit);
  CHECK(garbage.comment.find("ttpred: no prediction (invalid prediction") == 0);
  auto huge = evaluate_report(pol, *out.ticket, std::string(kReportResult) + std::string(70000, ' '), in.now, tally);
  CHECK(huge.comment.find("larger than") != std::string::npos);
  CHECK(evaluate_report(pol, *out.ticket, "other", in.now, tally).rc == ReportOutput::Rc::bad);
  // a limit the user sets while the prediction runs is theirs: the report only checks it
  ModifyInput m;
  m.now = in.now;
  m.time_limit_minutes = 600;
  auto mo = evaluate_modify(pol, *out.ticket, m, tally);
  CHECK(mo.rc == ModifyOutput::Rc::ok);
  CHECK(mo.ticket.awaiting);
  auto r = evaluate_report(pol, mo.ticket,
                           std::string(kReportResult) + R"({"seconds": 100, "horizon_seconds": 120})", in.now, tally);
  CHECK_FALSE(r.set_time_limit);
  CHECK(r.comment.find("time limit 600 min (yours)") != std::string::npos);
  CHECK(r.comment.find("warning: your time limit") != std::string::npos);  // > 4x the prediction
}

TEST_CASE("plugstack.conf: job mode arguments") {
  const char* argv[] = {"mode=job", "partition=gpu", "account=ops", "qos=high", "gres=gpu:1",
                        "predictor=/opt/ttpred-predict-job", "output=/tmp/p-%j.out", "cache_dir=/shared/c"};
  auto a = parse_spank_args(8, argv);
  CHECK(a.problems.empty());
  CHECK(a.job_mode);
  CHECK(a.partition == "gpu");
  CHECK(a.gres == "gpu:1");
  CHECK(a.predictor == "/opt/ttpred-predict-job");
  CHECK(a.cache_dir == "/shared/c");
  CHECK_FALSE(a.follow_job);
  const char* follow[] = {"mode=job", "follow_job=yes"};
  CHECK(parse_spank_args(2, follow).follow_job);
  const char* bad[] = {"mode=async", "partition=a b", "predictor=rel", "qos='x", "follow_job=maybe"};
  a = parse_spank_args(5, bad);
  CHECK(a.problems.size() == 5);
  CHECK_FALSE(a.follow_job);
  CHECK_FALSE(a.job_mode);
  CHECK(a.partition.empty());
}

TEST_CASE("job mode: an exhausted budget refuses the job at submission") {
  Policy pol = parse_policy(kTrustPolicy, "t.yaml");
  BudgetTally tally;
  EnvVec e{"SPANK_TTPRED_PREDICT_JOB=9"};
  auto in = input(e);
  in.tres.per_node = "gres:gpu:1";
  {
    auto lock = tally.lock();
    tally.charge("mine@/month", Period::month, in.now, 9.99);  // 0.01 GPU-hours left
  }
  auto out = evaluate_submit_pending(&pol, in, 9, tally);
  CHECK(out.rc == SubmitOutput::Rc::reject_budget);  // even 1 min x 1 GPU does not fit
  CHECK_FALSE(out.ticket);
  CHECK_FALSE(out.wait_for_job);
  CHECK(tally.used("mine@/month", Period::month, in.now) == doctest::Approx(9.99));  // nothing charged
  {
    auto lock = tally.lock();
    tally.refund("mine@/month", Period::month, in.now, 9.0);  // 1 GPU-hour left: a short job may fit
  }
  out = evaluate_submit_pending(&pol, in, 9, tally);
  CHECK(out.rc == SubmitOutput::Rc::ok);
  CHECK(out.ticket);
}

namespace {
const char* kTablePolicy = R"(version: 1
defaults:
  time_limit: {basis: horizon, use_band: upper, safety_factor: 1.0, margin_minutes: 0, max_minutes: 1440}
step_seconds:
  - {partition: gpu, gpu_type: a100, model: "resnet18*.pt", seconds: 0.25, min: 0.1, max: 2}
  - {partition: gpu, gpu_type: a100, seconds: 0.5}
  - {partition: gpu, min: 0.1, max: 30}
rules:
  - name: all
)";
}  // namespace

TEST_CASE("step_seconds table: the policy's step time per partition, GPU type and model replaces one measured on the submit host") {
  Policy pol = parse_policy(kTablePolicy, "t.yaml");
  REQUIRE(pol.step_bounds.size() == 3);
  CHECK(pol.step_bounds[0].seconds == 0.25);
  REQUIRE(pol.step_bounds[0].model.size() == 1);
  // Measured on the submit host: the table's value for this model and GPU type.
  Prediction p = sample();  // 1 s/step, 3000 horizon steps
  p.step_source = "measured";
  p.model = "resnet18-cifar.pt";
  auto r = apply_step_bounds(pol, {"gpu"}, "a100", p);
  REQUIRE(r.bound == &pol.step_bounds[0]);
  CHECK(p.step_seconds == doctest::Approx(0.25));
  CHECK(p.horizon_seconds == doctest::Approx(750));
  CHECK(p.horizon_hi == doctest::Approx(850));
  CHECK(r.source.find("from the policy's step_seconds table (line 5") != std::string::npos);
  CHECK(r.source.find("measured by the estimator on the submit host not used") != std::string::npos);
  CHECK(r.note.find("step time from the policy table (line 5)") == 0);
  // Another model: the GPU type's entry.
  p = sample();
  p.step_source = "measured";
  p.model = "vit.pt";
  r = apply_step_bounds(pol, {"gpu"}, "a100", p);
  REQUIRE(r.bound == &pol.step_bounds[1]);
  CHECK(p.step_seconds == doctest::Approx(0.5));
  // The user's hardware.step_seconds: kept, only bounded (min 0.1 of the first entry).
  p = sample();
  p.step_source = "spec";
  p.step_seconds = 0.01;
  p.model = "resnet18.pt";
  r = apply_step_bounds(pol, {"gpu"}, "a100", p);
  CHECK(p.step_seconds == doctest::Approx(0.1));
  CHECK(r.source.find("from the spec's hardware.step_seconds") != std::string::npos);
  // Timed on the node (job mode): kept within the bounds.
  p = sample();
  p.step_source = "node";
  p.model = "resnet18.pt";
  r = apply_step_bounds(pol, {"gpu"}, "a100", p);
  CHECK(r.factor == 1);
  CHECK(p.step_seconds == 1);
  CHECK(r.source.find("timed on the prediction job's node") != std::string::npos);
  // Untyped GPU: the bounds-only entry.
  p = sample();
  p.step_source = "measured";
  r = apply_step_bounds(pol, {"gpu"}, "", p);
  REQUIRE(r.bound == &pol.step_bounds[2]);
  CHECK(r.factor == 1);
  CHECK(error_of("step_seconds:\n  - {partition: gpu, seconds: 3, max: 2}\n").find("seconds is outside [min, max]") !=
        std::string::npos);
  CHECK(error_of("step_seconds:\n  - {partition: gpu, seconds: 0}\n").find("step_seconds[0].seconds") !=
        std::string::npos);
}

TEST_CASE("step source and model name travel from the estimator's JSON through the job environment") {
  const std::string json =
      R"({"schema": 1, "seconds": 1200, "horizon_seconds": 3000, "steps": 1200, "horizon_steps": 3000,)"
      R"( "step_seconds": 1, "step_seconds_source": "measured", "model": {"path": "/home/u/nets/resnet18.pt"}})";
  const Prediction p = prediction_from_json(json);
  CHECK(p.step_source == "measured");
  CHECK(p.model == "resnet18.pt");
  std::vector<std::string> env;
  for (const auto& [k, v] : prediction_to_env(p)) env.push_back("SPANK_" + k + "=" + v);
  auto e = parse(env);
  REQUIRE(e.prediction);
  CHECK(e.prediction->step_source == "measured");
  CHECK(e.prediction->model == "resnet18.pt");
  CHECK(e.problems.empty());
  // Forged values are ignored with a problem line; "node" is only set by a job-mode report.
  auto f = parse({"SPANK_TTPRED_HORIZON_SECONDS=600", "SPANK_TTPRED_STEP_SOURCE=node", "SPANK_TTPRED_MODEL=../x y"});
  REQUIRE(f.prediction);
  CHECK(f.prediction->step_source.empty());
  CHECK(f.prediction->model.empty());
  CHECK(f.problems.size() == 2);
  // A sync-mode submission: the source is in the sbatch message and the job's comment.
  Policy pol = parse_policy(kTablePolicy, "t.yaml");
  BudgetTally tally;
  EnvVec ev{"SPANK_TTPRED_HORIZON_SECONDS=3000", "SPANK_TTPRED_STEP_SECONDS=1", "SPANK_TTPRED_HORIZON_STEPS=3000",
            "SPANK_TTPRED_STEP_SOURCE=measured", "SPANK_TTPRED_MODEL=resnet18.pt"};
  auto in = input(ev);
  in.default_partition = "gpu";
  in.tres.per_node = "gres:gpu:a100:1";
  auto out = evaluate_submit(&pol, in, tally);
  REQUIRE(out.set_time_limit);
  CHECK(*out.set_time_limit == 13);  // 3000 steps x 0.25 s = 750 s
  CHECK(out.comment.find("ttpred: 13 min (rule 'all'); step 0.25 s from the policy's step_seconds table") == 0);
  bool shown = false;
  for (const auto& m : out.user_messages) shown |= m.find("ttpred: step 0.25 s from the policy's step_seconds table") == 0;
  CHECK(shown);
  // Job mode: the report's measured step time was timed on the node, and is kept.
  EnvVec pj{"SPANK_TTPRED_PREDICT_JOB=41"};
  auto pin = input(pj);
  pin.default_partition = "gpu";
  pin.tres.per_node = "gres:gpu:a100:1";
  auto pending = evaluate_submit_pending(&pol, pin, 41, tally);
  REQUIRE(pending.ticket);
  auto rep = evaluate_report(pol, *pending.ticket, kReportResult + json, pin.now, tally);
  REQUIRE(rep.set_time_limit);
  CHECK(*rep.set_time_limit == 50);  // 3000 steps x 1 s
  CHECK(rep.comment.find("step 1 s timed on the prediction job's node") != std::string::npos);
}
