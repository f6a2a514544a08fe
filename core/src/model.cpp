#include <c10/util/Exception.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "model_impl.hpp"
#include "ttpred/error.hpp"

namespace ttpred {

std::string resolve_device(const std::string& requested) {
  if (requested == "cpu") return "cpu";
  bool cuda = false;
  try {
    cuda = torch::cuda::is_available();
  } catch (...) {
  }
  if (requested == "cuda" && !cuda)
    throw Error(Exit::device, "--device cuda: no usable CUDA device (LibTorch built without CUDA, or no GPU)");
  if (requested == "cuda" || (requested == "auto" && cuda)) return "cuda";
  return "cpu";
}

Model::Model(const std::string& path, const std::string& device) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->device_name = resolve_device(device);
  impl_->device = impl_->device_name == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(Exit::input, path + ": no such file");
  if (!std::ifstream(path)) throw Error(Exit::input, path + ": cannot open for reading");
  // No TensorExpr (NNC) fusion: LibTorch 2.6's profiling executor compiles fused
  // CPU kernels through LLVM after a few runs of a graph, which stalled for
  // minutes (a hang in practice) on the linear test model with AdamW chunks;
  // ttpred's graphs are small and dominated by matmuls and autograd anyway.
  static const bool no_fuser = (torch::jit::setTensorExprFuserEnabled(false), true);
  (void)no_fuser;
  try {
    impl_->module = torch::jit::load(path, impl_->device);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error(Exit::input, path + ": not a TorchScript model (torch.jit.save): " + what);
  }
  impl_->module.eval();
  for (const auto& p : impl_->module.parameters())
    if (p.requires_grad()) impl_->params.push_back(p);
  if (impl_->params.empty()) throw Error(Exit::invalid, path + ": the model has no trainable parameters");
  impl_->dtype = impl_->params.front().scalar_type();
  if (!torch::isFloatingType(impl_->dtype))
    throw Error(Exit::invalid, path + ": parameters must be floating point");
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const std::string& Model::path() const { return impl_->path; }
const std::string& Model::device() const { return impl_->device_name; }

int64_t Model::num_params() const {
  int64_t n = 0;
  for (const auto& p : impl_->params) n += p.numel();
  return n;
}

torch::Tensor gather_x(const Dataset& d, const std::vector<int64_t>& idx, torch::Device device,
                       torch::ScalarType dtype) {
  const int64_t k = d.sample_numel();
  std::vector<int64_t> shape{int64_t(idx.size())};
  shape.insert(shape.end(), d.sample_shape.begin(), d.sample_shape.end());
  torch::Tensor x = torch::empty(shape, torch::kFloat);
  float* dst = x.data_ptr<float>();
  for (size_t r = 0; r < idx.size(); ++r)
    std::copy(d.x.begin() + idx[r] * k, d.x.begin() + (idx[r] + 1) * k, dst + int64_t(r) * k);
  return x.to(device, dtype);
}

// The line of a TorchScript error that says what went wrong: its last
// "...Error: ..." line (the interpreter's first line only says that it failed),
// else its first line.
std::string torchscript_reason(const std::string& what) {
  std::string first, reason, line;
  std::istringstream in(what);
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (first.empty()) first = line;
    if (line.find("Error: ") != std::string::npos && line.find("File \"") == std::string::npos) reason = line;
  }
  if (reason.empty()) return first;
  reason.erase(0, reason.find_first_not_of(" \t"));
  const size_t colon = reason.find("Error: ");
  if (colon != std::string::npos && reason.find(' ') > colon) reason = reason.substr(colon + 7);  // "RuntimeError: "
  return reason;
}

torch::Tensor run_forward(Model::Impl& m, const torch::Tensor& x) {
  c10::IValue out;
  try {
    out = m.module.forward({x});
  } catch (const std::exception& e) {
    throw Error(Exit::invalid, m.path + ": forward failed on an input of shape " + c10::str(x.sizes()) + ": " +
                                   torchscript_reason(e.what()) +
                                   " (does the model take this shape? see data.layout, data.channels, data.resize)");
  }
  if (!out.isTensor())
    throw Error(Exit::invalid, m.path + ": forward must return a tensor of logits [B, C], got " +
                                   out.tagKind());
  torch::Tensor t = out.toTensor();
  if (t.dim() != 2 || t.size(0) != x.size(0))
    throw Error(Exit::invalid, m.path + ": output must be logits [B, C]; on an input of shape " + c10::str(x.sizes()) +
                                   " it has shape " + c10::str(t.sizes()));
  if (!torch::isFloatingType(t.scalar_type()))
    throw Error(Exit::invalid, m.path + ": output must be floating point");
  return t;
}

Eigen::MatrixXd Model::forward(const Dataset& d, const std::vector<int64_t>& idx) const {
  torch::NoGradGuard ng;
  const int64_t chunk = 256;
  Eigen::MatrixXd out;
  for (size_t s = 0; s < idx.size(); s += chunk) {
    std::vector<int64_t> part(idx.begin() + s, idx.begin() + std::min(idx.size(), s + chunk));
    torch::Tensor y = run_forward(*impl_, gather_x(d, part, impl_->device, impl_->dtype))
                          .to(torch::kCPU, torch::kDouble)
                          .contiguous();
    if (out.size() == 0) out.resize(Eigen::Index(idx.size()), y.size(1));
    // y is row-major [B, C]
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> ym(
        y.data_ptr<double>(), y.size(0), y.size(1));
    out.middleRows(Eigen::Index(s), ym.rows()) = ym;
  }
  return out;
}

int64_t Model::num_classes(const Dataset& d) const {
  if (d.n == 0) throw Error(Exit::invalid, d.source + ": no samples");
  std::vector<int64_t> idx{0};
  if (d.n > 1) idx.push_back(1);
  Eigen::MatrixXd f = forward(d, idx);
  if (f.cols() < 1) throw Error(Exit::invalid, impl_->path + ": output has zero classes");
  return f.cols();
}

bool reference_blas_suspected() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  bool ref = false, fast = false;
  while (std::getline(maps, line)) {
    if (line.find("openblas") != std::string::npos || line.find("libmkl") != std::string::npos ||
        line.find("blis") != std::string::npos || line.find("atlas") != std::string::npos)
      fast = true;
    else if (line.find("/blas/libblas.so") != std::string::npos)
      ref = true;
  }
  return ref && !fast;
}

}  // namespace ttpred
