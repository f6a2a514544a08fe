// The whole pipeline (estimate()) on small real models: consistency of the
// prediction, targets, bands, subsets, and the JSON report.
#include <doctest/doctest.h>

#include <cmath>

#include <algorithm>
#include <map>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "ttpred/error.hpp"
#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/estimate.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"

#include "stages.hpp"

using namespace ttpred;

namespace {

Spec small_spec(const std::string& extra_target = "target:\n  epsilon: 0.01\n") {
  const std::string dir = TEST_MODELS;
  std::string y = "model: mlp.pt\n"
                  "data:\n  path: vec_train.pt\n"
                  "loss: cross_entropy\n"
                  "optimizer:\n  lr: 0.1\n  momentum: 0.9\n  batch_size: 8\n"
                  "training:\n  epochs: 5\n" +
                  extra_target +
                  "engine:\n  runs: 6\n  seed: 1\n"
                  "hardware:\n  step_seconds: 0.25\n";
  return parse_spec(y, "small.yaml", dir);
}

}  // namespace

TEST_CASE("estimate on a small MLP: a consistent prediction") {
  Prediction p = estimate(small_spec());
  CHECK(p.classes == 3);
  CHECK(p.size == 64);
  CHECK(p.subset == 64);
  CHECK(p.steps_per_epoch == 8);
  CHECK(p.horizon == 40);
  CHECK(p.steps >= 0);
  CHECK(p.steps <= p.horizon);
  CHECK(p.steps_lo <= p.steps);
  CHECK(p.steps <= p.steps_hi);
  CHECK(p.reached);
  CHECK(p.final_loss < p.initial_loss);
  CHECK(p.final_lo <= p.final_hi);
  CHECK(p.step_source == "spec");
  CHECK(p.step_seconds == 0.25);
  CHECK(p.curve_step.front() == 0);
  CHECK(p.curve_step.back() == 40);
  CHECK(p.curve_loss.front() == doctest::Approx(p.initial_loss));
  CHECK(p.gram_method == "exact");
  // Deterministic for a seed.
  Prediction q = estimate(small_spec());
  CHECK(q.steps == p.steps);
  CHECK(q.curve_loss == p.curve_loss);

  auto j = nlohmann::json::parse(to_json(p));
  CHECK(j["schema"] == 1);
  CHECK(j["steps"] == p.steps);
  CHECK(j["seconds"].get<double>() == doctest::Approx(0.25 * double(p.steps)));
  CHECK(j["horizon_seconds"].get<double>() == doctest::Approx(10.0));
  CHECK(j["curve"].size() == p.curve_step.size());
  CHECK(to_table(p).find("wall-clock") != std::string::npos);
}

TEST_CASE("loss and accuracy targets, reached or not") {
  Prediction a = estimate(small_spec("target:\n  accuracy: 0.5\n"));
  CHECK(a.reached);
  CHECK(a.steps < a.horizon);
  Prediction b = estimate(small_spec("target:\n  loss: 0.0\n"));
  CHECK_FALSE(b.reached);
  CHECK(b.steps == b.horizon);
  bool warned = false;
  for (const auto& w : b.warnings) warned |= w.find("not reached") != std::string::npos;
  CHECK(warned);
}

TEST_CASE("a subset of the data, and a dataset larger than the file") {
  Spec s = small_spec();
  s.data.subset = 24;
  s.data.size = 200;
  Prediction p = estimate(s);
  CHECK(p.subset == 24);
  CHECK(p.size == 200);
  CHECK(p.available == 64);
  CHECK(p.steps_per_epoch == 25);
  CHECK(p.horizon == 125);
  CHECK(p.gram_rows == 72);
  // Θ on 24 samples is extrapolated to N = 200 (the self-check needs N0/2 >= 32: none here).
  CHECK(p.extrapolated);
  CHECK(p.shared_modes > 0);
  CHECK(p.shared_modes <= double(p.gram_rows));
  CHECK(p.check_from == 0);
  bool larger = false;
  for (const auto& w : p.warnings) larger |= w.find("exceeds the 64 samples") != std::string::npos;
  CHECK(larger);
  // With engine.extrapolate: false, the prediction is the subset's, with a warning; it is faster.
  Spec off = s;
  off.extrapolate = false;
  Prediction q = estimate(off);
  CHECK_FALSE(q.extrapolated);
  bool warned = false;
  for (const auto& w : q.warnings) warned |= w.find("not extrapolated") != std::string::npos;
  CHECK(warned);
  CHECK(q.final_loss < p.final_loss);
  // N0 = 64 of N = 200: the self-check runs from 32 of them, and widens the band
  // by its error grown with ln(N/N0)/ln(N0/N1).
  Spec all = s;
  all.data.subset = 64;
  Prediction r = estimate(all);
  CHECK(r.extrapolated);
  CHECK(r.relinearized_at > 0);
  CHECK(r.check_from == 32);
  CHECK(r.check_direct > 0);
  CHECK(r.check_error == doctest::Approx(std::fabs(double(r.check_steps - r.check_direct)) / r.check_direct));
  CHECK(r.extrapolation_width == doctest::Approx(std::min(1.0, r.check_error * std::log(200.0 / 64) / std::log(2.0))));
  CHECK(r.steps_lo <= int64_t(std::floor(r.steps * (1 - r.extrapolation_width))) + 1);
  CHECK(r.steps_lo <= r.steps);
  CHECK(r.steps <= r.steps_hi);
  s.data.subset = 100;  // more than the file holds
  CHECK_THROWS_AS(estimate(s), Error);
}

TEST_CASE("progress: every phase reports, in order within it, and ends at its total") {
  // N0 = 64 of N = 200, re-linearized: every phase the CLI shows on a TTY.
  Spec s = small_spec();
  s.data.size = 200;
  s.data.subset = 64;
  s.epochs = 2;
  s.prefix_runs = 2;  // one "sgd steps" phase over both real prefixes
  std::vector<std::string> order;                 // phases in the order they start
  std::map<std::string, std::pair<int64_t, int64_t>> last;  // last (done, total) per phase
  bool monotone = true;
  EstimateOptions opt;
  opt.progress = [&](const char* phase, int64_t done, int64_t total) {
    const std::string p = phase;
    auto it = last.find(p);
    // A phase that comes back after another one is a new pass (Θ at w_K, the simulation from w_K).
    if (order.empty() || order.back() != p) order.push_back(p), it = last.end();
    if (it != last.end() && order.back() == p && it->second.second == total && done < it->second.first) {
      MESSAGE("phase " << p << " went back from " << it->second.first << " to " << done << " of " << total);
      monotone = false;
    }
    last[p] = {done, total};
  };
  Prediction pr = estimate(s, opt);
  CHECK(pr.extrapolated);
  CHECK(pr.check_from > 0);  // the self-check ran
  for (const char* want : {"load", "jacobian", "sgd steps", "extrapolate", "simulate", "self-check"}) {
    CAPTURE(want);
    REQUIRE(last.count(want));
    CHECK(last[want].first == last[want].second);
  }
  CHECK(monotone);
  CHECK(order.front() == "load");
}

TEST_CASE("full batch: one deterministic run; the band is the method's measured error alone") {
  Spec s = small_spec();
  s.batch_size = 64;
  Prediction p = estimate(s);
  CHECK(p.steps_per_epoch == 1);
  // No SGD noise: the band is T times the method's error factors (band.cpp), the top within the horizon.
  CHECK(p.method_lo < 1);
  CHECK(p.method_hi > 1);
  CHECK(p.steps_lo == int64_t(std::floor(double(p.steps) * p.method_lo)));
  CHECK(p.steps_hi == std::min(p.horizon, int64_t(std::ceil(double(p.steps) * p.method_hi))));
}

TEST_CASE("a sweep: one Gram matrix, each row equal to the single-configuration prediction") {
  Spec s = small_spec();
  s.sweep = {{"lr", {0.05, 0.2}}, {"batch_size", {8, 16}}, {"data.size", {48, 64}}};
  std::vector<Spec> all = expand_sweep(s);
  REQUIRE(all.size() == 8);
  std::vector<Prediction> rows = estimate_all(all);
  REQUIRE(rows.size() == 8);
  int grams = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    CAPTURE(i);
    Prediction one = estimate(all[i]);
    CHECK(rows[i].steps == one.steps);
    CHECK(rows[i].steps_lo == one.steps_lo);
    CHECK(rows[i].steps_hi == one.steps_hi);
    CHECK(rows[i].horizon == one.horizon);
    CHECK(rows[i].curve_loss == one.curve_loss);
    CHECK(rows[i].final_loss == one.final_loss);
    for (const auto& [k, v] : rows[i].timing)
      if (k == "jacobian" && v > 0) ++grams;
  }
  CHECK(grams == 2);  // one per distinct N (48, 64)
  CHECK(rows[0].spec.lr == 0.05);
  CHECK(rows[7].spec.lr == 0.2);
  auto j = nlohmann::json::parse(sweep_json(rows, 1.0));
  CHECK(j["runs"].size() == 8);
  double total = 0;
  for (const auto& r : j["runs"]) total += r["gpu_hours"].get<double>();
  CHECK(j["total_gpu_hours"].get<double>() == doctest::Approx(total));
  CHECK(j["runs"][3]["batch_size"] == 16);
  const std::string csv = sweep_csv(rows);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 9);
  const std::string svg = curves_svg(rows);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(std::count(svg.begin(), svg.end(), 'p') > 8);
  CHECK(sweep_table(rows, 1.0).find("GPU-h") != std::string::npos);
}

TEST_CASE("a sweep's shared kernel: Θ at w_K once, from the spec's own values; each row = its single prediction") {
  Spec s = small_spec();
  s.data.size = 200;
  s.data.subset = 64;  // extrapolated to N: the shared Θ' too
  s.epochs = 2;
  s.sweep = {{"lr", {0.05, 0.1}}, {"batch_size", {8, 16}}};
  std::vector<Spec> all = expand_sweep(s);
  REQUIRE(all.size() == 4);
  std::vector<Prediction> rows = estimate_all(all);
  for (size_t i = 0; i < rows.size(); ++i) {
    CAPTURE(i);
    CHECK(rows[i].relinearized_at > 0);
    CHECK(rows[i].extrapolated);
    // Row 2 (lr 0.1, batch 8) is the spec's own configuration: its own kernel.
    const bool own = all[i].lr == 0.1 && all[i].batch_size == 8;
    CHECK((rows[i].relinearized_with_steps == 0) == own);
    Prediction one = estimate(all[i]);  // a single spec with the same engine.relinearize_with
    CHECK(rows[i].steps == one.steps);
    CHECK(rows[i].steps_lo == one.steps_lo);
    CHECK(rows[i].steps_hi == one.steps_hi);
    CHECK(rows[i].curve_loss == one.curve_loss);
    CHECK(rows[i].relinearized_with_steps == one.relinearized_with_steps);
  }
  // Anchored at lr 0.1, batch 8: K = round(0.5 x 2 epochs x 25 steps) = 25 steps.
  CHECK(rows[0].relinearized_with_steps == 25);
  auto j = nlohmann::json::parse(to_json(rows[0]));
  CHECK(j["relinearized_with"]["lr"] == 0.1);
  CHECK(j["relinearized_with"]["batch_size"] == 8);
  CHECK(j["relinearized_with"]["steps"] == 25);
  CHECK(nlohmann::json::parse(to_json(rows[2]))["relinearized_with"].is_null());
  CHECK(to_table(rows[0]).find("engine.relinearize_with") != std::string::npos);
  CHECK(sweep_table(rows, 1.0).find("shared kernel") != std::string::npos);
  // engine.sweep_kernel: each: the plain single predictions, own kernel everywhere.
  s.sweep_kernel_shared = false;
  std::vector<Spec> each = expand_sweep(s);
  std::vector<Prediction> plain = estimate_all(each);
  for (size_t i = 0; i < plain.size(); ++i) {
    CAPTURE(i);
    CHECK(plain[i].relinearized_with_steps == 0);
    Spec alone = each[i];
    CHECK(plain[i].steps == estimate(alone).steps);
  }
  CHECK(plain[2].steps == rows[2].steps);  // the spec's own row is the same either way
}

TEST_CASE("engine.relinearize_with whose real steps diverge: no re-linearization, a pure prediction") {
  const std::string dir = TEST_MODELS;
  std::string y = "model: mlp.pt\ndata:\n  path: vec_mse.pt\nloss: mse\n"
                  "optimizer:\n  lr: 0.05\n  batch_size: 8\ntraining:\n  steps: 40\n"
                  "target:\n  epsilon: 0.01\nengine:\n  runs: 4\n  relinearize_with:\n    lr: 100000\n"
                  "hardware:\n  step_seconds: 0.1\n";
  Spec s = parse_spec(y, "div.yaml", dir);
  Prediction p = estimate(s);
  CHECK(p.relinearized_at == 0);
  CHECK(p.relinearized_with_steps == 0);
  CHECK(p.drift_steps > 0);  // its own real steps ran (the diagnosis)
  CHECK_FALSE(p.diverged);
  CHECK(p.curve_step.back() == 40);
  // In a sweep, every row falls back the same way (the failed kernel is not retried).
  s.relinearize_with.set = false;
  s.lr = 100000;
  s.sweep = {{"lr", {0.05, 0.02}}};
  std::vector<Prediction> rows = estimate_all(expand_sweep(s));
  for (const auto& r : rows) CHECK(r.relinearized_at == 0);
}

TEST_CASE("a diverging learning rate gives no prediction, flagged") {
  Spec s = small_spec();
  s.loss = Loss::mse;
  s.lr = 500;
  s.momentum = 0;
  Prediction p = estimate(s);
  CHECK(p.diverged);
  CHECK_FALSE(p.reached);
  CHECK(p.steps == p.horizon);
  auto j = nlohmann::json::parse(to_json(p));
  CHECK(j["diverged"] == true);
  CHECK(j["final_loss"].is_null());
  bool warned = false;
  for (const auto& w : p.warnings) warned |= w.find("diverge") != std::string::npos;
  CHECK(warned);
}

TEST_CASE("drift diagnosis and re-linearization: nothing to correct on a model linear in its parameters") {
  const std::string dir = TEST_MODELS;
  std::string y = "model: linear_rf.pt\ndata:\n  path: vec_train.pt\nloss: cross_entropy\n"
                  "optimizer:\n  lr: 0.3\n  momentum: 0.9\n  batch_size: 8\ntraining:\n  steps: 60\n"
                  "target:\n  epsilon: 0.01\nengine:\n  runs: 4\n  projection: exact\n"
                  "hardware:\n  step_seconds: 0.1\n";
  Spec s = parse_spec(y, "lin.yaml", dir);
  s.diagnose_steps = 20;
  s.relinearize = 0;
  Prediction pure = estimate(s);
  CHECK(pure.drift_steps == 20);
  CHECK(pure.drift < 1e-3);  // linearization is exact: real steps follow the simulation
  CHECK(pure.relinearized_at == 0);
  s.relinearize = 20;
  Prediction re = estimate(s);
  CHECK(re.relinearized_at == 20);
  REQUIRE(re.curve_loss.size() == pure.curve_loss.size());
  for (size_t i = 0; i < re.curve_loss.size(); ++i) {
    CAPTURE(i);
    // Same batches for run 0; the other runs draw other batches after step 20, so compare the mean loosely.
    CHECK(re.curve_loss[i] == doctest::Approx(pure.curve_loss[i]).epsilon(0.15));
  }
  CHECK(re.curve_loss[5] == doctest::Approx(pure.curve_loss[5]).epsilon(0.15));
}

TEST_CASE("drift diagnosis on a nonlinear model at a large learning rate widens the band") {
  Spec s = small_spec();
  s.lr = 2.0;
  s.momentum = 0.9;
  s.diagnose_steps = 15;
  s.relinearize = 0;
  Prediction p = estimate(s);
  CHECK(p.drift_steps == 15);
  CHECK(p.drift >= 0);
  if (p.drift > 0.1 && !p.diverged) {
    bool warned = false;
    for (const auto& w : p.warnings) warned |= w.find("leaves the linear regime") != std::string::npos;
    CHECK(warned);
  }
}

TEST_CASE("defaults: re-linearize after round(0.5 T) real steps (at most 500); --no-training means none") {
  Spec s = small_spec();  // T = 40
  Prediction p = estimate(s);
  CHECK(p.relinearized_at == 20);
  CHECK(p.drift_steps == 20);
  s.relinearize = 0;
  s.diagnose_steps = 0;
  Prediction q = estimate(s);
  CHECK(q.relinearized_at == 0);
  CHECK(q.drift_steps == 0);
  bool timed = false;
  for (const auto& [k, v] : q.timing) timed |= k == "diagnose";
  CHECK_FALSE(timed);
}

namespace {

Spec linear_spec(const std::string& optimizer, const std::string& extra = "") {
  std::string y = "model: linear_rf.pt\n"
                  "data:\n  path: vec_train.pt\n" +
                  extra +
                  "optimizer:\n" + optimizer +
                  "training:\n  epochs: 10\n"
                  "target:\n  epsilon: 0.01\n"
                  "engine:\n  runs: 4\n  seed: 1\n"
                  "hardware:\n  step_seconds: 0.5\n";
  return parse_spec(y, "linear.yaml", TEST_MODELS);
}

}  // namespace

TEST_CASE("AdamW through estimate(): re-linearized after real steps, or training-free; reported in the JSON") {
  Spec free_spec = linear_spec("  name: adamw\n  lr: 0.01\n  betas: [0.9, 0.99]\n  weight_decay: 0.01\n"
                               "  batch_size: 8\n");
  const Prediction relin = estimate(free_spec);
  CHECK(relin.relinearized_at == 40);  // K = 0.5 T
  CHECK(relin.drift_steps == 40);
  CHECK(std::isfinite(relin.drift));
  CHECK(relin.final_loss < relin.initial_loss);
  CHECK(nlohmann::json::parse(to_json(relin))["relinearized_at"] == 40);
  bool relin_said = false;
  for (const auto& w : relin.warnings) relin_said |= w.find("AdamW: re-linearized after 40 real steps") != std::string::npos;
  CHECK(relin_said);
  free_spec.relinearize = 0;  // --no-training
  Prediction p = estimate(free_spec);
  CHECK(p.horizon == 80);
  CHECK(p.relinearized_at == 0);
  CHECK(p.drift_steps == 0);
  CHECK(p.final_loss < p.initial_loss);
  CHECK(p.steps > 0);
  CHECK(p.steps <= p.horizon);
  auto j = nlohmann::json::parse(to_json(p));
  CHECK(j["optimizer"]["name"] == "adamw");
  CHECK(j["optimizer"]["betas"][1].get<double>() == 0.99);
  CHECK(j["timing"].contains("adam_kernel"));
  bool warned = false;
  for (const auto& w : p.warnings) warned |= w.find("AdamW: training-free") != std::string::npos;
  CHECK(warned);
  // A larger learning rate converges sooner.
  Spec fast_spec = linear_spec("  name: adamw\n  lr: 0.05\n  weight_decay: 0.01\n  batch_size: 8\n");
  fast_spec.relinearize = 0;
  Prediction fast = estimate(fast_spec);
  CHECK(fast.steps < p.steps);
}

TEST_CASE("gpus and accumulation: the global batch sets the steps per epoch; label smoothing the loss") {
  Prediction one = estimate(linear_spec("  lr: 0.2\n  batch_size: 16\n"));
  Spec s = linear_spec("  lr: 0.2\n  batch_size: 4\n  accumulation_steps: 2\n");
  s.gpus = 2;
  validate(s);
  Prediction dp = estimate(s);
  CHECK(dp.steps_per_epoch == 4);
  CHECK(dp.horizon == one.horizon);
  // Same global batch, same samples: the same dynamics (the real prefix's passes
  // in chunks of 4 differ from one pass of 16 by float rounding only).
  CHECK(dp.steps == one.steps);
  REQUIRE(dp.curve_loss.size() == one.curve_loss.size());
  for (size_t k = 0; k < dp.curve_loss.size(); ++k) CHECK(dp.curve_loss[k] == doctest::Approx(one.curve_loss[k]).epsilon(1e-4));
  auto j = nlohmann::json::parse(to_json(dp));
  CHECK(j["optimizer"]["global_batch"] == 16);
  CHECK(j["optimizer"]["accumulation_steps"] == 2);
  Prediction ls = estimate(linear_spec("  lr: 0.2\n  batch_size: 16\n", "loss: {name: cross_entropy, label_smoothing: 0.1}\n"));
  CHECK(ls.final_loss > one.final_loss);  // the smoothed targets' entropy is the floor
  CHECK(nlohmann::json::parse(to_json(ls))["label_smoothing"].get<double>() == 0.1);
}

namespace {

Spec bn_spec(const std::string& model_extra, const std::string& optimizer = "  lr: 0.05\n  momentum: 0.9\n") {
  std::string y = "model:\n  path: cnn_bn.pt\n" + model_extra +
                  "data:\n  path: img_train.pt\n"
                  "loss: cross_entropy\n"
                  "optimizer:\n" + optimizer + "  batch_size: 8\n"
                  "training:\n  epochs: 10\n"
                  "target:\n  epsilon: 0.01\n"
                  "engine:\n  runs: 4\n  seed: 1\n"
                  "hardware:\n  step_seconds: 0.5\n";
  return parse_spec(y, "bn.yaml", TEST_MODELS);
}

}  // namespace

TEST_CASE("model.batchnorm: train: the real prefix runs train mode, the tail is linearized with its statistics") {
  Spec train = bn_spec("  batchnorm: train\n");
  train.prefix_runs = 2;  // two real prefixes averaged, each from the pre-trained statistics
  const Spec eval = bn_spec("");
  const Prediction pt = estimate(train), pe = estimate(eval);
  REQUIRE(pt.relinearized_at > 0);
  for (const auto& w : pt.warnings) CHECK(w.find("as eval mode") == std::string::npos);
  CHECK(nlohmann::json::parse(to_json(pt))["batchnorm"] == "train");
  // Over the prefix the predicted curve is real train-mode training (ttpred-finetune's
  // ground truth with the same seeds: the same batches), evaluated as model.eval() does:
  // the mean of the engine.prefix_runs = 2 runs.
  REQUIRE(pt.prefix_runs == 2);
  Model m(train.model, "cpu");
  const Dataset d = load_dataset(train);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < d.n; ++i) idx.push_back(i);
  Hyper h = hyper_of_spec(train, pt.horizon);
  std::vector<FinetuneResult> real;
  const Weights w0 = save_weights(m);
  for (int q = 0; q < 2; ++q) {
    FinetuneOptions fo;
    fo.seed = prefix_seed(train.seed, q);
    fo.train_mode = true;
    restore_weights(m, w0);
    real.push_back(finetune(m, d, idx, train.loss, target_matrix(d, idx, pt.classes), h, fo));
  }
  int compared = 0;
  for (size_t k = 0; k < pt.curve_step.size(); ++k) {
    const int64_t t = pt.curve_step[k];
    if (t > std::min<int64_t>(6, pt.relinearized_at)) break;  // evaluated at every step up to 6 (then geometric)
    for (size_t j = 0; j < real[0].step.size(); ++j)
      if (real[0].step[j] == t) {
        CAPTURE(t);
        CHECK(pt.curve_loss[k] == doctest::Approx((real[0].loss[j] + real[1].loss[j]) / 2).epsilon(1e-3));
        ++compared;
      }
  }
  CHECK(compared >= 2);
  // Train mode is another job than eval mode (the pre-trained statistics are off for these data).
  CHECK(pt.curve_loss[pt.curve_loss.size() / 2] != doctest::Approx(pe.curve_loss[pe.curve_loss.size() / 2]).epsilon(1e-3));
  // The real prefix leaves the model as it found it, running statistics included: the
  // second row of a sweep is the prediction of that row alone.
  Spec sweep = train;
  sweep.sweep = {{"lr", {0.05, 0.02}}};
  sweep.sweep_kernel_shared = false;  // each row its own prefix, as a spec of its own
  Spec second = train;
  second.lr = 0.02;
  const std::vector<Prediction> rows = estimate_all(expand_sweep(sweep));
  const Prediction alone = estimate(second);
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].steps == alone.steps);
  CHECK(rows[1].final_loss == doctest::Approx(alone.final_loss).epsilon(1e-9));
}

TEST_CASE("model.batchnorm: train with AdamW: its real prefix runs train mode too") {
  const Spec train = bn_spec("  batchnorm: train\n", "  name: adamw\n  lr: 0.003\n");
  const Spec eval = bn_spec("", "  name: adamw\n  lr: 0.003\n");
  const Prediction pt = estimate(train), pe = estimate(eval);
  REQUIRE(pt.relinearized_at > 0);
  for (const auto& w : pt.warnings) CHECK(w.find("as eval mode") == std::string::npos);
  Model m(train.model, "cpu");
  const Dataset d = load_dataset(train);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < d.n; ++i) idx.push_back(i);
  Hyper h = hyper_of_spec(train, pt.horizon);
  h.steps = 6;
  FinetuneOptions fo;
  fo.seed = train.seed;
  fo.train_mode = true;
  const FinetuneResult real = finetune(m, d, idx, train.loss, target_matrix(d, idx, pt.classes), h, fo);
  for (size_t k = 0; k < pt.curve_step.size() && pt.curve_step[k] <= 6; ++k) {
    CAPTURE(k);
    CHECK(pt.curve_loss[k] == doctest::Approx(real.loss[size_t(pt.curve_step[k])]).epsilon(1e-3));
  }
  CHECK(pt.curve_loss[pt.curve_loss.size() / 2] != doctest::Approx(pe.curve_loss[pe.curve_loss.size() / 2]).epsilon(1e-3));
}

TEST_CASE("model.batchnorm: train is refused where no real step runs: --no-training, SGD or Adam") {
  Spec adam = bn_spec("  batchnorm: train\n", "  name: adamw\n  lr: 0.001\n");
  adam.relinearize = 0;
  Spec free = bn_spec("  batchnorm: train\n");
  free.relinearize = 0;
  free.diagnose_steps = 0;
  for (const Spec* s : {&adam, &free}) {
    try {
      estimate(*s);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Exit::spec);
      CHECK(std::string(e.what()).find("model.batchnorm") != std::string::npos);
    }
  }
}
