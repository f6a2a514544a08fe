// Shared by the ttpred command-line tools: overrides, progress, error reporting.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <string>

#include "ttpred/model.hpp"
#include "ttpred/spec.hpp"

namespace ttpred::cli {

// Command-line values that override the spec's.
struct Overrides {
  std::string device;
  std::optional<double> lr, momentum, weight_decay, epochs, epsilon, target_loss, target_accuracy, step_seconds,
      relinearize_fraction;
  std::optional<int64_t> batch_size, subset, size, steps, projection_dim, runs, seed, relinearize, diagnose_steps,
      trace_ntk, tail_parts, prefix_runs, relinearize_cap;
  std::string projection, tail_subset;
  bool no_training = false, no_extrapolate = false;
  std::optional<bool> kernel_growth, extrapolation_correction;
  void add_common(CLI::App& app);     // optimizer, data size, horizon, target, device
  void add_estimator(CLI::App& app);  // those and the estimator's engine options
  void apply(Spec& s) const;  // then validate(s)
};

// "must be in [lo, hi] (got x)" checks; "missing value" for an option's value that is an option.
CLI::Validator in_range(double lo, double hi, bool open_hi, bool integer = false);
CLI::Validator value_not_option();
// Error(usage) "OPTION PATH: cannot write there (...)" unless PATH can be written.
void check_writable(const std::string& path, const std::string& option);

// Progress on stderr, only when stderr is a terminal and not --quiet.
Progress make_progress(const std::string& tool, bool quiet);
void end_progress();

// Runs body, turning exceptions into "TOOL: error: ..." and the documented exit code.
int guarded(const std::string& tool, const std::function<int()>& body);

// Parse argv with CLI11: usage errors print one line and give exit code 2.
// Returns -1 when the program should go on.
int parse(CLI::App& app, int argc, char** argv, const std::string& tool);

}  // namespace ttpred::cli
