// A model linear in its parameters (fixed random features + a linear head):
// its linearization is exact, so SGD on it, run for real with LibTorch, must
// follow the predicted curve (same seed = same batches).
#include <doctest/doctest.h>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/finetune.hpp"
#include "ttpred/model.hpp"
#include "ttpred/spec.hpp"

#include "linear_problem.hpp"

using namespace ttpred;

namespace {

struct Case {
  const char* data;
  Loss loss;
  double lr, momentum, wd;
  int64_t batch;
};

using testing::all_samples;

Problem problem_for(const Model& m, const Dataset& d, Loss loss, const std::vector<int64_t>& idx) {
  return testing::linear_problem(m, d, loss, idx);
}

// The linearized problem of linear_rf.pt on all samples of a test data file.
Problem rf_problem(const char* data, Loss loss) {
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/" + data);
  Model m(dir + "/linear_rf.pt", "cpu");
  return problem_for(m, d, loss, all_samples(d));
}

void run_case(const Case& k) {
  CAPTURE(k.data);
  CAPTURE(k.momentum);
  CAPTURE(k.wd);
  CAPTURE(k.batch);
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/" + k.data);
  Model m(dir + "/linear_rf.pt", "cpu");
  std::vector<int64_t> idx = all_samples(d);
  Problem p = problem_for(m, d, k.loss, idx);
  Hyper h;
  h.lr = k.lr;
  h.momentum = k.momentum;
  h.weight_decay = k.wd;
  h.batch_size = k.batch;
  h.steps = 60;
  SimOptions so;
  so.runs = 1;
  so.seed = 11;
  Curves pred = simulate(p, h, so);

  FinetuneOptions fo;
  fo.seed = 11;  // run 0 of the simulator draws the same batches
  FinetuneResult real = finetune(m, d, idx, k.loss, p.y, h, fo);
  REQUIRE(real.loss.size() == pred.loss.size());
  for (size_t t = 0; t < real.loss.size(); ++t) {
    CAPTURE(t);
    CHECK(pred.loss[t] == doctest::Approx(real.loss[t]).epsilon(2e-3));
  }
  CHECK(real.loss.back() < real.loss.front());
  CHECK(time_to_epsilon(pred.loss, 0.01) == time_to_epsilon(real.loss, 0.01));
}

}  // namespace

TEST_CASE("linear-in-parameters model: predicted = real SGD, cross-entropy") {
  run_case({"vec_train.pt", Loss::cross_entropy, 0.5, 0.0, 0.0, 8});
  run_case({"vec_train.pt", Loss::cross_entropy, 0.1, 0.9, 0.0, 8});
  run_case({"vec_train.pt", Loss::cross_entropy, 0.1, 0.9, 0.01, 16});
}

TEST_CASE("linear-in-parameters model: predicted = real SGD, MSE with float targets") {
  run_case({"vec_mse.pt", Loss::mse, 0.2, 0.0, 0.0, 8});
  run_case({"vec_mse.pt", Loss::mse, 0.05, 0.9, 0.001, 16});
  run_case({"vec_mse.pt", Loss::mse, 0.2, 0.0, 0.0, 64});  // full batch
}

TEST_CASE("a nonlinear model: the linearization matches real SGD early on") {
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/vec_train.pt");
  Model m(dir + "/mlp.pt", "cpu");
  const std::vector<int64_t> idx = all_samples(d);
  Problem p = problem_for(m, d, Loss::cross_entropy, idx);
  Hyper h;
  h.lr = 0.05;
  h.batch_size = 16;
  h.steps = 5;
  SimOptions so;
  so.runs = 1;
  Curves pred = simulate(p, h, so);
  FinetuneResult real = finetune(m, d, idx, p.loss, p.y, h, FinetuneOptions{});
  CHECK(pred.loss.back() == doctest::Approx(real.loss.back()).epsilon(0.02));

  // Geometric logging (the prediction's real prefix): steps 1, 2, 3, then each
  // >= 1.5x the last, and always the last step; the same run at those steps.
  Model m2(dir + "/linear_rf.pt", "cpu");
  FinetuneOptions geo;
  geo.log_ratio = 1.5;
  h.steps = 12;
  FinetuneResult every = finetune(m2, d, idx, p.loss, p.y, h, FinetuneOptions{});
  Model m3(dir + "/linear_rf.pt", "cpu");
  FinetuneResult sparse = finetune(m3, d, idx, p.loss, p.y, h, geo);
  CHECK(sparse.step == std::vector<int64_t>{0, 1, 2, 3, 5, 8, 12});
  for (size_t j = 0; j < sparse.step.size(); ++j)
    CHECK(sparse.loss[j] == doctest::Approx(every.loss[size_t(sparse.step[j])]).epsilon(1e-9));
}

TEST_CASE("linear-in-parameters model with a cosine schedule and warm-up: predicted = real SGD") {
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/vec_train.pt");
  Model m(dir + "/linear_rf.pt", "cpu");
  const std::vector<int64_t> idx = all_samples(d);
  Problem p = problem_for(m, d, Loss::cross_entropy, idx);
  Hyper h;
  h.lr = 0.3;
  h.momentum = 0.9;
  h.batch_size = 8;
  h.steps = 48;
  h.schedule.type = "cosine";
  h.schedule.warmup_steps = 8;
  SimOptions so;
  so.runs = 1;
  so.seed = 5;
  Curves pred = simulate(p, h, so);
  FinetuneOptions fo;
  fo.seed = 5;
  FinetuneResult real = finetune(m, d, idx, p.loss, p.y, h, fo);
  REQUIRE(real.loss.size() == pred.loss.size());
  for (size_t t = 0; t < real.loss.size(); ++t) CHECK(pred.loss[t] == doctest::Approx(real.loss[t]).epsilon(2e-3));
  // The schedule matters: a constant rate gives another curve.
  h.schedule = Schedule{};
  CHECK(simulate(p, h, so).loss.back() != doctest::Approx(pred.loss.back()).epsilon(1e-3));

  // A table (what ttpred-export writes for OneCycleLR, SequentialLR, LambdaLR ...): a one-cycle
  // shape up and down, shorter than the horizon so that its last factor holds.
  h.schedule.type = "table";
  for (int t = 0; t < 40; ++t) h.schedule.factors.push_back(t < 10 ? 0.1 + 0.09 * t : 1.0 - 0.022 * (t - 10));
  Curves tpred = simulate(p, h, so);
  Model fresh(dir + "/linear_rf.pt", "cpu");  // finetune() trained m
  FinetuneResult treal = finetune(fresh, d, idx, p.loss, p.y, h, fo);
  REQUIRE(treal.loss.size() == tpred.loss.size());
  for (size_t t = 0; t < treal.loss.size(); ++t)
    CHECK(tpred.loss[t] == doctest::Approx(treal.loss[t]).epsilon(2e-3));
  CHECK(tpred.loss.back() != doctest::Approx(pred.loss.back()).epsilon(1e-3));
}

namespace {

// Real LibTorch training vs the simulation, step by step, for hyper-parameters h
// (same seed: same batches).
void same_curves(const char* data, Loss loss, const Hyper& h, uint64_t seed = 3) {
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/" + data);
  Model m(dir + "/linear_rf.pt", "cpu");
  const std::vector<int64_t> idx = all_samples(d);
  Problem p = problem_for(m, d, loss, idx);
  SimOptions so;
  so.runs = 1;
  so.seed = seed;
  Curves pred = simulate(p, h, so);
  FinetuneOptions fo;
  fo.seed = seed;
  FinetuneResult real = finetune(m, d, idx, loss, p.y, h, fo);
  REQUIRE(real.loss.size() == pred.loss.size());
  for (size_t t = 0; t < real.loss.size(); ++t) {
    CAPTURE(t);
    CHECK(pred.loss[t] == doctest::Approx(real.loss[t]).epsilon(2e-3));
  }
  CHECK(real.loss.back() < real.loss.front());
}

Hyper base_hyper(double lr, double momentum, int64_t batch, int64_t steps = 48) {
  Hyper h;
  h.lr = lr;
  h.momentum = momentum;
  h.batch_size = batch;
  h.steps = steps;
  return h;
}

}  // namespace

TEST_CASE("label smoothing: predicted = real nn.CrossEntropyLoss(label_smoothing) training") {
  Hyper h = base_hyper(0.5, 0.0, 8);
  h.label_smoothing = 0.1;
  same_curves("vec_train.pt", Loss::cross_entropy, h);
  h = base_hyper(0.1, 0.9, 16);
  h.label_smoothing = 0.2;
  h.weight_decay = 0.01;
  same_curves("vec_train.pt", Loss::cross_entropy, h);
  // Smoothing changes the curve: the loss floor is the smoothed targets' entropy.
  Problem p = rf_problem("vec_train.pt", Loss::cross_entropy);
  SimOptions so;
  so.runs = 1;
  Hyper plain = base_hyper(0.5, 0.0, 8);
  CHECK(simulate(p, h, so).loss.back() > simulate(p, plain, so).loss.back());
}

TEST_CASE("Nesterov momentum: predicted = real SGD(nesterov=True)") {
  Hyper h = base_hyper(0.1, 0.9, 8);
  h.nesterov = true;
  same_curves("vec_train.pt", Loss::cross_entropy, h);
  h.weight_decay = 0.001;
  same_curves("vec_mse.pt", Loss::mse, h);
  // Nesterov is another trajectory than heavy-ball momentum.
  Problem p = rf_problem("vec_train.pt", Loss::cross_entropy);
  SimOptions so;
  so.runs = 1;
  Hyper heavy = base_hyper(0.1, 0.9, 8);
  Hyper nag = heavy;
  nag.nesterov = true;
  CHECK(simulate(p, nag, so).loss[10] != doctest::Approx(simulate(p, heavy, so).loss[10]).epsilon(1e-3));
}

TEST_CASE("gradient accumulation and data-parallel GPUs: one step = the global batch") {
  // batch_size 4 per GPU x 2 GPUs x 2 accumulation steps: the real run takes 4
  // forward/backward passes of 4 samples (loss scaled by 1/4 each) and one SGD
  // step; the prediction is SGD with batches of 16.
  Spec s;
  s.lr = 0.3;
  s.momentum = 0.9;
  s.batch_size = 4;
  s.gpus = 2;
  s.accumulation_steps = 2;
  const Hyper h = hyper_of_spec(s, 40);
  CHECK(h.batch_size == 16);
  CHECK(h.micro_batch == 4);
  same_curves("vec_train.pt", Loss::cross_entropy, h);
  same_curves("vec_mse.pt", Loss::mse, h);
  // Adam too: the chunks are averaged before the optimizer sees the gradient.
  Spec a = s;
  a.optimizer = Optimizer::adamw;
  a.momentum = 0;
  a.lr = 0.01;
  a.weight_decay = 0.01;
  const std::string dir = TEST_MODELS;
  Dataset d = read_torch_dict(dir + "/vec_train.pt");
  const std::vector<int64_t> idx = all_samples(d);
  Hyper ha = hyper_of_spec(a, 20), whole = ha;
  whole.micro_batch = 0;
  FinetuneOptions fo;
  fo.seed = 2;
  Model m1(dir + "/linear_rf.pt", "cpu"), m2(dir + "/linear_rf.pt", "cpu");
  const Eigen::MatrixXd y = target_matrix(d, idx, 3);
  FinetuneResult chunked = finetune(m1, d, idx, Loss::cross_entropy, y, ha, fo);
  FinetuneResult one = finetune(m2, d, idx, Loss::cross_entropy, y, whole, fo);
  REQUIRE(chunked.loss.size() == one.loss.size());
  for (size_t t = 0; t < one.loss.size(); ++t) CHECK(chunked.loss[t] == doctest::Approx(one.loss[t]).epsilon(1e-4));
}

namespace {

// The full-batch gradient norm ‖∇_w L‖ at w0, from Θ: ‖Jᵀ g / n‖ = √(gᵀ Θ g) / n.
double initial_grad_norm(const char* data, Loss loss) {
  Problem p = rf_problem(data, loss);
  const Eigen::VectorXd g = loss_gradient(p, p.f0);
  return std::sqrt(g.dot(p.theta * g)) / double(p.n());
}

}  // namespace

TEST_CASE("gradient clipping: predicted = real SGD with torch.nn.utils.clip_grad_norm_") {
  // max_norm at half the starting gradient norm: every early step is clipped,
  // the later ones (a smaller gradient) are not.
  for (auto [data, loss] : {std::pair{"vec_train.pt", Loss::cross_entropy}, std::pair{"vec_mse.pt", Loss::mse}}) {
    CAPTURE(data);
    const double g0 = initial_grad_norm(data, loss);
    REQUIRE(g0 > 0);
    Hyper h = base_hyper(0.5, 0.0, 8);
    h.clip_norm = 0.5 * g0;
    same_curves(data, loss, h);
    Hyper hm = base_hyper(0.1, 0.9, 16);
    hm.weight_decay = 0.01;  // added after clipping, as torch.optim.SGD does
    hm.clip_norm = 0.5 * g0;
    same_curves(data, loss, hm);
    Hyper full = base_hyper(0.5, 0.0, 1000);  // full batch
    full.clip_norm = 0.5 * g0;
    same_curves(data, loss, full);
  }
  // Clipping slows the start; the measured-kernel path (Problem::theta_norm, used
  // when Θ is extrapolated) gives the same curve when it holds Θ itself.
  Problem p = rf_problem("vec_train.pt", Loss::cross_entropy);
  SimOptions so;
  so.runs = 1;
  Hyper plain = base_hyper(0.5, 0.0, 8), clipped = plain;
  clipped.clip_norm = 0.25 * initial_grad_norm("vec_train.pt", Loss::cross_entropy);
  const Curves a = simulate(p, plain, so), b = simulate(p, clipped, so);
  CHECK(b.loss[5] > a.loss[5] * 1.01);
  Problem q = p;
  q.theta_norm = std::make_shared<const Eigen::MatrixXd>(p.theta);
  const Curves c = simulate(q, clipped, so);
  for (size_t t = 0; t < b.loss.size(); ++t) CHECK(c.loss[t] == doctest::Approx(b.loss[t]).epsilon(1e-9));
}
