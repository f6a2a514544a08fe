// Training data held on the host as plain arrays (no LibTorch in this header).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ttpred/spec.hpp"

namespace ttpred {

struct Dataset {
  std::string source;                 // file(s) it came from, for messages
  std::vector<int64_t> sample_shape;  // shape of one sample, e.g. {1, 28, 28}
  int64_t n = 0;                      // samples loaded
  int64_t available = 0;              // samples in the file(s) after the class filter
  std::vector<int64_t> class_counts;  // samples of each class id among those `available`
  std::vector<std::string> class_names;  // ImageFolder folders / CSV label names, by class id
  bool uint8 = false;                 // x came as uint8 and was scaled to [0, 1]
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

// Load the spec's data (docs/spec.md "Data"): IDX pair, torch.save'd file,
// .npy/.npz, CSV or ImageFolder directory; class filter; then N = min(data.size,
// available) samples drawn at random, stratified by class (stratified_order,
// seeded by engine.seed; data.draw: first keeps the file's first N); layout,
// channels, resize and normalisation applied. Every prefix of the result is a
// stratified draw too, so the N0 subset is its first N0 samples.
// Throws Error(input) for unreadable files, Error(invalid) for bad contents.
Dataset load_dataset(const Spec& spec);

// A permutation of 0..n-1 (n = labels.size()): each class shuffled, the classes
// interleaved so that every prefix of length m holds about m * n_c / n samples of
// class c (within one). Deterministic for a seed.
std::vector<int64_t> stratified_order(const std::vector<int64_t>& labels, uint64_t seed);

// A warning when the first n samples of d miss classes that d.class_counts has,
// or their largest class is over 10x their smallest; "" otherwise. `what` names
// the draw in the message ("the N0 = 500 samples for the Gram matrix").
std::string draw_warning(const Dataset& d, int64_t n, const std::string& what);

// IDX (MNIST format) readers, .gz or raw. Images become float in [0, 1],
// shape {count, 1, rows, cols}.
Dataset read_idx(const std::string& images, const std::string& labels);

// torch.save'd data: a dict {"x", "y"} or {"data", "targets"} (torchvision's
// names), a tuple or list (x, y); x float or uint8 (scaled to [0, 1]), y int64
// [N] or float [N, C]. A pickled TensorDataset cannot be read from C++: the
// error says how to convert it.
Dataset read_torch_dict(const std::string& path);

// One NumPy array (C order after reading; little-endian f4/f8, (u)int8..64, bool).
struct NpyArray {
  std::vector<int64_t> shape;
  char kind = 'f';  // f, i, u, b
  int itemsize = 4;
  std::vector<unsigned char> bytes;
  double at(int64_t i) const;
  int64_t numel() const;
};
NpyArray parse_npy(const std::vector<unsigned char>& bytes, const std::string& what);
NpyArray read_npy(const std::string& path);
// Members of an .npz (numpy.savez or savez_compressed), by name without ".npy".
std::map<std::string, NpyArray> read_npz(const std::string& path);

// CSV with a header row: every column but `label_column` ("" = "label") is a
// float feature; labels are class ids, or names (ids in sorted order).
Dataset read_csv(const std::string& path, const std::string& label_column);

// ImageFolder tree ROOT/CLASS/FILE.{png,jpg,jpeg}: classes in sorted order (as
// torchvision.datasets.ImageFolder), files sorted in each.
struct ImageFolder {
  std::string root;
  std::vector<std::string> class_names, files;
  std::vector<int64_t> labels;
};
ImageFolder list_image_folder(const std::string& root);
// Decode a PNG or JPEG into [channels, H, W] floats in [0, 1] (channels 1: gray,
// 3: RGB, converted by the decoder); sets height and width.
std::vector<float> decode_image(const std::string& path, int64_t channels, int64_t& height, int64_t& width);
// F.interpolate(mode="bilinear", align_corners=False) of a [c, h, w] image.
void resize_bilinear(const float* src, int64_t c, int64_t h, int64_t w, float* dst, int64_t h2, int64_t w2);

// Checks shared by every source: NaN/Inf in x or targets, negative labels.
void check_finite(const Dataset& d);

}  // namespace ttpred
