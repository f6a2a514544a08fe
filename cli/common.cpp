#include "common.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "ttpred/error.hpp"

namespace ttpred::cli {

namespace {

// Range checks that say "must be > 0 (got 0)" (CLI11's own print the limits of a double).
bool as_number(const std::string& text, double& v) {
  char* end = nullptr;
  v = std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size();
}

CLI::Validator number_check(const std::string& desc, std::function<bool(double)> ok, bool integer = false) {
  return CLI::Validator(
      [desc, ok, integer](std::string& text) -> std::string {
        double v;
        if (!as_number(text, v) || (integer && v != std::floor(v)))
          return std::string("must be ") + (integer ? "an integer" : "a number") + " " + desc + " (got '" + text + "')";
        if (!ok(v)) return "must be " + desc + " (got " + text + ")";
        return "";
      },
      desc);
}

CLI::Validator positive() { return number_check("> 0", [](double v) { return v > 0; }); }
CLI::Validator positive_int() { return number_check("> 0", [](double v) { return v > 0; }, true); }
CLI::Validator non_negative() { return number_check(">= 0", [](double v) { return v >= 0; }); }
CLI::Validator non_negative_int() { return number_check(">= 0", [](double v) { return v >= 0; }, true); }

}  // namespace

CLI::Validator in_range(double lo, double hi, bool open_hi, bool integer) {
  std::ostringstream d;
  d << "in [" << lo << ", " << hi << (open_hi ? ")" : "]");
  return number_check(d.str(), [=](double v) { return v >= lo && (open_hi ? v < hi : v <= hi); }, integer);
}

CLI::Validator value_not_option() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text.size() > 1 && text[0] == '-' && !std::isdigit(static_cast<unsigned char>(text[1])) && text[1] != '.')
          return "missing value (got the option '" + text + "')";
        return "";
      },
      "");
}

void check_writable(const std::string& path, const std::string& option) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) throw Error(Exit::input, option + " " + path + ": is a directory, not a file");
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (fs::exists(p, ec) ? access(path.c_str(), W_OK) != 0 : access(dir.c_str(), W_OK) != 0)
    throw Error(Exit::input, option + " " + path + ": cannot write there (" +
                                 (fs::exists(dir, ec) ? "permission denied" : "no such directory") + ")");
}

void Overrides::add_common(CLI::App& app) {
  app.add_option("--device", device, "Where to compute: auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--lr", lr, "Override optimizer.lr")->check(positive());
  app.add_option("--momentum", momentum, "Override optimizer.momentum")->check(in_range(0, 1, true));
  app.add_option("--weight-decay", weight_decay, "Override optimizer.weight_decay")->check(non_negative());
  app.add_option("--batch-size", batch_size, "Override optimizer.batch_size")->check(positive_int());
  app.add_option("--size", size, "Override data.size (N)")->check(positive_int());
  auto* st = app.add_option("--steps", steps, "Override the horizon, in steps")->check(positive_int());
  app.add_option("--epochs", epochs, "Override the horizon, in epochs")->check(positive())->excludes(st);
  auto* e = app.add_option("--epsilon", epsilon, "Target: |L_t - L_T| < EPSILON")->check(positive());
  auto* l = app.add_option("--target-loss", target_loss, "Target: first t with L_t <= VALUE")
                ->check(non_negative())
                ->excludes(e);
  app.add_option("--target-accuracy", target_accuracy, "Target: first t with training accuracy >= VALUE")
      ->check(in_range(0, 1, false))
      ->excludes(e)
      ->excludes(l);
}

void Overrides::add_estimator(CLI::App& app) {
  add_common(app);
  app.add_option("--subset", subset, "Override data.subset (N0, samples for the Gram matrix)")
      ->check(positive_int());
  app.add_option("--projection", projection, "Gram matrix: auto, exact or countsketch")
      ->check(CLI::IsMember({"auto", "exact", "countsketch"}));
  app.add_option("--projection-dim", projection_dim, "D0 for countsketch")->check(positive_int());
  app.add_option("--runs", runs, "Simulated SGD runs for the band")->check(in_range(1, 1000, false, true));
  app.add_option("--seed", seed, "Seed for the draw of N and N0, the projection and the simulated batches")
      ->check(non_negative_int());
  app.add_option("--relinearize", relinearize,
                 "Run K real SGD steps, recompute the Gram matrix there, simulate the rest (default 0.5 T, at most "
                 "500; 0: off)")
      ->check(non_negative_int());
  app.add_option("--relinearize-fraction", relinearize_fraction,
                 "The automatic K as a fraction of the horizon T (0 < f <= 1, default 0.5; "
                 "engine.relinearize_fraction)")
      ->check(number_check("in (0, 1]", [](double v) { return v > 0 && v <= 1; }, false));
  app.add_option("--relinearize-cap", relinearize_cap,
                 "The automatic K's cap in real steps (default 500; engine.relinearize_cap)")
      ->check(positive_int());
  app.add_option("--diagnose-steps", diagnose_steps, "Real SGD steps compared with the linearized run (0: off)")
      ->check(non_negative_int());
  app.add_option("--trace-ntk", trace_ntk, "Trace-NTK with K output projections (Θ ≈ K ⊗ I_C; 0: off)")
      ->check(non_negative_int());
  app.add_flag("--no-training", no_training,
               "The paper's training-free mode: no real SGD step at all (--relinearize 0 --diagnose-steps 0)");
  app.add_option("--kernel-growth", kernel_growth,
                 "After re-linearizing, let the kernel keep changing with the progress (true/false; engine.kernel_growth)");
  app.add_option("--extrapolation-correction", extrapolation_correction,
                 "Stretch the extrapolated curve by its own self-check's error (true/false; "
                 "engine.extrapolation_correction)");
  app.add_option("--tail-subset", tail_subset,
                 "N0 < N, re-linearized: simulate the rest on N0 samples drawn at w_K stratified by class and loss "
                 "(stratified) or on the N0 drawn at w0 (tracked) (engine.tail_subset)")
      ->check(CLI::IsMember({"stratified", "tracked"}));
  app.add_option("--tail-parts", tail_parts, "Disjoint draws of N0 for the rest, averaged (1-4; engine.tail_parts)")
      ->check(in_range(1, 4, false, true));
  app.add_option("--prefix-runs", prefix_runs,
                 "Re-linearized: run the real prefix this many times with other batches and average its curve "
                 "(1-4, default 1; engine.prefix_runs)")
      ->check(in_range(1, 4, false, true));
  app.add_flag("--no-extrapolate", no_extrapolate,
               "N0 < N: predict for the N0 samples themselves (engine.extrapolate: false)");
  app.add_option("--step-seconds", step_seconds, "Seconds per SGD step (skip timing real steps)")->check(positive());
}

void Overrides::apply(Spec& s) const {
  if (!device.empty()) s.device = device;
  if (lr) s.lr = *lr;
  if (momentum) s.momentum = *momentum;
  if (weight_decay) s.weight_decay = *weight_decay;
  if (batch_size) s.batch_size = *batch_size;
  if (size) s.data.size = *size;
  if (subset) s.data.subset = *subset;
  if (steps) s.steps = *steps, s.epochs = 0;
  if (epochs) s.epochs = *epochs, s.steps = 0;
  if (epsilon) s.target = TargetKind::epsilon, s.target_value = *epsilon;
  if (target_loss) s.target = TargetKind::loss, s.target_value = *target_loss;
  if (target_accuracy) s.target = TargetKind::accuracy, s.target_value = *target_accuracy;
  if (!projection.empty()) s.projection = projection;
  if (projection_dim) s.projection_dim = *projection_dim;
  if (runs) s.runs = int(*runs);
  if (seed) s.seed = uint64_t(*seed);
  if (step_seconds) s.step_seconds = *step_seconds;
  if (relinearize) s.relinearize = *relinearize;
  if (relinearize_fraction) s.relinearize_fraction = *relinearize_fraction;
  if (relinearize_cap) s.relinearize_cap = *relinearize_cap;
  if (diagnose_steps) s.diagnose_steps = *diagnose_steps;
  if (no_training) s.relinearize = 0, s.diagnose_steps = 0;
  if (trace_ntk) s.trace_ntk = *trace_ntk;
  if (no_extrapolate) s.extrapolate = false;
  if (kernel_growth) s.kernel_growth = *kernel_growth;
  if (extrapolation_correction) s.extrapolation_correction = *extrapolation_correction;
  if (!tail_subset.empty()) s.tail_stratified = tail_subset == "stratified";
  if (tail_parts) s.tail_parts = int(*tail_parts);
  if (prefix_runs) s.prefix_runs = int(*prefix_runs);
}

namespace {

// The progress line on stderr (a TTY only): "tool: phase  42% (420/1000)  12 s". A heartbeat
// thread redraws it once a second with the elapsed time, so that a phase that cannot count its
// work (one LAPACK eigendecomposition, a copy of Θ) still shows that ttpred is working.
class ProgressLine {
 public:
  void start(const std::string& tool) {
    std::lock_guard<std::mutex> lock(mu_);
    tool_ = tool;
    t0_ = last_ = std::chrono::steady_clock::now();
    if (!beat_.joinable()) beat_ = std::thread([this] { heartbeat(); });
  }
  void update(const char* phase, int64_t done, int64_t total) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto t = std::chrono::steady_clock::now();
    // At most 10 lines a second, but a new phase and a phase's end always show.
    if (done != total && phase_ == phase && t - last_ < std::chrono::milliseconds(100)) {
      done_ = done, total_ = total;
      return;
    }
    phase_ = phase, done_ = done, total_ = total;
    draw(t);
  }
  void end() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      if (shown_) std::fprintf(stderr, "\r\033[K"), std::fflush(stderr);
      shown_ = false;
      phase_.clear();
    }
    cv_.notify_all();
    if (beat_.joinable()) beat_.join();
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  ~ProgressLine() { end(); }

 private:
  void draw(std::chrono::steady_clock::time_point t) {  // with mu_ held
    last_ = t;
    const long secs = long(std::chrono::duration_cast<std::chrono::seconds>(t - t0_).count());
    std::fprintf(stderr, "\r%s: %-11s %3d%% (%lld/%lld)  %ld s\033[K", tool_.c_str(), phase_.c_str(),
                 int(100 * done_ / std::max<int64_t>(1, total_)), (long long)done_, (long long)total_, secs);
    std::fflush(stderr);
    shown_ = true;
  }
  void heartbeat() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(250));
      const auto t = std::chrono::steady_clock::now();
      if (!stop_ && !phase_.empty() && t - last_ >= std::chrono::seconds(1)) draw(t);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread beat_;
  std::string tool_, phase_;
  int64_t done_ = 0, total_ = 0;
  std::chrono::steady_clock::time_point t0_, last_;
  bool shown_ = false, stop_ = false;
};

ProgressLine& progress_line() {
  static ProgressLine line;
  return line;
}

}  // namespace

Progress make_progress(const std::string& tool, bool quiet) {
  if (quiet || !isatty(STDERR_FILENO)) return {};
  progress_line().start(tool);
  return [](const char* phase, int64_t done, int64_t total) { progress_line().update(phase, done, total); };
}

void end_progress() { progress_line().end(); }

int guarded(const std::string& tool, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    end_progress();
    std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), e.what());
    return int(e.code());
  } catch (const std::bad_alloc&) {
    end_progress();
    std::fprintf(stderr, "%s: error: out of memory (lower data.subset or use engine.projection: countsketch)\n",
                 tool.c_str());
    return int(Exit::internal);
  } catch (const std::exception& e) {
    end_progress();
    std::string what = e.what();
    std::fprintf(stderr, "%s: internal error: %s\n", tool.c_str(), what.substr(0, what.find('\n')).c_str());
    return int(Exit::internal);
  } catch (...) {
    end_progress();
    std::fprintf(stderr, "%s: internal error (unknown exception)\n", tool.c_str());
    return int(Exit::internal);
  }
}

int parse(CLI::App& app, int argc, char** argv, const std::string& tool) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ExtrasError&) {
    // CLI11 lists the extras last first ("3 --trace-ntk 5 --runs"): name the first unknown option.
    std::string first;
    for (const auto& a : app.remaining())
      if (a.size() > 1 && a[0] == '-') {
        first = a;
        break;
      }
    if (first.empty() && !app.remaining().empty()) first = app.remaining().front();
    const bool option = first.size() > 1 && first[0] == '-';
    std::fprintf(stderr, "%s: error: %s '%s' (see --help)\n", tool.c_str(),
                 option ? "unknown option" : "unexpected argument", first.substr(0, 200).c_str());
    return int(Exit::usage);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: error: %s (see --help)\n", tool.c_str(), e.what());
    return int(Exit::usage);
  }
  return -1;
}

}  // namespace ttpred::cli
