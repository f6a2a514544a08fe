// Θ = J Jᵀ against an independent computation (a model with an analytic
// Jacobian), and the CountSketch projection: unbiased, error shrinking with D0.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ttpred/cache.hpp"
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

namespace {
double rel_diff(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1e-30, b.cwiseAbs().maxCoeff());
}
}  // namespace

TEST_CASE("fast and vmap engines (threaded) equal the reference loop") {
  struct Case {
    const char* model;
    const char* data;
    const char* projection;
  };
  for (Case k : {Case{"mlp.pt", "vec_train.pt", "exact"}, Case{"analytic.pt", "vec_train.pt", "exact"},
                 Case{"cnn_small.pt", "img_train.pt", "exact"}, Case{"cnn_small.pt", "img_train.pt", "countsketch"}}) {
    CAPTURE(k.model);
    CAPTURE(k.projection);
    Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/" + k.data);
    Model m(std::string(TEST_MODELS) + "/" + k.model, "cpu");
    const auto idx = first(11);
    GramOptions o;
    o.projection = k.projection;
    o.dim = 64;
    o.seed = 3;
    o.method = "loop";
    const Gram ref = compute_gram(m, d, idx, o);
    CHECK(ref.engine == "loop");
    for (std::string method : {"fast", "vmap"})
      for (int threads : {1, 2, 3}) {
        CAPTURE(method);
        CAPTURE(threads);
        o.method = method;
        o.threads = threads;
        const Gram g = compute_gram(m, d, idx, o);
        CHECK(g.method == ref.method);
        CHECK(g.dim == ref.dim);
        REQUIRE(g.theta.rows() == ref.theta.rows());
        CHECK(rel_diff(g.theta, ref.theta) <= 1e-5);
        CHECK(rel_diff(g.f0, ref.f0) <= 1e-6);
        CHECK(rel_diff(g.jw0, ref.jw0) <= 1e-5);
        CHECK(g.theta == g.theta.transpose());
      }
    // The number of workers does not change a single bit.
    o.method = "fast";
    o.threads = 1;
    const Gram one = compute_gram(m, d, idx, o);
    o.threads = 2;
    CHECK(compute_gram(m, d, idx, o).theta == one.theta);
  }
}

TEST_CASE("symmetric block product equals the plain one") {
  // 1100 rows > the 1024-row threshold of the block product.
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/vec_train.pt");
  Model m(std::string(TEST_MODELS) + "/mlp.pt", "cpu");
  std::vector<int64_t> idx;
  for (int i = 0; i < 367; ++i) idx.push_back(i % 64);
  GramOptions o;
  o.projection = "exact";
  o.method = "fast";
  // The block product shows its progress (phase "gram"), in flops, from 0 to the end.
  std::vector<std::pair<int64_t, int64_t>> gram;
  o.progress = [&](const char* phase, int64_t done, int64_t total) {
    if (std::string(phase) == "gram") gram.emplace_back(done, total);
  };
  const Gram a = compute_gram(m, d, idx, o);
  REQUIRE(gram.size() >= 3);
  CHECK(gram.front().first == 0);
  CHECK(gram.back().first == gram.back().second);
  for (size_t k = 1; k < gram.size(); ++k) CHECK(gram[k].first > gram[k - 1].first);
  o.progress = nullptr;
  o.symmetric_product = false;
  const Gram b = compute_gram(m, d, idx, o);
  CHECK(rel_diff(a.theta, b.theta) <= 1e-6);
}

TEST_CASE("trace-NTK equals K ⊗ I_C on a model whose Θ has that form") {
  // linear_rf: f = W tanh(x R) + b, so J_i J_lᵀ = (φ_i·φ_l + 1) I_C.
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/vec_train.pt");
  Model m(std::string(TEST_MODELS) + "/linear_rf.pt", "cpu");
  const auto idx = first(9);
  GramOptions o;
  o.projection = "exact";
  o.method = "loop";
  const Gram ref = compute_gram(m, d, idx, o);
  const int64_t C = ref.classes;
  for (int64_t k : {1, 2, 5})
    for (std::string method : {"fast", "vmap"}) {
      CAPTURE(k);
      CAPTURE(method);
      o.method = method;
      o.trace_k = k;
      o.seed = uint64_t(k);
      const Gram g = compute_gram(m, d, idx, o);
      CHECK(g.trace_k == k);
      REQUIRE(g.kernel.rows() == 9);
      REQUIRE(g.theta.rows() == 9 * C);
      CHECK(rel_diff(g.theta, ref.theta) <= 1e-5);
      CHECK(g.kernel(2, 5) == doctest::Approx(ref.theta(2 * C + 1, 5 * C + 1)).epsilon(1e-5));
      // J w0 = f0 for a model linear in its parameters (central difference).
      CHECK(rel_diff(g.jw0, ref.jw0) <= 1e-4);
    }
  // On a nonlinear model the estimate's mean over classes matches tr(J_i J_lᵀ)/C
  // in expectation; with k = 1 the diagonal is still positive.
  Dataset dv = read_torch_dict(std::string(TEST_MODELS) + "/vec_train.pt");
  Model mlp(std::string(TEST_MODELS) + "/mlp.pt", "cpu");
  o.method = "fast";
  o.trace_k = 1;
  const Gram t = compute_gram(mlp, dv, idx, o);
  for (int64_t i = 0; i < 9; ++i) CHECK(t.kernel(i, i) > 0);
}

TEST_CASE("unknown Gram method is refused") {
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/vec_train.pt");
  Model m(std::string(TEST_MODELS) + "/mlp.pt", "cpu");
  GramOptions o;
  o.method = "magic";
  CHECK_THROWS(compute_gram(m, d, first(2), o));
}

TEST_CASE("Θ cache: store, load, key sensitivity, corruption, LRU bound") {
  const std::string dir = std::string(TEST_MODELS) + "/cache-test";
  std::filesystem::remove_all(dir);
  setenv("TTPRED_CACHE_DIR", dir.c_str(), 1);
  unsetenv("TTPRED_CACHE");
  unsetenv("TTPRED_CACHE_MAX_BYTES");
  CHECK(cache_dir() == dir);
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/vec_train.pt");
  const std::string mp = std::string(TEST_MODELS) + "/mlp.pt";
  Model m(mp, "cpu");
  GramOptions o;
  o.projection = "exact";
  const auto idx = first(7);
  const std::string key = gram_cache_key(mp, d, idx, o, "cpu");
  CHECK(key.size() == 64);
  CHECK(key == gram_cache_key(mp, d, idx, o, "cpu"));
  // Every input of Θ changes the key.
  CHECK(key != gram_cache_key(mp, d, first(6), o, "cpu"));
  CHECK(key != gram_cache_key(std::string(TEST_MODELS) + "/analytic.pt", d, idx, o, "cpu"));
  CHECK(key != gram_cache_key(mp, d, idx, o, "cuda"));
  GramOptions o2 = o;
  o2.seed = 1;
  CHECK(key != gram_cache_key(mp, d, idx, o2, "cpu"));
  o2 = o;
  o2.trace_k = 2;
  CHECK(key != gram_cache_key(mp, d, idx, o2, "cpu"));
  Dataset d2 = d;
  d2.x[3] += 1.0f;  // sample 0, feature 3
  CHECK(key != gram_cache_key(mp, d2, idx, o, "cpu"));
  d2 = d;
  d2.x[8 * 20] += 1.0f;  // a sample outside the subset: same key
  CHECK(key == gram_cache_key(mp, d2, idx, o, "cpu"));

  CHECK_FALSE(cache_load(key).has_value());
  const Gram g = compute_gram(m, d, idx, o);
  REQUIRE(cache_store(key, g));
  auto h = cache_load(key);
  REQUIRE(h.has_value());
  CHECK(h->cached);
  CHECK(h->theta == g.theta);
  CHECK(h->f0 == g.f0);
  CHECK(h->jw0 == g.jw0);
  CHECK(h->method == g.method);
  CHECK(h->n == g.n);
  CHECK(h->classes == g.classes);

  // A torn or corrupted entry is ignored (and removed): the caller recomputes.
  const std::string path = dir + "/" + key + ".gram";
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  CHECK_FALSE(cache_load(key).has_value());
  CHECK_FALSE(std::filesystem::exists(path));
  REQUIRE(cache_store(key, g));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(size / 2));
    f.put('\x5a');
  }
  CHECK_FALSE(cache_load(key).has_value());
  CHECK_FALSE(cache_load("not-a-key").has_value());

  // LRU: with room for about two entries, the least recently used goes.
  const std::string k1 = gram_cache_key(mp, d, first(5), o, "cpu"), k2 = gram_cache_key(mp, d, first(4), o, "cpu");
  setenv("TTPRED_CACHE_MAX_BYTES", std::to_string(2 * size + size / 2).c_str(), 1);
  REQUIRE(cache_store(key, g));
  std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  REQUIRE(cache_store(k1, g));
  std::filesystem::last_write_time(dir + "/" + k1 + ".gram",
                                   std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));
  REQUIRE(cache_load(key).has_value());  // a hit refreshes: now k1 is the oldest
  REQUIRE(cache_store(k2, g));
  CHECK(cache_load(key).has_value());
  CHECK(cache_load(k2).has_value());
  CHECK_FALSE(cache_load(k1).has_value());

  setenv("TTPRED_CACHE", "off", 1);
  CHECK(cache_dir().empty());
  CHECK_FALSE(cache_load(key).has_value());
  unsetenv("TTPRED_CACHE");
  unsetenv("TTPRED_CACHE_MAX_BYTES");
  unsetenv("TTPRED_CACHE_DIR");
  std::filesystem::remove_all(dir);
}

TEST_CASE("jw0 = false: the same Θ and f0, J·w0 left zero (trace-NTK skips its central difference)") {
  Dataset d = read_torch_dict(std::string(TEST_MODELS) + "/vec_train.pt");
  Model m(std::string(TEST_MODELS) + "/mlp.pt", "cpu");
  for (int64_t trace_k : {int64_t(0), int64_t(2)}) {
    CAPTURE(trace_k);
    GramOptions o;
    o.projection = "exact";
    o.trace_k = trace_k;
    const Gram a = compute_gram(m, d, first(16), o);
    o.jw0 = false;
    const Gram b = compute_gram(m, d, first(16), o);
    CHECK(a.theta == b.theta);
    CHECK(a.f0 == b.f0);
    CHECK(a.jw0.cwiseAbs().maxCoeff() > 0);
    CHECK(b.jw0.rows() == a.jw0.rows());
    CHECK(b.jw0.cwiseAbs().maxCoeff() == 0);
    CHECK(gram_cache_key(std::string(TEST_MODELS) + "/mlp.pt", d, first(16), o, "cpu") !=
          gram_cache_key(std::string(TEST_MODELS) + "/mlp.pt", d, first(16), GramOptions{}, "cpu"));
  }
}
