// engine.max_seconds (budget_choice.cpp): the N0 chosen from a cost model
// measured on a real TorchScript model and real data. The assertions are on the
// chosen values and the error, never on timings.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "stages.hpp"
#include "ttpred/error.hpp"
#include "ttpred/estimate.hpp"

using namespace ttpred;

namespace {

Spec budget_spec(const std::string& engine_extra) {
  std::string y = "model: mlp.pt\n"
                  "data:\n  path: vec_train.pt\n"
                  "loss: cross_entropy\n"
                  "optimizer:\n  lr: 0.1\n  momentum: 0.9\n  batch_size: 8\n"
                  "training:\n  epochs: 5\n"
                  "target:\n  epsilon: 0.01\n"
                  "engine:\n  runs: 6\n  seed: 1\n" +
                  engine_extra + "hardware:\n  step_seconds: 0.25\n";
  return parse_spec(y, "budget.yaml", TEST_MODELS);
}

}  // namespace

TEST_CASE("engine.max_seconds is read and checked") {
  CHECK(budget_spec("").max_seconds == 0);
  CHECK(budget_spec("  max_seconds: 90\n").max_seconds == 90);
  try {
    budget_spec("  max_seconds: 0\n");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Exit::spec);
    CHECK(std::string(e.what()).find("engine.max_seconds") != std::string::npos);
  }
}

TEST_CASE("the cost model measured on a real model: more N0 costs more; a tight budget gives a smaller N0") {
  const Spec s = budget_spec("  max_seconds: 1000\n");
  Model model(s.model, s.device);
  const Dataset d = load_dataset(s);
  const int64_t C = model.num_classes(d);
  const CostModel cm = measure_costs(model, d, {s}, C, d.n, 0.0);
  CHECK(cm.jacobian_per_sample > 0);
  CHECK(cm.step > 0);
  CHECK(cm.elapsed >= cm.probe_seconds);
  double last = 0;
  for (int64_t n : {8, 16, 32, 64}) {
    const double t = predicted_seconds(cm, {s}, d.n, n);
    CHECK(t > last);
    last = t;
  }
  // A budget that the cost model says holds N0 = 40 at most, but not 64.
  Spec tight = s;
  tight.max_seconds = predicted_seconds(cm, {s}, d.n, 40);
  const BudgetChoice c = choose_n0(cm, {tight}, d.n, 64, 16);
  CHECK(c.fits);
  CHECK(c.subset == 40);
  CHECK(c.predicted <= tight.max_seconds);
  // Room for all of it: the N0 asked for, never more.
  tight.max_seconds = 10 * predicted_seconds(cm, {s}, d.n, 64);
  CHECK(choose_n0(cm, {tight}, d.n, 64, 16).subset == 64);
  // Not even the smallest.
  tight.max_seconds = 0.5 * predicted_seconds(cm, {s}, d.n, 16);
  CHECK_FALSE(choose_n0(cm, {tight}, d.n, 64, 16).fits);
}

TEST_CASE("estimate with engine.max_seconds: the same prediction when it fits, an error at once when it cannot") {
  const Prediction plain = estimate(budget_spec(""));
  CHECK(plain.budget.max_seconds == 0);
  CHECK(nlohmann::json::parse(to_json(plain))["budget"].is_null());
  const Prediction roomy = estimate(budget_spec("  max_seconds: 100000\n"));
  CHECK(roomy.subset == plain.subset);
  CHECK(roomy.steps == plain.steps);
  CHECK(roomy.steps_lo == plain.steps_lo);
  CHECK(roomy.steps_hi == plain.steps_hi);
  CHECK(roomy.budget.subset == plain.subset);
  CHECK(roomy.budget.requested == plain.subset);
  auto j = nlohmann::json::parse(to_json(roomy));
  CHECK(j["budget"]["max_seconds"] == 100000.0);
  CHECK(j["budget"]["subset"] == plain.subset);
  CHECK(j["budget"]["predicted_seconds"].get<double>() > 0);
  try {
    estimate(budget_spec("  max_seconds: 0.000001\n"));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Exit::budget);
    const std::string m = e.what();
    CHECK(m.find("budget.yaml:") == 0);
    CHECK(m.find("engine.max_seconds") != std::string::npos);
    CHECK(m.find("cannot fit") != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  }
}

namespace {

// A cost model with round numbers (no timing): what pick_kernel decides from.
CostModel synthetic(double jacobian_per_sample) {
  CostModel cm;
  cm.jacobian_per_sample = jacobian_per_sample;
  cm.gram_per_flop = 1e-9;
  cm.step = 1e-3;
  cm.step_batch = 8;
  cm.sim_per_unit = 1e-9;
  cm.eig_per_flop = 1e-9;
  cm.params = 1000;
  cm.classes = 3;
  return cm;
}

}  // namespace

TEST_CASE("the budget chooses the Θ method too: the trace-NTK only when the spec leaves it and it fits more") {
  const Spec s = budget_spec("");
  const CostModel own = synthetic(1e-2), trace = synthetic(1e-4);  // the trace-NTK's Jacobian 100x cheaper
  const int64_t N = 64, requested = 48;
  const double own_cost = predicted_seconds(own, {s}, N, requested);
  Spec tr = s;
  tr.trace_ntk = 2;
  const double trace_cost = predicted_seconds(trace, {tr}, N, requested);
  REQUIRE(trace_cost < own_cost);
  // Room for the exact Θ at the N0 asked for: the spec's own method.
  Spec roomy = s;
  roomy.max_seconds = 2 * own_cost;
  BudgetChoice c = pick_kernel(own, &trace, {roomy}, N, requested, 16);
  CHECK(c.fits);
  CHECK(c.subset == requested);
  CHECK_FALSE(c.kernel_changed);
  CHECK(c.trace_ntk == 0);
  // Room for the N0 asked for only with the trace-NTK: it is taken and said.
  Spec tight = s;
  tight.max_seconds = 0.5 * (trace_cost + own_cost);
  c = pick_kernel(own, &trace, {tight}, N, requested, 16);
  CHECK(c.fits);
  CHECK(c.subset == requested);
  CHECK(c.kernel_changed);
  CHECK(c.trace_ntk == 2);
  CHECK(c.predicted <= tight.max_seconds);
  const BudgetChoice exact_only = pick_kernel(own, nullptr, {tight}, N, requested, 16);
  INFO("the exact Θ alone fits N0 = " << exact_only.subset);
  CHECK(1.25 * double(exact_only.subset) <= double(requested));
  CHECK_FALSE(exact_only.kernel_changed);
  // A cheaper Θ that gains little N0 (below the cost model's margin) is not worth the approximation.
  const CostModel barely = synthetic(0.95e-2);
  c = pick_kernel(own, &barely, {tight}, N, requested, 16);
  CHECK_FALSE(c.kernel_changed);
  // The spec chose its Θ: never changed.
  for (const char* extra : {"  projection: exact\n", "  trace_ntk: 1\n", "  projection_dim: 4096\n"}) {
    CAPTURE(extra);
    Spec own_choice = budget_spec(extra);
    own_choice.max_seconds = tight.max_seconds;
    c = pick_kernel(own, &trace, {own_choice}, N, requested, 16);
    CHECK_FALSE(c.kernel_changed);
    CHECK(c.trace_ntk == own_choice.trace_ntk);
  }
}
