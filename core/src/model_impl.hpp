// Private: the LibTorch side of ttpred::Model. Include only from torch .cpp files.
#pragma once
#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "ttpred/model.hpp"

namespace ttpred {

struct Model::Impl {
  std::string path;
  std::string device_name;
  torch::Device device{torch::kCPU};
  torch::jit::Module module;
  std::vector<torch::Tensor> params;  // trainable ones, in module order
  torch::ScalarType dtype = torch::kFloat;
};

// LibTorch's intra-op threads set to n for a scope (n <= 0: left as they are), restored after.
struct IntraOpThreads {
  int saved = at::get_num_threads();
  explicit IntraOpThreads(int n) {
    if (n > 0 && n != saved) at::set_num_threads(n);
  }
  ~IntraOpThreads() {
    if (at::get_num_threads() != saved) at::set_num_threads(saved);
  }
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;
};

// Samples `idx` of d as a tensor [idx.size(), ...sample_shape] on `device`.
torch::Tensor gather_x(const Dataset& d, const std::vector<int64_t>& idx, torch::Device device,
                       torch::ScalarType dtype);
// Runs the module and checks its output is a [B, C] floating tensor.
torch::Tensor run_forward(Model::Impl& m, const torch::Tensor& x);

}  // namespace ttpred
