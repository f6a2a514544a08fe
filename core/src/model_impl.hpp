// Private: the LibTorch side of ttpred::Model. Include only from torch .cpp files.
#pragma once
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

// Samples `idx` of d as a tensor [idx.size(), ...sample_shape] on `device`.
torch::Tensor gather_x(const Dataset& d, const std::vector<int64_t>& idx, torch::Device device,
                       torch::ScalarType dtype);
// Runs the module and checks its output is a [B, C] floating tensor.
torch::Tensor run_forward(Model::Impl& m, const torch::Tensor& x);

}  // namespace ttpred
