// bench_gram: times compute_gram's engines on one model and data file, compares
// their Θ with the first one listed, and times one epoch of real fine-tuning
// (LibTorch SGD, batch --batch) on the same hardware. Driven by run.py.
//
//   bench_gram --model M.pt --data D.pt --n N0 [--methods loop,fast,vmap,trace:K,fast@exact,adam:loop,adam:fast]
//              [--projection auto|exact|countsketch] [--dim D0] [--threads T]
//              [--epoch SAMPLES] [--batch B] [--json OUT] [--jw0 0|1]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model_impl.hpp"
#include "ttpred/adam.hpp"
#include "ttpred/data.hpp"
#include "ttpred/model.hpp"

using namespace ttpred;

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream in(s);
  for (std::string t; std::getline(in, t, ',');)
    if (!t.empty()) v.push_back(t);
  return v;
}

// One epoch of SGD (momentum 0.9, lr 0.01, cross-entropy) over `samples`
// samples (cycling through the file), batch `batch`, in train mode as a real
// fine-tune would run; the weights are restored afterwards.
double one_epoch(Model& model, const Dataset& d, int64_t samples, int64_t batch) {
  Model::Impl& m = model.impl();
  std::vector<torch::Tensor> saved;
  for (auto& p : m.params) saved.push_back(p.detach().clone());
  torch::optim::SGD sgd(m.params, torch::optim::SGDOptions(0.01).momentum(0.9));
  m.module.train();
  const int64_t steps = samples / batch;
  const double t0 = now();
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int64_t> idx(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) idx[size_t(b)] = (s * batch + b) % d.n;
    torch::Tensor y = torch::empty({batch}, torch::kLong);
    for (int64_t b = 0; b < batch; ++b) y[b] = d.has_labels() ? d.y[size_t(idx[size_t(b)])] : 0;
    sgd.zero_grad();
    torch::Tensor out = run_forward(m, gather_x(d, idx, m.device, m.dtype));
    torch::nn::functional::cross_entropy(out.to(torch::kFloat), y.clamp_max(out.size(1) - 1).to(m.device)).backward();
    sgd.step();
  }
  if (m.device.is_cuda()) torch::cuda::synchronize();
  const double sec = now() - t0;
  m.module.eval();
  torch::NoGradGuard ng;
  for (size_t i = 0; i < saved.size(); ++i) m.params[i].copy_(saved[i]);
  return sec;
}
}  // namespace

int main(int argc, char** argv) {
  std::string model_path, data_path, json_path, projection = "auto", methods = "loop,fast";
  int64_t n = 100, dim = 0, epoch = 0, batch = 32;
  int threads = 0;
  bool jw0 = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model_path = v;
    else if (k == "--data") data_path = v;
    else if (k == "--n") n = std::stoll(v);
    else if (k == "--methods") methods = v;
    else if (k == "--projection") projection = v;
    else if (k == "--dim") dim = std::stoll(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--epoch") epoch = std::stoll(v);
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--json") json_path = v;
    else if (k == "--jw0") jw0 = v != "0";  // 0: skip J·w0 (what ttpred does without weight decay)
    else {
      std::cerr << "bench_gram: unknown option " << k << "\n";
      return 2;
    }
  }
  if (model_path.empty() || data_path.empty()) {
    std::cerr << "usage: bench_gram --model M.pt --data D.pt --n N0 [--methods loop,fast,vmap,trace:K] ...\n";
    return 2;
  }
  try {
    Model model(model_path, "cpu");
    Dataset d = read_torch_dict(data_path);
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < n; ++i) idx.push_back(i % d.n);
    nlohmann::json out;
    out["model"] = model_path;
    out["n"] = n;
    out["params"] = model.num_params();
    out["intra_op_threads"] = at::get_num_threads();
    out["runs"] = nlohmann::json::array();
    Eigen::MatrixXd ref, adam_ref;
    std::string ref_name, adam_ref_name;
    for (const std::string& spec : split(methods)) {
      GramOptions o;
      o.projection = projection;
      o.dim = dim;
      o.threads = threads;
      o.jw0 = jw0;
      // METHOD[@PROJECTION], METHOD = loop | fast | vmap | trace:K
      std::string meth = spec;
      if (auto at = spec.find('@'); at != std::string::npos) {
        meth = spec.substr(0, at);
        o.projection = spec.substr(at + 1);
      }
      o.method = meth;
      if (meth.rfind("trace:", 0) == 0) {
        o.method = "fast";
        o.trace_k = std::stoll(meth.substr(6));
      }
      if (meth.rfind("adam:", 0) == 0) {
        // Adam's preconditioned kernel Θ_P = J P0 Jᵀ (adam:loop, the serial reference;
        // adam:fast, the Gram engine on P0^½-scaled rows), cross-entropy, batch 32.
        o.method = meth.substr(5);
        const int64_t C = model.num_classes(d);
        const double t0 = now();
        const Preconditioned pk = adam_kernel(model, d, idx, target_matrix(d, idx, C), Loss::cross_entropy, 32, d.n,
                                              1e-8, o);
        const double total = now() - t0;
        nlohmann::json r{{"method", spec}, {"projection", pk.method}, {"dim", pk.dim}, {"classes", C},
                         {"seconds_total", total}, {"samples_per_second", double(n) / total},
                         {"theta_trace", pk.theta.trace()}};
        if (adam_ref.size() == 0) {
          adam_ref = pk.theta;
          adam_ref_name = spec;
        } else if (adam_ref.size() == pk.theta.size()) {
          r["rel_diff_vs"] = adam_ref_name;
          r["rel_diff_fro"] = (pk.theta - adam_ref).norm() / adam_ref.norm();
        }
        std::cerr << "bench_gram: " << spec << " n=" << n << " C=" << C << " " << pk.method << " " << total << " s\n";
        out["runs"].push_back(r);
        continue;
      }
      const double t0 = now();
      Gram g = compute_gram(model, d, idx, o);
      const double total = now() - t0;
      nlohmann::json r;
      r["method"] = spec;
      r["engine"] = g.engine;
      r["projection"] = g.method;
      r["dim"] = g.dim;
      r["classes"] = g.classes;
      r["threads"] = g.threads;
      r["seconds_jacobian"] = g.seconds_jacobian;
      r["seconds_gram"] = g.seconds_gram;
      r["seconds_total"] = total;
      r["samples_per_second"] = double(n) / total;
      r["theta_trace"] = g.theta.trace();
      if (ref.size() == 0 && g.trace_k == 0) {
        ref = g.theta;
        ref_name = spec;
      } else if (ref.size() == g.theta.size() && g.theta.size() > 0) {
        r["rel_diff_vs"] = ref_name;
        r["rel_diff_max"] = (g.theta - ref).cwiseAbs().maxCoeff() / ref.cwiseAbs().maxCoeff();
        r["rel_diff_fro"] = (g.theta - ref).norm() / ref.norm();
      }
      std::cerr << "bench_gram: " << spec << " n=" << n << " C=" << g.classes << " " << g.method << " "
                << total << " s (jacobian " << g.seconds_jacobian << ", gram " << g.seconds_gram << ")\n";
      out["runs"].push_back(r);
    }
    if (epoch > 0) {
      out["epoch_samples"] = epoch;
      out["epoch_batch"] = batch;
      out["epoch_seconds"] = one_epoch(model, d, epoch, batch);
      std::cerr << "bench_gram: one epoch of " << epoch << " samples: " << out["epoch_seconds"] << " s\n";
    }
    if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "bench_gram: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
