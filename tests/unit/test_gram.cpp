// Θ = J Jᵀ against an independent computation (a model with an analytic
// Jacobian), and the CountSketch projection: unbiased, error shrinking with D0.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "ttpred/data.hpp"
#include "ttpred/model.hpp"

using namespace ttpred;

namespace {

Eigen::MatrixXd read_matrix(std::istream& in) {
  std::string tag;
  int r, c;
  in >> tag >> r >> c;
  Eigen::MatrixXd m(r, c);
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) in >> m(i, j);
  return m;
}

std::vector<int64_t> first(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

}  // namespace

TEST_CASE("exact Θ of f(x) = W2 tanh(W1 x) equals the analytic kernel") {
  std::ifstream in(std::string(TEST_MODELS) + "/analytic_weights.txt");
  REQUIRE(in);
  Eigen::MatrixXd W1 = read_matrix(in), W2 = read_matrix(in);  // 5x8, 3x5
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/vec_train.pt");
  const int64_t n = 12, C = 3;
  Model m(std::string(TEST_MODELS) + "/analytic.pt", "cpu");
  GramOptions opt;
  opt.projection = "exact";
  Gram g = compute_gram(m, d, first(n), opt);
  REQUIRE(g.theta.rows() == n * C);
  CHECK(g.method == "exact");
  CHECK(g.params == W1.size() + W2.size());

  // Θ_(i,c),(k,e) = Σ_j W2[c,j] W2[e,j] s_ij s_kj (x_i·x_k) + [c=e] (t_i·t_k),
  // t = tanh(W1 x), s = 1 - t².
  std::vector<Eigen::VectorXd> x, t, s;
  for (int64_t i = 0; i < n; ++i) {
    Eigen::VectorXd xi(8);
    for (int k = 0; k < 8; ++k) xi(k) = d.x[size_t(i * 8 + k)];
    Eigen::VectorXd ti = (W1 * xi).array().tanh();
    x.push_back(xi);
    t.push_back(ti);
    s.push_back(1.0 - ti.array().square());
  }
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t e = 0; e < C; ++e) {
          double v = 0;
          for (int j = 0; j < 5; ++j) v += W2(c, j) * W2(e, j) * s[size_t(i)](j) * s[size_t(k)](j);
          v *= x[size_t(i)].dot(x[size_t(k)]);
          if (c == e) v += t[size_t(i)].dot(t[size_t(k)]);
          worst = std::max(worst, std::fabs(v - g.theta(i * C + c, k * C + e)));
          scale = std::max(scale, std::fabs(v));
        }
  CHECK(worst <= 1e-5 * scale);

  // f0 is the forward pass, and J w0 = Σ_j W2[c,j] s_j h_j + f_c.
  for (int64_t i = 0; i < n; ++i) {
    Eigen::VectorXd f = W2 * t[size_t(i)];
    Eigen::VectorXd h = W1 * x[size_t(i)];
    for (int64_t c = 0; c < C; ++c) {
      CHECK(g.f0(i, c) == doctest::Approx(f(c)).epsilon(1e-5));
      double jw = f(c);
      for (int j = 0; j < 5; ++j) jw += W2(c, j) * s[size_t(i)](j) * h(j);
      CHECK(g.jw0(i, c) == doctest::Approx(jw).epsilon(1e-4));
    }
  }
  CHECK(g.theta.isApprox(g.theta.transpose()));
}

TEST_CASE("CountSketch Θ is unbiased and its error shrinks as D0 grows") {
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/img_train.pt");
  Model m(std::string(TEST_MODELS) + "/cnn_small.pt", "cpu");
  const auto idx = first(10);
  GramOptions ex;
  ex.projection = "exact";
  const Eigen::MatrixXd exact = compute_gram(m, d, idx, ex).theta;
  auto rel_err = [&](const Eigen::MatrixXd& a) { return (a - exact).norm() / exact.norm(); };

  auto sketch = [&](int64_t dim, uint64_t seed) {
    GramOptions o;
    o.projection = "countsketch";
    o.dim = dim;
    o.seed = seed;
    Gram g = compute_gram(m, d, idx, o);
    CHECK(g.method == "countsketch");
    CHECK(g.dim == dim);
    return g.theta;
  };
  double e_small = 0, e_mid = 0, e_big = 0;
  Eigen::MatrixXd mean = Eigen::MatrixXd::Zero(exact.rows(), exact.cols());
  const int seeds = 40;
  for (int s = 0; s < seeds; ++s) {
    Eigen::MatrixXd a = sketch(32, uint64_t(s));
    e_small += rel_err(a) / seeds;
    mean += a / seeds;
    if (s < 10) {
      e_mid += rel_err(sketch(128, uint64_t(s))) / 10;
      e_big += rel_err(sketch(512, uint64_t(s))) / 10;
    }
  }
  MESSAGE("relative error D0=32: " << e_small << ", 128: " << e_mid << ", 512: " << e_big
                                   << ", mean of 40 at 32: " << rel_err(mean));
  CHECK(e_mid < 0.75 * e_small);
  CHECK(e_big < 0.75 * e_mid);
  // Unbiased: averaging independent sketches converges to Θ (~1/sqrt(40)).
  CHECK(rel_err(mean) < 0.3 * e_small);
  // Same seed, same sketch.
  CHECK(sketch(64, 7).isApprox(sketch(64, 7)));
}

TEST_CASE("auto projection: exact when small, CountSketch when J Jᵀ is costly") {
  GramOptions o;
  CHECK(choose_projection(o, 100, 1000) == "exact");
  CHECK(choose_projection(o, 2500, 11000000) == "countsketch");
  o.projection = "exact";
  CHECK(choose_projection(o, 2500, 11000000) == "exact");
}
