// ttpred-finetune: fine-tune the spec's model for real (the ground truth the
// estimator is measured against) and report the measured T(ε).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/error.hpp"
#include "ttpred/finetune.hpp"

int main(int argc, char** argv) {
  using namespace ttpred;
  const std::string tool = "ttpred-finetune";
  CLI::App app{
      "Fine-tune the spec's TorchScript model with LibTorch (torch.optim SGD, Adam or AdamW semantics), logging the whole "
      "training-set loss; reports the measured T(epsilon) and seconds.\n\nExit codes as ttpred-estimate.",
      tool};
  std::string spec_path;
  bool json = false, quiet = false, train_mode = false;
  int64_t log_every = 0;  // 0: max(1, T / 100)
  int64_t stop_after = 0;  // 0: the whole horizon
  int64_t log_from = 0;
  std::vector<uint64_t> seeds{0};
  cli::Overrides ov;
  app.add_option("--spec", spec_path, "Job spec (YAML); default: the embedded example")
      ->check(cli::value_not_option());
  app.add_flag("--json", json, "Print one JSON object");
  app.add_flag("-q,--quiet", quiet, "No progress on stderr");
  app.add_flag("--train-mode", train_mode, "Train with module.train() (BatchNorm batch statistics, Dropout), as model.batchnorm: train");
  app.add_option("--log-every", log_every,
                 "Evaluate the whole-training-set loss every K steps (default: max(1, T/100) of the horizon T)")
      ->check(cli::in_range(1, 1e12, false, true));
  app.add_option("--stop-after", stop_after,
                 "Train only the first S steps of the horizon (the learning-rate schedule keeps the whole horizon): "
                 "the start of a long run, measured densely with a small --log-every")
      ->check(cli::in_range(1, 1e12, false, true));
  app.add_option("--log-from", log_from,
                 "Evaluate every --log-every steps from step S on, and none before it but step 0 (with --stop-after: "
                 "one stretch of a run, measured densely)")
      ->check(cli::in_range(0, 1e12, false, true));
  app.add_option("--seeds", seeds, "Seeds; T(eps) is measured on the mean curve over them")->expected(1, 100);
  ov.add_common(app);
  app.set_version_flag("-V,--version", std::string(TTPRED_VERSION));
  if (int rc = cli::parse(app, argc, argv, tool); rc >= 0) return rc;

  return cli::guarded(tool, [&] {
    if (spec_path.empty()) spec_path = default_spec_path();
    Spec s = load_spec(spec_path);
    ov.apply(s);
    validate(s);
    if (!s.sweep.empty()) s.fail("sweep", "ttpred-finetune runs one configuration: remove the sweep section");
    Dataset d = load_dataset(s);
    const int64_t N = s.data.size > 0 ? s.data.size : d.n;
    if (N > d.n)
      s.fail("data.size", fmt::format("({}) exceeds the {} samples in {}: cannot fine-tune on data that is not there",
                                      N, d.n, d.source));
    if (s.global_batch() > N)
      s.fail("optimizer.batch_size", fmt::format("({}) exceeds the {} samples", batch_text(s), N));
    // One step: the global batch (batch_size x gpus x accumulation_steps), the
    // forward/backward passes per GPU and micro-batch one after the other.
    const int64_t per_epoch = N / s.global_batch();
    Hyper h = hyper_of_spec(s, s.steps > 0 ? s.steps : int64_t(std::ceil(s.epochs * double(per_epoch) - 1e-9)));
    const int64_t horizon = h.steps;
    if (stop_after > 0 && stop_after < horizon) h.horizon = horizon, h.steps = stop_after;  // the schedule's horizon stays
    const int64_t every = log_every > 0 ? log_every : std::max<int64_t>(1, horizon / 100);
    std::vector<int64_t> idx(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) idx[size_t(i)] = i;
    nlohmann::json runs = nlohmann::json::array();
    std::vector<double> mean_loss, mean_acc;
    std::vector<int64_t> steps;
    double secs_train = 0, secs_total = 0;
    int64_t C = 0;
    for (uint64_t seed : seeds) {
      Model model(s.model, s.device);  // fresh pre-trained weights for each seed
      C = model.num_classes(d);
      if (!d.has_labels() && s.loss == Loss::cross_entropy) s.fail("loss", "cross_entropy needs class ids in y");
      const Eigen::MatrixXd y = target_matrix(d, N, C);
      FinetuneOptions fo;
      fo.seed = seed;
      fo.log_every = every;
      fo.log_from = log_from;
      fo.train_mode = train_mode || s.batchnorm_train;
      fo.progress = cli::make_progress(tool, quiet);
      FinetuneResult r = finetune(model, d, idx, s.loss, y, h, fo);
      cli::end_progress();
      if (mean_loss.empty()) {
        mean_loss.assign(r.loss.size(), 0.0);
        mean_acc.assign(r.acc.size(), 0.0);
        steps = r.step;
      }
      for (size_t k = 0; k < r.loss.size(); ++k) {
        mean_loss[k] += r.loss[k] / double(seeds.size());
        mean_acc[k] += r.acc[k] / double(seeds.size());
      }
      secs_train += r.seconds_train;
      secs_total += r.seconds_total;
      runs.push_back({{"seed", seed}, {"final_loss", r.loss.back()}, {"seconds_train", r.seconds_train},
                      {"steps_measured", r.step[size_t(target_index(r.loss, r.acc, s.target, s.target_value))]}});
    }
    bool reached = true;
    const int64_t k = target_index(mean_loss, mean_acc, s.target, s.target_value, &reached);
    const double step_seconds = secs_train / double(seeds.size()) / double(std::max<int64_t>(1, h.steps));
    if (json) {
      nlohmann::json j;
      j["schema"] = 1;
      j["spec"] = std::filesystem::absolute(s.file).lexically_normal().string();
      j["steps"] = steps[size_t(k)];
      j["reached"] = reached;
      j["horizon_steps"] = horizon;
      j["steps_trained"] = h.steps;
      j["log_every"] = every;
      j["log_from"] = log_from;
      j["data"] = {{"source", d.source}, {"size", N}, {"available", d.available},
                   {"draw", s.data.draw_first ? "first" : "stratified"}};
      j["steps_per_epoch"] = per_epoch;
      j["optimizer"] = to_string(s.optimizer);
      j["global_batch"] = s.global_batch();
      j["epochs"] = double(steps[size_t(k)]) / double(std::max<int64_t>(1, per_epoch));
      j["final_loss"] = mean_loss.back();
      j["final_accuracy"] = mean_acc.back();
      j["step_seconds"] = step_seconds;
      j["seconds"] = step_seconds * double(steps[size_t(k)]);
      j["seconds_train"] = secs_train / double(seeds.size());
      j["seconds_total"] = secs_total;
      nlohmann::json curve = nlohmann::json::array(), acc = nlohmann::json::array();
      for (size_t i = 0; i < steps.size(); ++i) {
        curve.push_back({steps[i], mean_loss[i]});
        acc.push_back({steps[i], mean_acc[i]});
      }
      j["curve"] = curve;
      j["accuracy_curve"] = acc;
      j["runs"] = runs;
      std::fputs((j.dump(1) + "\n").c_str(), stdout);
    } else {
      std::printf("ttpred-finetune: %s\n", s.file.c_str());
      std::printf("  measured steps     %s\n",
                  reached ? std::to_string(steps[size_t(k)]).c_str() : "target not reached");
      std::printf("  loss               %.4f -> %.4f (mean of %zu seed(s))\n", mean_loss.front(), mean_loss.back(),
                  seeds.size());
      std::printf("  train accuracy     %.1f%%\n", 100 * mean_acc.back());
      std::printf("  seconds per step   %.4f\n", step_seconds);
      std::printf("  training seconds   %.2f (all %.2f with evaluation)\n", secs_train / double(seeds.size()),
                  secs_total);
    }
    return 0;
  });
}
