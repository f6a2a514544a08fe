// ttpred-estimate: predict the fine-tuning time of a job spec without training.
#include <fmt/format.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"
#include "ttpred/cache.hpp"
#include "ttpred/error.hpp"
#ifndef TTPRED_FRONT
#include "ttpred/estimate.hpp"
#endif

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What the step time is measured on, when the spec does not give it: the CPU model
// and the NVIDIA GPUs of this node (a shared cache must not hand one GPU type's
// step time to another).
std::string hardware_tag(const ttpred::Spec& spec) {
  if (spec.step_seconds > 0) return "step_seconds given";
  std::string tag = "device=" + spec.device;
  std::istringstream cpu(read_all("/proc/cpuinfo"));
  for (std::string line; std::getline(cpu, line);)
    if (line.rfind("model name", 0) == 0) {
      tag += ";" + line;
      break;
    }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    std::istringstream info(read_all(e.path().string() + "/information"));
    for (std::string line; std::getline(info, line);)
      if (line.rfind("Model:", 0) == 0) tag += ";" + line;
  }
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) tag += std::string(";CUDA_VISIBLE_DEVICES=") + v;
  return tag;
}

// Key of the prediction cache: ttpred's version, the spec file's bytes and the
// command line (every value the prediction depends on is in one of them), the
// model file's bytes, the data files' identity (path, size, mtime) and the hardware.
std::string prediction_key(const ttpred::Spec& spec, const std::string& spec_path,
                           const std::vector<std::string>& args) {
  std::string k = "ttpred-prediction-cache 1\n" + std::string(TTPRED_VERSION) + "\n";
  const std::string spec_bytes = read_all(spec_path);
  k += "spec " + ttpred::sha256_hex(spec_bytes) + "\n";
  for (const auto& a : args) k += "arg " + std::to_string(a.size()) + ":" + a + "\n";
  k += "model " + ttpred::file_sha256(spec.resolve(spec.model)) + "\n";
  for (const std::string* f : {&spec.data.path, &spec.data.images, &spec.data.labels}) {
    if (f->empty()) continue;
    const std::string path = spec.resolve(*f);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0)
      k += "data " + path + " " + std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec) + "\n";
    else
      k += "data " + path + " missing\n";
  }
  k += "hardware " + hardware_tag(spec) + "\n";
  return ttpred::sha256_hex(k);
}

// A JSON object from the cache gets "cache_hit": true as its first field.
std::string mark_hit(const std::string& json) {
  const auto brace = json.find('{');
  if (brace == std::string::npos) return json;
  return json.substr(0, brace + 1) + "\"cache_hit\": true, " + json.substr(brace + 1);
}

#ifdef TTPRED_FRONT
// The engine, a separate binary that links LibTorch (about 0.6 s to load, more than a
// cached answer takes): next to this one in a build tree, in libexec/ttpred once installed.
[[noreturn]] void exec_engine(char** argv, const std::string& tool) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::vector<std::filesystem::path> candidates;
  if (const char* e = std::getenv("TTPRED_ENGINE")) candidates.emplace_back(e);
  if (!ec) {
    candidates.push_back(self.parent_path() / "ttpred-estimate-engine");
    candidates.push_back(self.parent_path().parent_path() / "libexec" / "ttpred" / "ttpred-estimate-engine");
  }
  for (const auto& c : candidates)
    if (::access(c.c_str(), X_OK) == 0) {
      ::execv(c.c_str(), argv);
      break;  // found but cannot be run: report it
    }
  std::fprintf(stderr, "%s: internal error: the prediction engine ttpred-estimate-engine is missing or cannot run "
               "(looked next to %s and in ../libexec/ttpred; TTPRED_ENGINE names it)\n",
               tool.c_str(), ec ? "this program" : self.c_str());
  std::fflush(stderr);
  std::_Exit(int(ttpred::Exit::internal));
}
#endif

}  // namespace

int main(int argc, char** argv) {
  using namespace ttpred;
  const std::string tool = "ttpred-estimate";
  CLI::App app{
      "Predict how long fine-tuning a TorchScript model takes, from its linearized dynamics (the empirical NTK), "
      "without training it.\n\nExit codes: 0 ok, 1 internal error, 2 usage, 3 spec error, 4 input file error, "
      "5 invalid model or data, 6 device unavailable, 7 engine.max_seconds cannot be met.",
      tool};
  std::string spec_path;
  bool json = false, quiet = false, csv = false, no_cache = false;
  std::string plot, cache_dir;
  int curve_points = 200;
  std::optional<double> max_seconds;
  cli::Overrides ov;
  app.add_option("--spec", spec_path, "Job spec (YAML); default: the embedded Fashion-MNIST example")
      ->check(cli::value_not_option());
  app.add_flag("--json", json, "Print one JSON object (docs/json.md) instead of the table");
  app.add_flag("--no-cache", no_cache, "Neither read nor write the Gram-matrix cache (docs/performance.md)");
  app.add_option("--cache-dir", cache_dir,
                 "Prediction cache: reuse a whole prediction made with the same model, data, spec, command line, "
                 "hardware and ttpred version (docs/performance.md)");
  app.add_flag("--csv", csv, "With a sweep: print CSV rows instead of the table");
  app.add_option("--plot", plot, "Write the predicted loss curves as an SVG file")->check(cli::value_not_option());
  app.add_flag("-q,--quiet", quiet, "No progress on stderr");
  app.add_option("--curve-points", curve_points, "Points of the loss curve in the output")
      ->check(cli::in_range(2, 100000, false, true));
  ov.add_estimator(app);
  app.add_option("--max-seconds", max_seconds,
                 "Fit the whole prediction in this many seconds: the largest data.subset that fits (a cap on the spec's "
                 "engine.max_seconds; exit code 7 when even the smallest cannot)")
      ->check(CLI::PositiveNumber);
  app.set_version_flag("-V,--version", std::string(TTPRED_VERSION));
  if (int rc = cli::parse(app, argc, argv, tool); rc >= 0) return rc;
  std::vector<std::string> key_args;  // the command line without the cache and progress options
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cache-dir") ++i;
    else if (a.rfind("--cache-dir=", 0) != 0 && a != "-q" && a != "--quiet") key_args.push_back(a);
  }

  return cli::guarded(tool, [&] {
    if (!plot.empty()) cli::check_writable(plot, "--plot");  // before the work, not after it
    std::string notice;  // shown once: by the engine, or by the front with a cached answer
    if (spec_path.empty()) {
      spec_path = default_spec_path();
      if (!quiet) notice = tool + ": no --spec given: using the embedded default " + spec_path + "\n";
    }
#ifndef TTPRED_FRONT
    std::fputs(notice.c_str(), stderr);
#endif
    Spec spec = load_spec(spec_path);
    ov.apply(spec);
    // A cap: the smaller of --max-seconds and the spec's engine.max_seconds (a plugstack default cannot be raised).
    if (max_seconds && !(spec.max_seconds > 0 && spec.max_seconds <= *max_seconds)) {
      spec.max_seconds = *max_seconds;
      spec.lines.erase("engine.max_seconds");  // messages must not point at the spec's value
    }
    validate(spec);
    const bool use_pred_cache = !cache_dir.empty() && plot.empty() && !no_cache;
    std::string key;
    if (use_pred_cache) {
      key = prediction_key(spec, spec_path, key_args);
      if (auto hit = prediction_cache_load(cache_dir, key)) {
#ifdef TTPRED_FRONT
        std::fputs(notice.c_str(), stderr);
#endif
        std::fputs((json ? mark_hit(hit->out) : hit->out).c_str(), stdout);
        std::fputs(hit->err.c_str(), stderr);
        if (!quiet) std::fprintf(stderr, "%s: prediction from the cache %s/%s.pred\n", tool.c_str(),
                                 cache_dir.c_str(), key.c_str());
        return 0;
      }
    }
#ifdef TTPRED_FRONT
    // Not in the cache: the engine does the same checks again (they take milliseconds) and the work.
    std::fflush(stdout);
    exec_engine(argv, tool);
#else
    EstimateOptions opt;
    opt.progress = cli::make_progress(tool, quiet);
    opt.curve_points = curve_points;
    opt.use_cache = !no_cache;
    auto write_plot = [&](const std::vector<Prediction>& ps) {
      if (plot.empty()) return;
      std::FILE* f = std::fopen(plot.c_str(), "w");
      if (!f) throw Error(Exit::input, plot + ": cannot write the plot");
      std::string svg = curves_svg(ps);
      bool ok = std::fwrite(svg.data(), 1, svg.size(), f) == svg.size();
      ok = std::fclose(f) == 0 && ok;
      if (!ok) throw Error(Exit::input, plot + ": write failed");
    };
    CachedOutput result;
    if (!spec.sweep.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<Prediction> ps = estimate_all(expand_sweep(spec), opt);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      cli::end_progress();
      write_plot(ps);
      if (json)
        result.out = sweep_json(ps, secs);
      else if (csv)
        result.out = sweep_csv(ps);
      else
        result.out = sweep_table(ps, secs);
    } else {
      if (csv) throw Error(Exit::usage, "--csv needs a sweep section in the spec");
      Prediction p = estimate(spec, opt);
      cli::end_progress();
      write_plot({p});
      if (json) {
        result.out = to_json(p);
      } else {
        result.out = to_table(p);
        for (const auto& w : p.warnings) result.err += tool + ": warning: " + w + "\n";
      }
    }
    std::fputs(result.out.c_str(), stdout);
    std::fputs(result.err.c_str(), stderr);
    if (use_pred_cache && !prediction_cache_store(cache_dir, key, result))
      std::fprintf(stderr, "%s: warning: cannot write the prediction cache %s (it must be a directory of this user "
                   "that no one else can write to)\n", tool.c_str(), cache_dir.c_str());
    return 0;
#endif
  });
}
