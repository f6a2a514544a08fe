// Training data held on the host as plain arrays (no LibTorch in this header).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <string>
#include <vector>

#include "ttpred/spec.hpp"

namespace ttpred {

struct Dataset {
  std::string source;                 // file(s) it came from, for messages
  std::vector<int64_t> sample_shape;  // shape of one sample, e.g. {1, 28, 28}
  int64_t n = 0;                      // samples loaded
  int64_t available = 0;              // samples in the file(s) after the class filter
  std::vector<float> x;               // n * sample_numel(), row-major
  std::vector<int64_t> y;             // class ids; empty when `targets` is used
  std::vector<float> targets;         // n * target_dim float targets (mse only)
  int64_t target_dim = 0;

  int64_t sample_numel() const;
  bool has_labels() const { return !y.empty(); }
};

// Targets of samples idx as an idx.size() × C matrix (row r = sample idx[r]):
// one-hot rows for class ids, the float targets otherwise; and the class id of
// each row (the argmax for float targets), when `labels` is given. Throws
// Error(invalid) for a class id >= C or float targets that are not C wide.
Eigen::MatrixXd target_matrix(const Dataset& d, const std::vector<int64_t>& idx, int64_t classes,
                              std::vector<int64_t>* labels = nullptr);
// The same for samples 0 .. rows-1.
Eigen::MatrixXd target_matrix(const Dataset& d, int64_t rows, int64_t classes);

// Load the spec's data: torch.save'd dict or IDX pair, class filter and
// normalisation applied, the first min(data.size, available) samples kept.
// Throws Error(input) for unreadable files, Error(invalid) for bad contents.
Dataset load_dataset(const Spec& spec);

// IDX (MNIST format) readers, .gz or raw. Images become float in [0, 1],
// shape {count, 1, rows, cols}.
Dataset read_idx(const std::string& images, const std::string& labels);

// torch.save({"x": float [N, ...], "y": int64 [N] or float [N, C]}) files.
Dataset read_torch_dict(const std::string& path);

// Checks shared by every source: NaN/Inf in x or targets, negative labels.
void check_finite(const Dataset& d);

}  // namespace ttpred
