#include "ttpred/data.hpp"

#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <algorithm>
#include <cctype>
#include <map>
#include <random>

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

namespace {

// file_index[r]: the file's index of sample r (empty: r itself), for messages.
void check_finite(const Dataset& d, const std::vector<int64_t>& file_index) {
  auto at = [&](int64_t r) { return std::to_string(file_index.empty() ? r : file_index[size_t(r)]); };
  const int64_t k = d.sample_numel();
  for (size_t i = 0; i < d.x.size(); ++i)
    if (!std::isfinite(d.x[i]))
      throw Error(Exit::invalid, d.source + ": x: non-finite value (" + std::to_string(d.x[i]) + ") in sample " +
                                     at(int64_t(i) / k));
  for (size_t i = 0; i < d.targets.size(); ++i)
    if (!std::isfinite(d.targets[i]))
      throw Error(Exit::invalid, d.source + ": y: non-finite target in sample " + at(int64_t(i) / d.target_dim));
  for (size_t i = 0; i < d.y.size(); ++i)
    if (d.y[i] < 0)
      throw Error(Exit::invalid, d.source + ": y: negative label " + std::to_string(d.y[i]) + " in sample " +
                                     at(int64_t(i)));
}

}  // namespace

void check_finite(const Dataset& d) { check_finite(d, {}); }

std::vector<int64_t> stratified_order(const std::vector<int64_t>& labels, uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + 0x5851F42D4C957F2DULL);
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(int64_t(i));
  // Key of the j-th (shuffled) sample of class c: (j + u_c) / n_c; sorted by key,
  // every prefix holds each class in proportion.
  std::vector<std::pair<double, int64_t>> keyed;
  keyed.reserve(labels.size());
  for (auto& [c, v] : by_class) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng() % i)]);  // Fisher-Yates
    const double u = double(rng() >> 11) * 0x1.0p-53, n = double(v.size());
    for (size_t j = 0; j < v.size(); ++j) keyed.emplace_back((double(j) + u) / n, v[j]);
  }
  std::stable_sort(keyed.begin(), keyed.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<int64_t> order;
  order.reserve(keyed.size());
  for (const auto& k : keyed) order.push_back(k.second);
  return order;
}

std::string draw_warning(const Dataset& d, int64_t n, const std::string& what) {
  if (!d.has_labels() || n <= 0) return "";
  std::vector<int64_t> got(d.class_counts.size(), 0);
  for (int64_t i = 0; i < std::min(n, d.n); ++i)
    if (d.y[size_t(i)] >= 0 && size_t(d.y[size_t(i)]) < got.size()) ++got[size_t(d.y[size_t(i)])];
  int64_t missing = 0, lo = -1, hi = -1;
  for (size_t c = 0; c < got.size(); ++c) {
    if (d.class_counts[c] == 0) continue;
    if (got[c] == 0) ++missing;
    if (lo < 0 || got[c] < got[size_t(lo)]) lo = int64_t(c);
    if (hi < 0 || got[c] > got[size_t(hi)]) hi = int64_t(c);
  }
  if (missing > 0)
    return what + " miss " + std::to_string(missing) + " of the classes in " + d.source +
           ": the prediction is for a different task (raise the sample count or use data.classes)";
  if (lo >= 0 && got[size_t(hi)] > 10 * got[size_t(lo)])
    return what + " are strongly unbalanced: class " + std::to_string(hi) + " has " + std::to_string(got[size_t(hi)]) +
           " samples, class " + std::to_string(lo) + " has " + std::to_string(got[size_t(lo)]) + " (as in " + d.source +
           ")";
  return "";
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

bool has_ext(const std::string& path, const char* ext) {
  std::string e = std::filesystem::path(path).extension().string();
  for (auto& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  return e == ext;
}

// x of an .npy / .npz as floats; uint8 scaled to [0, 1].
void set_x(Dataset& d, const NpyArray& a, const std::string& what) {
  if (a.shape.size() < 2)
    throw Error(Exit::invalid, what + ": x must be [N, ...] with N samples, got shape " + shape_str(a.shape));
  if (a.kind == 'b') throw Error(Exit::invalid, what + ": x is bool (expected float or uint8 images)");
  d.n = a.shape[0];
  d.sample_shape.assign(a.shape.begin() + 1, a.shape.end());
  d.uint8 = a.kind == 'u' && a.itemsize == 1;
  const int64_t n = a.numel();
  d.x.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) d.x[size_t(i)] = d.uint8 ? float(a.at(i)) / 255.0f : float(a.at(i));
}

void set_y(Dataset& d, const NpyArray& a, const std::string& what) {
  if (a.shape.empty() || a.shape[0] != d.n)
    throw Error(Exit::invalid, what + ": y must have one entry per sample (x has " + std::to_string(d.n) +
                                   ", y has shape " + shape_str(a.shape) + ")");
  if (a.kind == 'f') {
    if (a.shape.size() != 2)
      throw Error(Exit::invalid, what + ": y: float y must be [N, C] targets (mse), got shape " + shape_str(a.shape) +
                                     "; class ids must be integers (y.astype('int64'))");
    d.target_dim = a.shape[1];
    d.targets.resize(size_t(a.numel()));
    for (int64_t i = 0; i < a.numel(); ++i) d.targets[size_t(i)] = float(a.at(i));
    return;
  }
  if (a.kind == 'b' || (a.shape.size() != 1 && !(a.shape.size() == 2 && a.shape[1] == 1)))
    throw Error(Exit::invalid, what + ": y: class ids must be integers [N], got " +
                                   (a.kind == 'b' ? std::string("bool") : "shape " + shape_str(a.shape)));
  d.y.resize(size_t(d.n));
  for (int64_t i = 0; i < d.n; ++i) d.y[size_t(i)] = int64_t(a.at(i));
}

const NpyArray* member(const std::map<std::string, NpyArray>& z, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (auto it = z.find(n); it != z.end()) return &it->second;
  return nullptr;
}

Dataset read_numpy(const DataSpec& ds) {
  Dataset d;
  d.source = ds.path;
  if (has_ext(ds.path, ".npy")) {
    set_x(d, read_npy(ds.path), ds.path);
    if (ds.labels.empty())
      throw Error(Exit::invalid, ds.path + ": an .npy holds one array (x): give the labels as data.labels: y.npy, "
                                           "or save both with numpy.savez(\"data.npz\", x=x, y=y)");
    set_y(d, read_npy(ds.labels), ds.labels);
  } else {
    const auto z = read_npz(ds.path);
    const NpyArray* x = member(z, {"x", "data", "images", "X", "inputs"});
    const NpyArray* y = member(z, {"y", "targets", "labels", "Y"});
    if (!x || !y) {
      std::string keys;
      for (const auto& kv : z) keys += (keys.empty() ? "" : ", ") + kv.first;
      throw Error(Exit::invalid, ds.path + ": found the arrays [" + keys + "]; expected x (or data, images, X, inputs) "
                                           "and y (or targets, labels, Y): numpy.savez(\"data.npz\", x=x, y=y)");
    }
    set_x(d, *x, ds.path);
    set_y(d, *y, ds.path);
  }
  return d;
}

// Reads the file(s); an ImageFolder only lists its files (decoded after the draw).
Dataset read_source(const DataSpec& ds, ImageFolder* folder) {
  if (ds.path.empty()) return read_idx(ds.images, ds.labels);
  std::error_code ec;
  if (!std::filesystem::exists(ds.path, ec)) throw Error(Exit::input, ds.path + ": no such file or directory");
  if (std::filesystem::is_directory(ds.path, ec)) {
    *folder = list_image_folder(ds.path);
    Dataset d;
    d.source = ds.path;
    d.y = folder->labels;
    d.n = int64_t(d.y.size());
    d.class_names = folder->class_names;
    d.uint8 = true;
    return d;
  }
  if (has_ext(ds.path, ".npy") || has_ext(ds.path, ".npz")) return read_numpy(ds);
  if (has_ext(ds.path, ".csv")) return read_csv(ds.path, ds.label);
  const std::string ext = std::filesystem::path(ds.path).extension().string();
  if (ext.empty() || has_ext(ds.path, ".pt") || has_ext(ds.path, ".pth") || has_ext(ds.path, ".pkl") ||
      has_ext(ds.path, ".tar"))
    return read_torch_dict(ds.path);
  throw Error(Exit::input, ds.path + ": unknown data format '" + ext +
                               "' (expected .pt/.pth (torch.save), .npy, .npz, .csv, or a directory of class folders "
                               "of .png/.jpg images)");
}

// Layout and channels of the samples as the model will see them.
void fix_images(Dataset& d, const DataSpec& ds) {
  auto& sh = d.sample_shape;
  if (sh.size() == 2 && (d.uint8 || ds.channels > 0)) sh.insert(sh.begin(), 1);  // [H, W] images
  const bool wants_image = ds.layout != "auto" || ds.channels > 0 || ds.resize_h > 0;
  if (sh.size() != 3) {
    if (wants_image)
      throw Error(Exit::invalid, d.source + ": samples have shape " + shape_str(sh) +
                                     "; data.layout, data.channels and data.resize need images [C, H, W] or [H, W, C]");
    return;
  }
  const bool nhwc = ds.layout == "nhwc" ||
                    (ds.layout == "auto" && (sh[2] == 1 || sh[2] == 3) && sh[0] != 1 && sh[0] != 3);
  const int64_t k = d.sample_numel();
  if (nhwc) {
    const int64_t H = sh[0], W = sh[1], C = sh[2];
    std::vector<float> tmp(static_cast<size_t>(k));
    for (int64_t i = 0; i < d.n; ++i) {
      float* s = d.x.data() + i * k;
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
          for (int64_t c = 0; c < C; ++c) tmp[size_t(c * H * W + y * W + x)] = s[(y * W + x) * C + c];
      std::copy(tmp.begin(), tmp.end(), s);
    }
    sh = {C, H, W};
  }
  const int64_t C = sh[0], HW = sh[1] * sh[2];
  if (ds.channels > 0 && ds.channels != C) {
    if (!((C == 1 && ds.channels == 3) || (C == 3 && ds.channels == 1)))
      throw Error(Exit::invalid, d.source + ": samples have " + std::to_string(C) + " channels (shape " + shape_str(sh) +
                                     ", " + (nhwc ? "NHWC" : "NCHW") + "); data.channels: " +
                                     std::to_string(ds.channels) + " converts only between 1 and 3");
    std::vector<float> out(size_t(d.n * ds.channels * HW));
    for (int64_t i = 0; i < d.n; ++i) {
      const float* s = d.x.data() + i * C * HW;
      float* o = out.data() + i * ds.channels * HW;
      for (int64_t p = 0; p < HW; ++p) {
        if (C == 1)
          o[p] = o[HW + p] = o[2 * HW + p] = s[p];
        else  // ITU-R 601-2 luma, as PIL's convert("L")
          o[p] = 0.299f * s[p] + 0.587f * s[HW + p] + 0.114f * s[2 * HW + p];
      }
    }
    d.x.swap(out);
    sh[0] = ds.channels;
  }
}

void resize_all(Dataset& d, int64_t h2, int64_t w2) {
  const int64_t C = d.sample_shape[0], H = d.sample_shape[1], W = d.sample_shape[2];
  if (H == h2 && W == w2) return;
  std::vector<float> out(size_t(d.n * C * h2 * w2));
  for (int64_t i = 0; i < d.n; ++i)
    resize_bilinear(d.x.data() + i * C * H * W, C, H, W, out.data() + i * C * h2 * w2, h2, w2);
  d.x.swap(out);
  d.sample_shape = {C, h2, w2};
}

// Decode the chosen images of an ImageFolder, in order.
void decode_folder(Dataset& d, const ImageFolder& f, const std::vector<int64_t>& rows, const DataSpec& ds) {
  const int64_t C = ds.channels > 0 ? ds.channels : 3;  // torchvision's default loader: RGB
  int64_t H = ds.resize_h, W = ds.resize_w;
  std::string first;
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::string& path = f.files[size_t(rows[r])];
    int64_t h = 0, w = 0;
    std::vector<float> img = decode_image(path, C, h, w);
    if (H == 0) H = h, W = w;  // no resize: the first image's size
    if (first.empty()) first = path, d.x.resize(size_t(int64_t(rows.size()) * C * H * W));
    float* dst = d.x.data() + int64_t(r) * C * H * W;
    if (h == H && w == W)
      std::copy(img.begin(), img.end(), dst);
    else if (ds.resize_h > 0)
      resize_bilinear(img.data(), C, h, w, dst, H, W);
    else
      throw Error(Exit::invalid, path + ": image is " + std::to_string(h) + "x" + std::to_string(w) + ", but " + first +
                                     " is " + std::to_string(H) + "x" + std::to_string(W) +
                                     ": give data.resize: [height, width]");
  }
  d.sample_shape = {C, H, W};
}

}  // namespace

Dataset load_dataset(const Spec& spec) {
  const DataSpec& ds = spec.data;
  ImageFolder folder;
  Dataset d = read_source(ds, &folder);
  for (size_t i = 0; i < d.y.size(); ++i)
    if (d.y[i] < 0)
      throw Error(Exit::invalid, d.source + ": y: negative label " + std::to_string(d.y[i]) + " in sample " +
                                     std::to_string(i));
  const int64_t k = folder.files.empty() ? d.sample_numel() : 0;
  // Rows kept by the class filter, labels remapped.
  std::vector<int64_t> rows;
  std::vector<int64_t> labels;
  if (!ds.classes.empty()) {
    if (!d.has_labels()) spec.fail("data.classes", "needs class-id labels, but y holds float targets");
    std::map<int64_t, int64_t> remap;
    for (size_t i = 0; i < ds.classes.size(); ++i) remap[ds.classes[i]] = int64_t(i);
    for (int64_t i = 0; i < d.n; ++i)
      if (auto it = remap.find(d.y[size_t(i)]); it != remap.end()) rows.push_back(i), labels.push_back(it->second);
    if (rows.empty()) spec.fail("data.classes", "no sample of the file " + d.source + " has one of these labels");
    if (!d.class_names.empty()) {
      std::vector<std::string> names;
      for (int64_t c : ds.classes) names.push_back(size_t(c) < d.class_names.size() ? d.class_names[size_t(c)] : "");
      d.class_names = names;
    }
  } else {
    for (int64_t i = 0; i < d.n; ++i) {
      rows.push_back(i);
      int64_t label = 0;
      if (d.has_labels()) {
        label = d.y[size_t(i)];
      } else {
        const float* t = d.targets.data() + i * d.target_dim;
        label = int64_t(std::max_element(t, t + d.target_dim) - t);
      }
      labels.push_back(label);
    }
  }
  d.available = int64_t(rows.size());
  if (d.has_labels()) {
    d.class_counts.clear();
    for (int64_t l : labels)
      if (l >= 0) {
        if (size_t(l) >= d.class_counts.size()) d.class_counts.resize(size_t(l) + 1, 0);
        ++d.class_counts[size_t(l)];
      }
  }
  // The draw: stratified by class (every prefix in proportion) or the first N.
  if (!ds.draw_first) {
    const std::vector<int64_t> order = stratified_order(labels, spec.seed);
    std::vector<int64_t> r2(rows.size()), l2(rows.size());
    for (size_t i = 0; i < order.size(); ++i) r2[i] = rows[size_t(order[i])], l2[i] = labels[size_t(order[i])];
    rows.swap(r2);
    labels.swap(l2);
  }
  const int64_t n = ds.size > 0 ? std::min<int64_t>(ds.size, int64_t(rows.size())) : int64_t(rows.size());
  rows.resize(size_t(n));
  labels.resize(size_t(n));
  Dataset out;
  out.source = d.source;
  out.n = n;
  out.available = d.available;
  out.class_counts = d.class_counts;
  out.class_names = d.class_names;
  out.uint8 = d.uint8;
  out.target_dim = d.target_dim;
  if (d.has_labels()) out.y = labels;
  if (!folder.files.empty()) {
    decode_folder(out, folder, rows, ds);
  } else {
    out.sample_shape = d.sample_shape;
    out.x.resize(size_t(n * k));
    for (int64_t r = 0; r < n; ++r)
      std::copy(d.x.begin() + rows[size_t(r)] * k, d.x.begin() + (rows[size_t(r)] + 1) * k, out.x.begin() + r * k);
    if (!d.targets.empty()) {
      out.targets.resize(size_t(n * d.target_dim));
      for (int64_t r = 0; r < n; ++r)
        std::copy(d.targets.begin() + rows[size_t(r)] * d.target_dim,
                  d.targets.begin() + (rows[size_t(r)] + 1) * d.target_dim, out.targets.begin() + r * d.target_dim);
    }
  }
  d = Dataset();  // free the file's copy
  check_finite(out, rows);
  fix_images(out, ds);
  if (ds.resize_h > 0 && folder.files.empty()) resize_all(out, ds.resize_h, ds.resize_w);
  if (ds.normalize) {
    const int64_t kk = out.sample_numel();
    const int64_t C = ds.mean.size() > 1 ? int64_t(ds.mean.size()) : 1;
    if (C > 1 && (out.sample_shape.empty() || out.sample_shape[0] != C))
      spec.fail("data.normalize", "has " + std::to_string(C) + " values per channel, but the samples of " + out.source +
                                      " have shape " + shape_str(out.sample_shape) + " ([C, H, W] with C = " +
                                      (out.sample_shape.empty() ? std::string("?") : std::to_string(out.sample_shape[0])) +
                                      ")");
    const int64_t per = kk / C;
    for (int64_t i = 0; i < out.n; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const float mean = float(ds.mean[size_t(c)]), inv = float(1.0 / ds.std[size_t(c)]);
        float* p = out.x.data() + i * kk + c * per;
        for (int64_t j = 0; j < per; ++j) p[j] = (p[j] - mean) * inv;
      }
  }
  return out;
}

}  // namespace ttpred
