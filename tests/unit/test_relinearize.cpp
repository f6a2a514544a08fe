// The real prefix (relinearize.cpp): the wide evaluation of its curve and the
// correction of the N0 tracked samples' sampling error (docs/method.md §7).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/estimate.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"

#include "stages.hpp"

using namespace ttpred;

namespace {

// mlp.pt (C = 3) on vec_train.pt (64 samples).
Spec small_spec(const std::string& extra = "", const std::string& engine = "") {
  const std::string y = "model: mlp.pt\ndata:\n  path: vec_train.pt\n" + extra +
                        "loss: cross_entropy\n"
                        "optimizer:\n  lr: 0.1\n  momentum: 0.9\n  batch_size: 8\n"
                        "training:\n  steps: 40\ntarget:\n  epsilon: 0.01\n"
                        "engine:\n  runs: 4\n  seed: 1\n" + engine + "hardware:\n  step_seconds: 0.25\n";
  return parse_spec(y, "small.yaml", TEST_MODELS);
}

std::vector<int64_t> range(int64_t a, int64_t b) {
  std::vector<int64_t> v;
  for (int64_t i = a; i < b; ++i) v.push_back(i);
  return v;
}

// The spec's model at w0 and its 64 samples, to train for real as the prefix does.
struct Real {
  explicit Real(const Spec& spec)
      : s(spec), m(s.model, "cpu"), d(load_dataset(s)), idx(range(0, d.n)), y(target_matrix(d, idx, 3)),
        w0(save_weights(m)) {}
  Spec s;
  Model m;
  Dataset d;
  std::vector<int64_t> idx;  // all 64
  Eigen::MatrixXd y;
  Weights w0;
  // The steps of h from w0 with these options.
  FinetuneResult train(const Hyper& h, const FinetuneOptions& fo) {
    restore_weights(m, w0);
    return finetune(m, d, idx, s.loss, y, h, fo);
  }
};

// The value logged at step t (the step must be logged).
double at(const FinetuneResult& r, const std::vector<double>& y, int64_t t) {
  for (size_t j = 0; j < r.step.size(); ++j)
    if (r.step[j] == t) return y[j];
  FAIL("step ", t, " not logged");
  return 0;
}

}  // namespace

TEST_CASE("finetune's wide evaluation: the tracked samples and all of them, from one run") {
  Real real(small_spec());
  const Hyper h = hyper_of_spec(real.s, 12);
  FinetuneOptions fo;
  fo.seed = 3;
  const FinetuneResult all = real.train(h, fo);  // every sample, every step
  fo.track = range(0, 16);
  fo.wide = range(16, real.d.n);
  fo.wide_at = {0, 3, 7, 12};
  fo.log_ratio = 1.5;  // 1, 2, 3, 5, 8, 12: 7 is logged for the wide evaluation alone
  const FinetuneResult r = real.train(h, fo);
  REQUIRE(r.wide_step == fo.wide_at);
  for (size_t j = 0; j < r.wide_step.size(); ++j) {
    const int64_t t = r.wide_step[j];
    CAPTURE(t);
    // Same seed, same batches: the wide sample (all 64 here) is the whole-set curve.
    CHECK(r.wide_loss[j] == doctest::Approx(at(all, all.loss, t)).epsilon(1e-6));
    CHECK(r.wide_acc[j] == doctest::Approx(at(all, all.acc, t)).epsilon(1e-9));
    CHECK(r.wide_tracked_loss[j] == at(r, r.loss, t));
    CHECK(r.wide_tracked_acc[j] == at(r, r.acc, t));
  }
  CHECK(r.wide_tracked_loss[0] != doctest::Approx(r.wide_loss[0]).epsilon(1e-6));  // 16 of 64 differ
  // Out-of-range positions are refused, as tracked ones are.
  fo.wide = {real.d.n};
  CHECK_THROWS_AS(real.train(h, fo), std::invalid_argument);
}

TEST_CASE("SampleCorrection: ratios at the wide steps, linear in log(1 + t) between them, constant after K") {
  FinetuneResult r;
  r.wide_step = {0, 7, 15};
  r.wide_tracked_loss = {2.0, 0.5, 0.4};
  r.wide_loss = {2.0, 0.6, 0.5};
  r.wide_tracked_acc = {0.5, 0.8, 1.0};  // no error left among the tracked at K
  r.wide_acc = {0.5, 0.7, 0.95};
  const SampleCorrection c(r);
  CHECK(c.loss(2.0, 0) == doctest::Approx(2.0));
  CHECK(c.loss(0.5, 7) == doctest::Approx(0.6));
  CHECK(c.loss(0.4, 15) == doctest::Approx(0.5));
  CHECK(c.loss(0.1, 400) == doctest::Approx(0.125));  // the tail: the ratio at K
  // Between 7 and 15, at the midpoint in log(1 + t): the mean of the two ratios.
  const double mid = std::exp((std::log(8.0) + std::log(16.0)) / 2) - 1;
  CHECK(c.loss(1.0, mid) == doctest::Approx((1.2 + 1.25) / 2));
  CHECK(c.accuracy(0.8, 7) == doctest::Approx(0.7));  // error 0.2 -> 0.3
  CHECK(c.accuracy(0.9, 15) == doctest::Approx(0.9));  // no tracked error at K: ratio 1
  CHECK(c.accuracy(0.0, 7) == doctest::Approx(0.0));   // clamped to [0, 1]
  // Nothing measured: no change.
  const SampleCorrection none{FinetuneResult{}};
  CHECK(none.loss(0.3, 5) == 0.3);
  CHECK(none.accuracy(0.3, 5) == 0.3);
}

TEST_CASE("extrapolating from N0 = 16 of 64: the predicted prefix is the whole set's curve at the wide steps") {
  const Spec s = small_spec("  subset: 16\n", "  relinearize: 12\n");  // one real prefix (several averaged: below)
  const Prediction p = estimate(s);
  REQUIRE(p.extrapolated);
  REQUIRE(p.relinearized_at == 12);
  // Real training on all 64 with the prediction's seed: the same batches as its prefix.
  Real real(s);
  FinetuneOptions fo;
  fo.seed = s.seed;
  Hyper h = hyper_of_spec(s, p.horizon);
  h.steps = p.relinearized_at;
  const FinetuneResult all = real.train(h, fo);
  int compared = 0;
  for (size_t k = 0; k < p.curve_step.size(); ++k) {
    const int64_t t = p.curve_step[k];
    if (t != 0 && t != 6 && t != 12) continue;  // steps 0, K and K/2 (K/4 = 3 < 4: none)
    CAPTURE(t);
    CHECK(p.curve_loss[k] == doctest::Approx(at(all, all.loss, t)).epsilon(1e-5));
    ++compared;
  }
  CHECK(compared == 3);
  // Without the correction the curve would be the 16 tracked samples' (they differ).
  CHECK(p.initial_loss == doctest::Approx(at(all, all.loss, 0)).epsilon(1e-6));
}

TEST_CASE("draw_subset: the N0 and the prefix's wide sample are drawn alike, the wider containing the N0") {
  for (bool draw_first : {false, true}) {
    CAPTURE(draw_first);
    Spec s = small_spec();
    s.data.draw_first = draw_first;
    s.seed = 11;
    const auto n0 = draw_subset(2000, 500, s), w4 = draw_subset(2000, 1600, s);
    REQUIRE(n0.size() == 500);
    REQUIRE(w4.size() == 1600);
    CHECK(draw_subset(2000, 2000, s).size() == 2000);
    for (int64_t i : n0) CHECK(std::binary_search(w4.begin(), w4.end(), i));
    // data.draw: first keeps the file's order, which may be sorted by class: both
    // draws are then uniform over the pool, not its first samples.
    if (draw_first) CHECK(w4.back() > 1800);
    else CHECK(w4.back() == 1599);
  }
}

TEST_CASE("relinearize_steps: K = round(0.5 T), at least 1, at most 500; engine.relinearize overrides it") {
  Spec s;
  CHECK(relinearize_steps(s, 1) == 1);
  CHECK(relinearize_steps(s, 40) == 20);
  CHECK(relinearize_steps(s, 375) == 188);  // the embedded default job
  CHECK(relinearize_steps(s, 800) == 400);
  CHECK(relinearize_steps(s, 1000) == 500);
  CHECK(relinearize_steps(s, 2000) == 500);  // the cap bounds the real steps of long fine-tunes
  Spec f = s;  // engine.relinearize_fraction and engine.relinearize_cap move the rule (sessions 6-14: 0.3, 300)
  f.relinearize_fraction = 0.3, f.relinearize_cap = 300;
  CHECK(relinearize_steps(f, 40) == 12);
  CHECK(relinearize_steps(f, 800) == 240);
  CHECK(relinearize_steps(f, 2000) == 300);
  f.relinearize_fraction = 0.001;
  CHECK(relinearize_steps(f, 100) == 1);  // at least one real step
  s.relinearize = 600;
  CHECK(relinearize_steps(s, 2000) == 600);
  s.relinearize = 0;
  CHECK(relinearize_steps(s, 2000) == 0);
}

TEST_CASE("finetune's wide outputs: f_prev and f_last hold the tracked samples, then the wide ones") {
  Real real(small_spec());
  const Hyper h = hyper_of_spec(real.s, 10);
  FinetuneOptions fo;
  fo.seed = 5;
  fo.keep_outputs = true;
  const FinetuneResult all = real.train(h, fo);  // outputs of all 64
  fo.track = range(0, 16);
  fo.wide = range(16, real.d.n);
  fo.wide_at = {0, 10};
  fo.wide_outputs = true;
  const FinetuneResult r = real.train(h, fo);
  REQUIRE(r.f_last.rows() == real.d.n);
  REQUIRE(r.f_prev.rows() == real.d.n);
  CHECK((r.f_last - all.f_last).cwiseAbs().maxCoeff() < 1e-5);  // same batches, tracked + wide = all, in order
  CHECK((r.f_prev - all.f_prev).cwiseAbs().maxCoeff() < 1e-5);
  CHECK(r.loss.back() == doctest::Approx(r.wide_tracked_loss.back()));  // the curve is still the tracked 16's
  fo.wide_outputs = false;
  CHECK(real.train(h, fo).f_last.rows() == 16);
}

TEST_CASE("stratified_rows: disjoint parts, each class its share, each part spanning the losses") {
  // 3 classes of 40, 30 and 50 samples; sample r has loss growing with r within its class.
  const int64_t m = 120, C = 3;
  Eigen::MatrixXd targets = Eigen::MatrixXd::Zero(m, C), f = Eigen::MatrixXd::Zero(m, C);
  std::vector<int64_t> ids(static_cast<size_t>(m)), cls(static_cast<size_t>(m));
  for (int64_t r = 0; r < m; ++r) {
    const int64_t c = r < 40 ? 0 : r < 70 ? 1 : 2;
    cls[size_t(r)] = c;
    ids[size_t(r)] = m - 1 - r;  // ids need not be rows
    targets(m - 1 - r, c) = 1;
    f(r, c) = 5.0 - 0.05 * double(r);  // the own class's logit falls: the loss rises with r
  }
  for (Loss loss : {Loss::cross_entropy, Loss::mse})
    for (int parts : {1, 2, 3}) {
      CAPTURE(parts);
      const auto drawn = stratified_rows(f, ids, targets, loss, 30, 7, parts);
      REQUIRE(drawn.size() == size_t(parts));
      std::vector<int> seen(static_cast<size_t>(m), 0);
      for (const auto& rows : drawn) {
        REQUIRE(rows.size() == 30);
        CHECK(std::is_sorted(rows.begin(), rows.end()));
        int64_t per[3] = {0, 0, 0};
        double lo[3] = {1e9, 1e9, 1e9}, hi[3] = {-1, -1, -1}, sum[3] = {0, 0, 0};
        for (int64_t r : rows) {
          ++seen[size_t(r)];
          const int64_t c = cls[size_t(r)];
          ++per[c];
          const double rank = double(r - (c == 0 ? 0 : c == 1 ? 40 : 70)) / double(c == 0 ? 40 : c == 1 ? 30 : 50);
          lo[c] = std::min(lo[c], rank), hi[c] = std::max(hi[c], rank), sum[c] += rank;
        }
        CHECK(per[0] == 10);  // 30 x 40/120
        CHECK(per[1] == 8);   // 7.5 -> 8 (largest remainder, tied with class 2)
        CHECK(per[2] == 12);  // 12.5 -> 12
        for (int c = 0; c < 3; ++c) {
          CHECK(lo[c] < 0.25);  // from the class's easiest quarter ...
          CHECK(hi[c] > 0.75);  // ... to its hardest, ...
          CHECK(std::fabs(sum[c] / double(per[c]) - 0.5) < 0.1);  // ... centred (a uniform draw's mean rank)
        }
      }
      for (int v : seen) CHECK(v <= 1);  // disjoint
    }
  CHECK_THROWS_AS(stratified_rows(f, ids, targets, Loss::cross_entropy, 31, 7, 4), std::invalid_argument);
  {
    // 4 parts of 500 from classes of 401, 399, 400, 400 and 400: no class can give every
    // part one more than its floor share, so each part holds 499, still disjoint.
    const int64_t sizes[5] = {401, 399, 400, 400, 400};
    Eigen::MatrixXd t2 = Eigen::MatrixXd::Zero(2000, 5), f2 = Eigen::MatrixXd::Zero(2000, 5);
    std::vector<int64_t> ids2;
    for (int64_t c = 0, r = 0; c < 5; ++c)
      for (int64_t j = 0; j < sizes[c]; ++j, ++r) {
        t2(r, c) = 1;
        f2(r, c) = 0.01 * double(j);
        ids2.push_back(r);
      }
    const auto drawn = stratified_rows(f2, ids2, t2, Loss::cross_entropy, 500, 3, 4);
    std::vector<int> seen(2000, 0);
    for (const auto& rows : drawn) {
      CHECK(rows.size() == 499);
      for (int64_t r : rows) ++seen[size_t(r)];
    }
    for (int v : seen) CHECK(v <= 1);
  }
  // Seeded: the same draw for a seed.
  CHECK(stratified_rows(f, ids, targets, Loss::cross_entropy, 30, 7, 2) ==
        stratified_rows(f, ids, targets, Loss::cross_entropy, 30, 7, 2));
}

TEST_CASE("merge_tails: the runs pooled, the mean over all of them") {
  Curves a, b;
  a.step = b.step = {10, 11, 12};
  a.run_loss = {{1, 2, 3}};
  a.run_acc = {{0.1, 0.2, 0.3}};
  b.run_loss = {{3, 2, 1}, {5, 5, 5}};
  b.run_acc = {{0.3, 0.2, 0.1}, {0.5, 0.5, 0.5}};
  a.loss = a.run_loss[0], a.acc = a.run_acc[0];
  const Curves c = merge_tails({a, b});
  CHECK(c.step == a.step);
  REQUIRE(c.run_loss.size() == 3);
  CHECK(c.loss[0] == doctest::Approx(3.0));
  CHECK(c.loss[2] == doctest::Approx(3.0));
  CHECK(c.acc[1] == doctest::Approx(0.3));
  CHECK(merge_tails({a}).loss == a.loss);
}

TEST_CASE("engine.tail_subset and tail_parts: the tail's samples after w_K, reported") {
  const Prediction st = estimate(small_spec("  subset: 16\n"));  // the default: stratified, 1 part
  REQUIRE(st.relinearized_at == 20);
  CHECK(st.tail_subset == "stratified");
  CHECK(st.tail_parts == 1);
  Spec s1 = small_spec("  subset: 16\n");
  s1.tail_stratified = false;
  const Prediction tr = estimate(s1);
  CHECK(tr.tail_subset == "tracked");
  Spec s2 = small_spec("  subset: 16\n");
  s2.tail_parts = 2;
  const Prediction two = estimate(s2);
  CHECK(two.tail_parts == 2);
  CHECK(two.tail_subset == "stratified");
  // Both start the tail from the wide sample's real loss at K (here all 64 samples).
  for (const Prediction* p : {&st, &tr, &two}) {
    for (size_t k = 0; k < p->curve_step.size(); ++k)
      if (p->curve_step[k] == 12) CHECK(p->curve_loss[k] == doctest::Approx(st.curve_loss[k]).epsilon(1e-5));
  }
  // N0 = N: nothing to draw from, no tail report.
  CHECK(estimate(small_spec()).tail_subset.empty());
}

TEST_CASE("average_prefixes: the tracked curve averaged, the wide sample's ratio to it kept; bad runs left out") {
  FinetuneResult a;
  a.step = {0, 5, 10};
  a.loss = {2.0, 1.0, 0.5};
  a.acc = {0.5, 0.7, 0.9};
  a.wide_step = {0, 10};
  a.wide_tracked_loss = {2.0, 0.5};
  a.wide_tracked_acc = {0.5, 0.9};
  a.wide_loss = {2.2, 0.6};  // ratio 1.1, then 1.2
  a.wide_acc = {0.45, 0.8};  // error ratio 1.1, then 2
  FinetuneResult b = a;
  b.loss = {2.0, 1.2, 0.7};
  b.acc = {0.5, 0.6, 0.8};
  FinetuneResult other_steps = b, diverged = b;
  other_steps.step = {0, 4, 10};
  diverged.loss.back() = std::nan("");
  FinetuneResult r = a;
  CHECK(average_prefixes(r, {b, other_steps, diverged}) == 2);
  CHECK(r.step == a.step);
  CHECK(r.loss[1] == doctest::Approx(1.1));
  CHECK(r.loss[2] == doctest::Approx(0.6));
  CHECK(r.acc[2] == doctest::Approx(0.85));
  CHECK(r.wide_tracked_loss[1] == doctest::Approx(0.6));
  CHECK(r.wide_loss[1] == doctest::Approx(0.72));           // 1.2 × the mean 0.6
  CHECK(r.wide_acc[1] == doctest::Approx(1 - 2 * 0.15));    // error 0.15, twice
  CHECK(r.wide_loss[0] == doctest::Approx(2.2));
  const SampleCorrection c(r);
  CHECK(c.loss(r.loss[2], 10) == doctest::Approx(0.72));
  // Nothing to average with: unchanged.
  FinetuneResult one = a;
  CHECK(average_prefixes(one, {}) == 1);
  CHECK(one.loss == a.loss);
  CHECK(one.wide_loss == a.wide_loss);
}

TEST_CASE("engine.prefix_runs: the real prefix averaged over runs with other batches; the tail starts at the mean") {
  // N0 = N = 64: the curve over the prefix is the mean of the runs' losses, at K too.
  Spec s = small_spec("", "  prefix_runs: 2\n  relinearize: 12\n");
  const Prediction p = estimate(s);
  REQUIRE(p.relinearized_at == 12);
  CHECK(p.prefix_runs == 2);
  Real real(s);
  Hyper h = hyper_of_spec(s, p.horizon);
  h.steps = p.relinearized_at;
  std::vector<FinetuneResult> run;
  for (int q = 0; q < 2; ++q) {
    FinetuneOptions fo;
    fo.seed = prefix_seed(s.seed, q);
    run.push_back(real.train(h, fo));
  }
  CHECK(run[0].loss[6] != doctest::Approx(run[1].loss[6]).epsilon(1e-3));  // other batches
  int compared = 0;
  for (size_t k = 0; k < p.curve_step.size(); ++k) {
    const int64_t t = p.curve_step[k];
    if (t > 6 && t != 12) continue;  // evaluated at every step up to 6 (then geometric), and at K: the tail's start
    CAPTURE(t);
    CHECK(p.curve_loss[k] == doctest::Approx((at(run[0], run[0].loss, t) + at(run[1], run[1].loss, t)) / 2).epsilon(1e-5));
    ++compared;
  }
  CHECK(compared == 8);
  CHECK(estimate(small_spec()).prefix_runs == 1);  // the default
  s.relinearize = 0;
  CHECK(estimate(s).prefix_runs == 0);

  // N0 = 16 of 64: at the wide steps, the wide sample's loss of run 0 (all 64) times
  // the tracked 16's mean over the runs over theirs in run 0.
  Spec e = small_spec("  subset: 16\n", "  prefix_runs: 2\n  relinearize: 12\n");
  const Prediction pe = estimate(e);
  REQUIRE(pe.extrapolated);
  CHECK(pe.prefix_runs == 2);
  const std::vector<int64_t> n0 = draw_subset(real.d.n, 16, e);
  std::vector<char> in(size_t(real.d.n), 0);
  for (int64_t i : n0) in[size_t(i)] = 1;
  std::vector<FinetuneResult> wide;
  for (int q = 0; q < 2; ++q) {
    FinetuneOptions fo;
    fo.seed = prefix_seed(e.seed, q);
    fo.track = n0;
    for (int64_t i = 0; i < real.d.n; ++i)
      if (!in[size_t(i)]) fo.wide.push_back(i);
    fo.wide_at = {0, 6, 12};
    wide.push_back(real.train(h, fo));  // e's model, data and loss are s's
  }
  compared = 0;
  for (size_t k = 0; k < pe.curve_step.size(); ++k) {
    const int64_t t = pe.curve_step[k];
    if (t != 0 && t != 6 && t != 12) continue;
    CAPTURE(t);
    const size_t j = size_t(std::find(wide[0].wide_step.begin(), wide[0].wide_step.end(), t) - wide[0].wide_step.begin());
    REQUIRE(j < wide[0].wide_step.size());
    const double mean = (wide[0].wide_tracked_loss[j] + wide[1].wide_tracked_loss[j]) / 2;
    CHECK(pe.curve_loss[k] == doctest::Approx(wide[0].wide_loss[j] * mean / wide[0].wide_tracked_loss[j]).epsilon(1e-5));
    ++compared;
  }
  CHECK(compared == 3);
}
