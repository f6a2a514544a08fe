// Unit tests of the pure C++ part of the Slurm integration (plugin/common):
// policy parsing and matching, time-limit computation, validation of the
// untrusted spank_job_env values, estimator JSON and plugstack arguments.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "estimator.hpp"
#include "policy.hpp"
#include "prediction.hpp"

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
        "/etc/slurm/ttpred.yaml:4: rules[0].bogus: unknown key (expected one of: match, name, "
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
  for (const char* f : {"default.yaml", "strict.yaml", "gpu-sites.yaml"}) {
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
