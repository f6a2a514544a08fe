#include "ttpred/data.hpp"

#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "ttpred/error.hpp"

namespace ttpred {

Eigen::MatrixXd target_matrix(const Dataset& d, const std::vector<int64_t>& idx, int64_t classes,
                              std::vector<int64_t>* labels) {
  const int64_t n = int64_t(idx.size()), C = classes;
  if (!d.has_labels() && d.target_dim != C)
    throw Error(Exit::invalid, d.source + ": y: float targets have " + std::to_string(d.target_dim) +
                                   " columns but the model has C=" + std::to_string(C) + " outputs");
  Eigen::MatrixXd y = Eigen::MatrixXd::Zero(n, C);
  if (labels) labels->resize(size_t(n));
  for (int64_t r = 0; r < n; ++r) {
    const int64_t i = idx[size_t(r)];
    int64_t label = 0;
    if (d.has_labels()) {
      label = d.y[size_t(i)];
      if (label < 0 || label >= C)
        throw Error(Exit::invalid, d.source + ": y: label " + std::to_string(label) + " of sample " +
                                       std::to_string(i) + " is out of range for a model with C=" +
                                       std::to_string(C) + " outputs");
      y(r, label) = 1.0;
    } else {
      for (int64_t c = 0; c < C; ++c) y(r, c) = d.targets[size_t(i * C + c)];
      Eigen::Index am;
      y.row(r).maxCoeff(&am);
      label = am;
    }
    if (labels) (*labels)[size_t(r)] = label;
  }
  return y;
}

Eigen::MatrixXd target_matrix(const Dataset& d, int64_t rows, int64_t classes) {
  std::vector<int64_t> idx(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) idx[size_t(i)] = i;
  return target_matrix(d, idx, classes);
}

int64_t Dataset::sample_numel() const {
  int64_t k = 1;
  for (auto s : sample_shape) k *= s;
  return k;
}

namespace {

std::vector<unsigned char> read_maybe_gz(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(Exit::input, path + ": no such file");
  gzFile f = gzopen(path.c_str(), "rb");  // reads raw files transparently too
  if (!f) throw Error(Exit::input, path + ": cannot open for reading");
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  for (;;) {
    int k = gzread(f, buf, sizeof buf);
    if (k < 0) {
      gzclose(f);
      throw Error(Exit::input, path + ": read error (corrupt gzip?)");
    }
    if (k == 0) break;
    out.insert(out.end(), buf, buf + k);
  }
  gzclose(f);
  return out;
}

uint32_t be32(const std::vector<unsigned char>& b, size_t at) {
  return (uint32_t(b[at]) << 24) | (uint32_t(b[at + 1]) << 16) | (uint32_t(b[at + 2]) << 8) | b[at + 3];
}

// Returns dims; data starts after the header.
std::vector<int64_t> idx_header(const std::vector<unsigned char>& b, const std::string& path,
                                size_t& offset) {
  if (b.size() < 4 || b[0] != 0 || b[1] != 0)
    throw Error(Exit::input, path + ": not an IDX file (bad magic number)");
  if (b[2] != 0x08) throw Error(Exit::input, path + ": IDX element type must be unsigned byte (0x08)");
  int ndim = b[3];
  if (ndim < 1 || b.size() < 4 + 4 * size_t(ndim)) throw Error(Exit::input, path + ": truncated IDX header");
  std::vector<int64_t> dims;
  size_t total = 1;
  offset = 4 + 4 * size_t(ndim);
  for (int i = 0; i < ndim; ++i) {
    dims.push_back(be32(b, 4 + 4 * i));
    // Refuse sizes beyond the bytes present before multiplying further (no overflow).
    if (dims.back() != 0 && total > (b.size() - offset) / size_t(dims.back()))
      throw Error(Exit::input, path + ": truncated IDX data (the header's dimensions need more bytes than the file has)");
    total *= size_t(dims.back());
  }
  if (b.size() < offset + total)
    throw Error(Exit::input, path + ": truncated IDX data (" + std::to_string(b.size() - offset) +
                                 " bytes, header says " + std::to_string(total) + ")");
  return dims;
}

}  // namespace

Dataset read_idx(const std::string& images, const std::string& labels) {
  auto ib = read_maybe_gz(images);
  auto lb = read_maybe_gz(labels);
  size_t io = 0, lo = 0;
  auto idims = idx_header(ib, images, io);
  auto ldims = idx_header(lb, labels, lo);
  if (ldims.size() != 1) throw Error(Exit::input, labels + ": an IDX label file must be 1-dimensional");
  if (idims.size() < 2) throw Error(Exit::input, images + ": an IDX image file needs >= 2 dimensions");
  if (idims[0] != ldims[0])
    throw Error(Exit::invalid, images + ": " + std::to_string(idims[0]) + " images but " + labels + " has " +
                                   std::to_string(ldims[0]) + " labels");
  Dataset d;
  d.source = images;
  d.n = idims[0];
  d.sample_shape.push_back(1);  // one channel
  for (size_t i = 1; i < idims.size(); ++i) d.sample_shape.push_back(idims[i]);
  const int64_t k = d.sample_numel();
  d.x.resize(size_t(d.n * k));
  for (size_t i = 0; i < d.x.size(); ++i) d.x[i] = float(ib[io + i]) / 255.0f;
  d.y.resize(size_t(d.n));
  for (int64_t i = 0; i < d.n; ++i) d.y[size_t(i)] = lb[lo + size_t(i)];
  d.available = d.n;
  return d;
}

void check_finite(const Dataset& d) {
  const int64_t k = d.sample_numel();
  for (size_t i = 0; i < d.x.size(); ++i)
    if (!std::isfinite(d.x[i]))
      throw Error(Exit::invalid, d.source + ": x: non-finite value (" + std::to_string(d.x[i]) + ") in sample " +
                                     std::to_string(int64_t(i) / k));
  for (size_t i = 0; i < d.targets.size(); ++i)
    if (!std::isfinite(d.targets[i]))
      throw Error(Exit::invalid, d.source + ": y: non-finite target in sample " +
                                     std::to_string(int64_t(i) / d.target_dim));
  for (size_t i = 0; i < d.y.size(); ++i)
    if (d.y[i] < 0)
      throw Error(Exit::invalid, d.source + ": y: negative label " + std::to_string(d.y[i]) + " in sample " +
                                     std::to_string(i));
}

Dataset load_dataset(const Spec& spec) {
  const DataSpec& ds = spec.data;
  Dataset d = ds.path.empty() ? read_idx(ds.images, ds.labels) : read_torch_dict(ds.path);
  const int64_t k = d.sample_numel();
  if (!ds.classes.empty()) {
    if (!d.has_labels()) spec.fail("data.classes", "needs class-id labels, but y holds float targets");
    std::map<int64_t, int64_t> remap;
    for (size_t i = 0; i < ds.classes.size(); ++i) remap[ds.classes[i]] = int64_t(i);
    int64_t m = 0;
    for (int64_t i = 0; i < d.n; ++i) {
      auto it = remap.find(d.y[size_t(i)]);
      if (it == remap.end()) continue;
      if (m != i) std::copy(d.x.begin() + i * k, d.x.begin() + (i + 1) * k, d.x.begin() + m * k);
      d.y[size_t(m)] = it->second;
      ++m;
    }
    if (m == 0) spec.fail("data.classes", "no sample of the file " + d.source + " has one of these labels");
    d.n = m;
    d.x.resize(size_t(m * k));
    d.y.resize(size_t(m));
  }
  d.available = d.n;
  if (ds.size > 0 && ds.size < d.n) {
    d.n = ds.size;
    d.x.resize(size_t(d.n * k));
    if (d.has_labels()) d.y.resize(size_t(d.n));
    if (!d.targets.empty()) d.targets.resize(size_t(d.n * d.target_dim));
  }
  if (ds.normalize) {
    const float mean = float(ds.mean), inv = float(1.0 / ds.std);
    for (auto& v : d.x) v = (v - mean) * inv;
  }
  check_finite(d);
  return d;
}

}  // namespace ttpred
