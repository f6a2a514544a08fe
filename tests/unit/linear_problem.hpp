// Shared by the exactness tests (test_linear_sgd, test_adam): the linearized problem
// of a model on samples of a data set, with the exact Θ.
#pragma once
#include <cstdint>
#include <vector>

#include "ttpred/data.hpp"
#include "ttpred/dynamics.hpp"
#include "ttpred/model.hpp"

namespace ttpred::testing {

inline std::vector<int64_t> all_samples(const Dataset& d) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < d.n; ++i) idx.push_back(i);
  return idx;
}

// Targets, exact Θ, f0 and J·w0 of model m on samples idx.
inline Problem linear_problem(const Model& m, const Dataset& d, Loss loss, const std::vector<int64_t>& idx) {
  Problem p;
  p.loss = loss;
  p.y = target_matrix(d, idx, m.num_classes(d), &p.labels);
  GramOptions go;
  go.projection = "exact";
  Gram g = compute_gram(m, d, idx, go);
  p.theta = g.theta;
  p.f0 = g.f0;
  p.jw0 = g.jw0;
  return p;
}

}  // namespace ttpred::testing
