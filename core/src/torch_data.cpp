// Reading torch.save'd {"x": ..., "y": ...} dicts (the zip format of torch >= 1.6).
#include <torch/serialize.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "ttpred/data.hpp"
#include "ttpred/error.hpp"

namespace ttpred {

Dataset read_torch_dict(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(Exit::input, path + ": no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Exit::input, path + ": cannot open for reading");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error(Exit::input, path + ": cannot read as a torch.save'd dict (zip format of torch >= 1.6; "
                                 "LibTorch cannot read a dict with a single key): " + what);
  }
  if (!v.isGenericDict())
    throw Error(Exit::input, path + ": expected a dict {\"x\": tensor, \"y\": tensor}, got " + v.tagKind());
  torch::Tensor x, y;
  for (const auto& e : v.toGenericDict()) {
    if (!e.key().isString()) continue;
    const std::string k = e.key().toStringRef();
    if ((k == "x" || k == "y") && !e.value().isTensor())
      throw Error(Exit::input, path + ": " + k + ": must be a tensor, got " + e.value().tagKind());
    if (k == "x") x = e.value().toTensor();
    if (k == "y") y = e.value().toTensor();
  }
  if (!x.defined()) throw Error(Exit::input, path + ": missing key \"x\" (float tensor [N, ...])");
  if (!y.defined()) throw Error(Exit::input, path + ": missing key \"y\" (int64 class ids [N] or float [N, C])");
  if (x.dim() < 2) throw Error(Exit::invalid, path + ": x: must be [N, ...] with N samples, got shape " + c10::str(x.sizes()));
  if (!torch::isFloatingType(x.scalar_type())) throw Error(Exit::invalid, path + ": x: must be a float tensor");
  if (y.dim() < 1 || y.size(0) != x.size(0))
    throw Error(Exit::invalid, path + ": y: must have one entry per sample (x has " + std::to_string(x.size(0)) +
                                   ", y has shape " + c10::str(y.sizes()) + ")");
  Dataset d;
  d.source = path;
  d.n = x.size(0);
  d.available = d.n;
  for (int64_t i = 1; i < x.dim(); ++i) d.sample_shape.push_back(x.size(i));
  torch::Tensor xc = x.to(torch::kCPU, torch::kFloat).contiguous();
  d.x.assign(xc.data_ptr<float>(), xc.data_ptr<float>() + xc.numel());
  if (torch::isFloatingType(y.scalar_type())) {
    if (y.dim() != 2) throw Error(Exit::invalid, path + ": y: float targets must be [N, C], got " + c10::str(y.sizes()));
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
