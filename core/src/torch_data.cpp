// Reading torch.save'd {"x": ..., "y": ...} dicts (the zip format of torch >= 1.6).
#include <torch/serialize.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "ttpred/data.hpp"
#include "ttpred/error.hpp"

namespace ttpred {

namespace {

bool contains(const std::vector<char>& b, const std::string& what) {
  return std::search(b.begin(), b.end(), what.begin(), what.end()) != b.end();
}

}  // namespace

Dataset read_torch_dict(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(Exit::input, path + ": no such file");
  if (std::filesystem::is_directory(path, ec))
    throw Error(Exit::input, path + ": is a directory, not a torch.save'd file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Exit::input, path + ": cannot open for reading");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const bool zip = bytes.size() >= 4 && bytes[0] == 'P' && bytes[1] == 'K';
  if (!zip && !bytes.empty() && static_cast<unsigned char>(bytes[0]) == 0x80)
    throw Error(Exit::input, path + ": legacy torch.save format (before torch 1.6, or _use_new_zipfile_serialization="
                                 "False), which LibTorch cannot read: re-save it with torch.save(torch.load(f), f)");
  if (!zip)
    throw Error(Exit::input, path + ": not a torch.save'd file (no zip archive; expected torch.save((x, y), f) "
                                 "or a .npy/.npz/.csv file)");
  if (contains(bytes, "TensorDataset") || contains(bytes, "torch.utils.data"))
    throw Error(Exit::input, path + ": a pickled Dataset object (TensorDataset) cannot be read from C++: save its "
                                 "tensors instead, torch.save(tuple(ds.tensors), f), or use ttpred-export");
  c10::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error(Exit::input, path + ": cannot read as torch.save'd tensors (a tuple (x, y) or a dict {\"x\", \"y\"}; "
                                 "LibTorch 1.13 cannot read a dict with a single key): " + what);
  }
  torch::Tensor x, y;
  auto tensor = [&](const c10::IValue& e, const std::string& k) {
    if (!e.isTensor()) throw Error(Exit::input, path + ": " + k + ": must be a tensor, got " + e.tagKind());
    return e.toTensor();
  };
  if (v.isTuple() || v.isList()) {
    std::vector<c10::IValue> items;
    if (v.isTuple())
      for (const auto& e : v.toTupleRef().elements()) items.push_back(e);
    else
      for (const auto& e : v.toListRef()) items.push_back(e);
    if (items.size() != 2)
      throw Error(Exit::input, path + ": a tuple/list must be (x, y), got " + std::to_string(items.size()) + " items");
    x = tensor(items[0], "x (item 0)");
    y = tensor(items[1], "y (item 1)");
  } else if (v.isGenericDict()) {
    std::string keys;
    for (const auto& e : v.toGenericDict()) {
      if (!e.key().isString()) continue;
      const std::string k = e.key().toStringRef();
      keys += (keys.empty() ? "" : ", ") + k;
      if (k == "x" || k == "data") x = tensor(e.value(), k);
      if (k == "y" || k == "targets") y = tensor(e.value(), k);
    }
    if (!x.defined())
      throw Error(Exit::input, path + ": missing key \"x\" or \"data\" (float or uint8 tensor [N, ...]); found keys: " + keys);
    if (!y.defined())
      throw Error(Exit::input, path + ": missing key \"y\" or \"targets\" (int64 class ids [N] or float [N, C]); found keys: " + keys);
  } else {
    throw Error(Exit::input, path + ": expected a tuple (x, y) or a dict {\"x\": tensor, \"y\": tensor}, got " + v.tagKind());
  }
  if (x.dim() < 2) throw Error(Exit::invalid, path + ": x: must be [N, ...] with N samples, got shape " + c10::str(x.sizes()));
  const bool u8 = x.scalar_type() == torch::kByte;
  if (!torch::isFloatingType(x.scalar_type()) && !u8)
    throw Error(Exit::invalid, path + ": x: dtype " + std::string(c10::toString(x.scalar_type())) +
                                   " (expected a float tensor, or uint8 images scaled to [0, 1])");
  if (y.dim() < 1 || y.size(0) != x.size(0))
    throw Error(Exit::invalid, path + ": y: must have one entry per sample (x has " + std::to_string(x.size(0)) +
                                   ", y has shape " + c10::str(y.sizes()) + ")");
  Dataset d;
  d.source = path;
  d.n = x.size(0);
  d.available = d.n;
  d.uint8 = u8;
  for (int64_t i = 1; i < x.dim(); ++i) d.sample_shape.push_back(x.size(i));
  torch::Tensor xc = x.to(torch::kCPU, torch::kFloat).contiguous();
  if (u8) xc = xc / 255.0f;
  d.x.assign(xc.data_ptr<float>(), xc.data_ptr<float>() + xc.numel());
  if (torch::isFloatingType(y.scalar_type())) {
    if (y.dim() != 2) throw Error(Exit::invalid, path + ": y: float targets must be [N, C], got " + c10::str(y.sizes()) +
                                                     " (class ids must be int64: y.long())");
    torch::Tensor yc = y.to(torch::kCPU, torch::kFloat).contiguous();
    d.target_dim = y.size(1);
    d.targets.assign(yc.data_ptr<float>(), yc.data_ptr<float>() + yc.numel());
  } else {
    if (y.dim() != 1) throw Error(Exit::invalid, path + ": y: class ids must be [N], got " + c10::str(y.sizes()));
    torch::Tensor yc = y.to(torch::kCPU, torch::kLong).contiguous();
    d.y.assign(yc.data_ptr<int64_t>(), yc.data_ptr<int64_t>() + yc.numel());
  }
  return d;
}

}  // namespace ttpred

// ttpred::eigh_descending lives here, with the other LibTorch code (LAPACK
// through torch::linalg).
#include "ttpred/extrapolate.hpp"

namespace ttpred {

Eigensystem eigh_descending(const Eigen::MatrixXd& a, bool single) {
  const int64_t m = a.rows();
  // Column-major a is its own transpose: symmetric, so the layout does not matter.
  torch::Tensor t = torch::from_blob(const_cast<double*>(a.data()), {m, m}, torch::kDouble);
  if (single) t = t.to(torch::kFloat);
  auto eig = torch::linalg_eigh(t);  // ascending
  if (single) eig = std::make_tuple(std::get<0>(eig).to(torch::kDouble), std::get<1>(eig).to(torch::kDouble));
  torch::Tensor vals = std::get<0>(eig).flip(0).contiguous();
  // Row-major, column j = eigenvector j; flipped to descending, then transposed so
  // that the row-major buffer of the transpose is the column-major Eigen matrix.
  torch::Tensor vecs = std::get<1>(eig).flip(1).t().contiguous();
  Eigensystem es;
  es.values = Eigen::Map<const Eigen::VectorXd>(vals.data_ptr<double>(), m);
  es.vectors = Eigen::Map<const Eigen::MatrixXd>(vecs.data_ptr<double>(), m, m);
  return es;
}

}  // namespace ttpred
