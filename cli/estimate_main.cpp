// ttpred-estimate: predict the fine-tuning time of a job spec without training.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "common.hpp"
#include "ttpred/error.hpp"
#include "ttpred/estimate.hpp"

int main(int argc, char** argv) {
  using namespace ttpred;
  const std::string tool = "ttpred-estimate";
  CLI::App app{
      "Predict how long fine-tuning a TorchScript model takes, from its linearized dynamics (the empirical NTK), "
      "without training it.\n\nExit codes: 0 ok, 1 internal error, 2 usage, 3 spec error, 4 input file error, "
      "5 invalid model or data, 6 device unavailable.",
      tool};
  std::string spec_path;
  bool json = false, quiet = false, csv = false, no_cache = false;
  std::string plot;
  int curve_points = 200;
  cli::Overrides ov;
  app.add_option("--spec", spec_path, "Job spec (YAML); default: the embedded Fashion-MNIST example")
      ->check(cli::value_not_option());
  app.add_flag("--json", json, "Print one JSON object (docs/json.md) instead of the table");
  app.add_flag("--no-cache", no_cache, "Neither read nor write the Gram-matrix cache (docs/performance.md)");
  app.add_flag("--csv", csv, "With a sweep: print CSV rows instead of the table");
  app.add_option("--plot", plot, "Write the predicted loss curves as an SVG file")->check(cli::value_not_option());
  app.add_flag("-q,--quiet", quiet, "No progress on stderr");
  app.add_option("--curve-points", curve_points, "Points of the loss curve in the output")
      ->check(cli::in_range(2, 100000, false, true));
  ov.add_estimator(app);
  app.set_version_flag("-V,--version", std::string(TTPRED_VERSION));
  if (int rc = cli::parse(app, argc, argv, tool); rc >= 0) return rc;

  return cli::guarded(tool, [&] {
    if (!plot.empty()) cli::check_writable(plot, "--plot");  // before the work, not after it
    if (spec_path.empty()) {
      spec_path = default_spec_path();
      if (!quiet) std::fprintf(stderr, "%s: no --spec given: using the embedded default %s\n", tool.c_str(),
                               spec_path.c_str());
    }
    Spec spec = load_spec(spec_path);
    ov.apply(spec);
    validate(spec);
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
    if (!spec.sweep.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<Prediction> ps = estimate_all(expand_sweep(spec), opt);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      cli::end_progress();
      write_plot(ps);
      if (json)
        std::fputs(sweep_json(ps, secs).c_str(), stdout);
      else if (csv)
        std::fputs(sweep_csv(ps).c_str(), stdout);
      else
        std::fputs(sweep_table(ps, secs).c_str(), stdout);
      return 0;
    }
    if (csv) throw Error(Exit::usage, "--csv needs a sweep section in the spec");
    Prediction p = estimate(spec, opt);
    cli::end_progress();
    write_plot({p});
    if (json) {
      std::fputs(to_json(p).c_str(), stdout);
    } else {
      std::fputs(to_table(p).c_str(), stdout);
      for (const auto& w : p.warnings) std::fprintf(stderr, "%s: warning: %s\n", tool.c_str(), w.c_str());
    }
    return 0;
  });
}
