// Data loading: IDX (raw and .gz), torch.save'd dicts, class filter + remap,
// size truncation, normalisation, and the input/invalid errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ttpred/data.hpp"
#include "ttpred/error.hpp"
#include "ttpred/spec.hpp"

namespace fs = std::filesystem;
using ttpred::Dataset;
using ttpred::Error;
using ttpred::Exit;

namespace {

const std::string kModels = TEST_MODELS;
std::string M(const std::string& name) { return kModels + "/" + name; }

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "ttpred-test-data-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::vector<unsigned char>& bytes) const {
    fs::path p = path / name;
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return p.string();
  }
};

std::vector<unsigned char> read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put_be32(std::vector<unsigned char>& b, uint32_t v) {
  b.push_back(v >> 24);
  b.push_back((v >> 16) & 0xff);
  b.push_back((v >> 8) & 0xff);
  b.push_back(v & 0xff);
}

std::vector<unsigned char> idx_header(std::vector<uint32_t> dims) {
  std::vector<unsigned char> b{0, 0, 0x08, static_cast<unsigned char>(dims.size())};
  for (auto d : dims) put_be32(b, d);
  return b;
}

struct Caught {
  bool thrown = false;
  Exit code = Exit::ok;
  std::string msg;
};

template <class F>
Caught catch_error(F f) {
  Caught c;
  try {
    f();
  } catch (const Error& e) {
    c.thrown = true;
    c.code = e.code();
    c.msg = e.what();
  }
  return c;
}

ttpred::Spec idx_spec() {
  ttpred::Spec s;
  s.data.images = M("tiny-images-idx3-ubyte.gz");
  s.data.labels = M("tiny-labels-idx1-ubyte.gz");
  return s;
}

ttpred::Spec dict_spec(const std::string& file) {
  ttpred::Spec s;
  s.data.path = M(file);
  return s;
}

}  // namespace

TEST_CASE("read_idx: raw and gzip tiny IDX files") {
  Dataset raw = ttpred::read_idx(M("tiny-images-idx3-ubyte"), M("tiny-labels-idx1-ubyte"));
  Dataset gz = ttpred::read_idx(M("tiny-images-idx3-ubyte.gz"), M("tiny-labels-idx1-ubyte.gz"));
  for (const Dataset* d : {&raw, &gz}) {
    CHECK(d->n == 20);
    CHECK(d->available == 20);
    CHECK(d->sample_shape == std::vector<int64_t>{1, 8, 8});
    CHECK(d->sample_numel() == 64);
    REQUIRE(d->x.size() == size_t(20 * 64));
    REQUIRE(d->y.size() == 20u);
    CHECK(d->has_labels());
    CHECK(d->targets.empty());
    float lo = 1, hi = 0;
    for (float v : d->x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    CHECK(lo >= 0.0f);
    CHECK(hi <= 1.0f);
    CHECK(hi > lo);  // not all the same
    for (int64_t i = 0; i < 20; ++i) CHECK(d->y[size_t(i)] == i % 4);
  }
  CHECK(raw.x == gz.x);
  CHECK(raw.y == gz.y);
  // Values are bytes / 255: x * 255 is an integer.
  auto bytes = read_bytes(M("tiny-images-idx3-ubyte"));
  REQUIRE(bytes.size() == 16 + 20 * 64u);
  for (size_t i = 0; i < raw.x.size(); ++i) REQUIRE(raw.x[i] == doctest::Approx(bytes[16 + i] / 255.0));
}

TEST_CASE("read_torch_dict: class ids, float targets, images") {
  Dataset v = ttpred::read_torch_dict(M("vec_train.pt"));
  CHECK(v.source == M("vec_train.pt"));
  CHECK(v.n == 64);
  CHECK(v.sample_shape == std::vector<int64_t>{8});
  CHECK(v.x.size() == 64 * 8u);
  REQUIRE(v.y.size() == 64u);
  CHECK(v.targets.empty());
  int64_t ymax = 0;
  for (auto y : v.y) {
    CHECK(y >= 0);
    ymax = std::max(ymax, y);
  }
  CHECK(ymax == 2);

  Dataset m = ttpred::read_torch_dict(M("vec_mse.pt"));
  CHECK(m.n == 64);
  CHECK_FALSE(m.has_labels());
  CHECK(m.target_dim == 3);
  CHECK(m.targets.size() == 64 * 3u);
  CHECK(m.x == v.x);  // same x as vec_train
  bool nonint = false;
  for (float t : m.targets) nonint |= t != std::round(t);
  CHECK(nonint);

  Dataset im = ttpred::read_torch_dict(M("img_train.pt"));
  CHECK(im.n == 48);
  CHECK(im.sample_shape == std::vector<int64_t>{1, 8, 8});
  CHECK(im.x.size() == 48 * 64u);
  REQUIRE(im.y.size() == 48u);
  for (auto y : im.y) CHECK((y >= 0 && y <= 3));
}

TEST_CASE("load_dataset: class filter and remap") {
  ttpred::Spec s = idx_spec();
  s.data.classes = {3, 1};  // label 3 -> 0, label 1 -> 1
  Dataset all = ttpred::read_idx(s.data.images, s.data.labels);
  Dataset d = ttpred::load_dataset(s);
  CHECK(d.n == 10);
  CHECK(d.available == 10);
  REQUIRE(d.y.size() == 10u);
  REQUIRE(d.x.size() == 10 * 64u);
  // Kept in file order: samples 1, 3, 5, 7, ... with labels 1, 3, 1, 3, ...
  for (int64_t m = 0; m < 10; ++m) {
    const int64_t i = 2 * m + 1;
    CHECK(d.y[size_t(m)] == (all.y[size_t(i)] == 3 ? 0 : 1));
    for (int64_t k = 0; k < 64; ++k) REQUIRE(d.x[size_t(m * 64 + k)] == all.x[size_t(i * 64 + k)]);
  }
  // Torch dict too.
  ttpred::Spec t = dict_spec("img_train.pt");
  t.data.classes = {2};
  Dataset one = ttpred::load_dataset(t);
  CHECK(one.n >= 1);
  for (auto y : one.y) CHECK(y == 0);
}

TEST_CASE("load_dataset: data.size truncates after the filter") {
  ttpred::Spec s = idx_spec();
  s.data.classes = {0, 2};
  s.data.size = 4;
  Dataset d = ttpred::load_dataset(s);
  CHECK(d.n == 4);
  CHECK(d.available == 10);  // samples after the class filter
  CHECK(d.x.size() == 4 * 64u);
  CHECK(d.y == std::vector<int64_t>{0, 1, 0, 1});

  // size larger than the file: everything, no error (the estimator warns).
  ttpred::Spec big = dict_spec("vec_train.pt");
  big.data.size = 1000;
  Dataset b = ttpred::load_dataset(big);
  CHECK(b.n == 64);
  CHECK(b.available == 64);

  // Float targets are truncated with x.
  ttpred::Spec f = dict_spec("vec_mse.pt");
  f.data.size = 10;
  Dataset m = ttpred::load_dataset(f);
  CHECK(m.n == 10);
  CHECK(m.x.size() == 80u);
  CHECK(m.targets.size() == 30u);
  CHECK(m.available == 64);
}

TEST_CASE("load_dataset: normalize") {
  ttpred::Spec s = idx_spec();
  Dataset raw = ttpred::load_dataset(s);
  s.data.normalize = true;
  s.data.mean = 0.25;
  s.data.std = 0.5;
  Dataset n = ttpred::load_dataset(s);
  REQUIRE(n.x.size() == raw.x.size());
  for (size_t i = 0; i < n.x.size(); ++i) REQUIRE(n.x[i] == doctest::Approx((raw.x[i] - 0.25) / 0.5));
}

TEST_CASE("load_dataset: classes on float targets is a spec error") {
  ttpred::Spec s = dict_spec("vec_mse.pt");
  s.file = "spec.yaml";
  s.data.classes = {0};
  Caught c = catch_error([&] { ttpred::load_dataset(s); });
  REQUIRE(c.thrown);
  CHECK(c.code == Exit::spec);
  CHECK(has(c.msg, "data.classes"));
  // A filter that keeps nothing.
  ttpred::Spec e = dict_spec("vec_train.pt");
  e.data.classes = {9};
  Caught c2 = catch_error([&] { ttpred::load_dataset(e); });
  REQUIRE(c2.thrown);
  CHECK(c2.code == Exit::spec);
}

TEST_CASE("missing files are input errors") {
  const std::string nope = M("no-such-file.pt");
  Caught a = catch_error([&] { ttpred::read_torch_dict(nope); });
  REQUIRE(a.thrown);
  CHECK(a.code == Exit::input);
  CHECK(has(a.msg, nope));
  Caught b = catch_error([&] { ttpred::read_idx(M("no-such-images"), M("tiny-labels-idx1-ubyte")); });
  REQUIRE(b.thrown);
  CHECK(b.code == Exit::input);
  CHECK(has(b.msg, "no-such-images"));
  Caught c = catch_error([&] { ttpred::read_idx(M("tiny-images-idx3-ubyte"), M("no-such-labels")); });
  REQUIRE(c.thrown);
  CHECK(c.code == Exit::input);
  Caught d = catch_error([&] { ttpred::load_dataset(dict_spec("no-such-file.pt")); });
  REQUIRE(d.thrown);
  CHECK(d.code == Exit::input);
}

TEST_CASE("torch dicts with the wrong contents") {
  Caught a = catch_error([&] { ttpred::read_torch_dict(M("not_a_dict.pt")); });
  REQUIRE(a.thrown);
  CHECK(a.code == Exit::input);
  CHECK(has(a.msg, "not_a_dict.pt"));
  CHECK(a.msg.find('\n') == std::string::npos);

  Caught b = catch_error([&] { ttpred::read_torch_dict(M("missing_y.pt")); });
  REQUIRE(b.thrown);
  CHECK(b.code == Exit::input);
  CHECK(has(b.msg, "\"y\""));
  CHECK(b.msg.find('\n') == std::string::npos);

  // LibTorch 1.13 cannot unpickle it: still a clean one-line input error.
  Caught c = catch_error([&] { ttpred::read_torch_dict(M("missing_y_setitem.pt")); });
  REQUIRE(c.thrown);
  CHECK(c.code == Exit::input);
  CHECK(has(c.msg, "missing_y_setitem.pt"));
  CHECK(c.msg.find('\n') == std::string::npos);
  CHECK_FALSE(has(c.msg, "frame #"));
  CHECK(c.msg.size() < 400);

  // An IDX file is not a torch.save'd file; a model file is not a data dict.
  Caught d = catch_error([&] { ttpred::read_torch_dict(M("tiny-images-idx3-ubyte")); });
  REQUIRE(d.thrown);
  CHECK(d.code == Exit::input);
  CHECK(d.msg.find('\n') == std::string::npos);
  Caught e = catch_error([&] { ttpred::read_torch_dict(M("mlp.pt")); });
  REQUIRE(e.thrown);
  CHECK(e.code == Exit::input);
  CHECK(e.msg.find('\n') == std::string::npos);
}

TEST_CASE("NaN in x is invalid and names the sample") {
  // The reader itself does not check; load_dataset does.
  Dataset raw = ttpred::read_torch_dict(M("nan_data.pt"));
  CHECK(raw.n == 64);
  Caught c = catch_error([&] { ttpred::load_dataset(dict_spec("nan_data.pt")); });
  REQUIRE(c.thrown);
  CHECK(c.code == Exit::invalid);
  CHECK(has(c.msg, "nan_data.pt"));
  CHECK(has(c.msg, "sample 5"));
  CHECK(c.msg.find('\n') == std::string::npos);
  // Truncating to the samples before the bad one avoids it.
  ttpred::Spec s = dict_spec("nan_data.pt");
  s.data.size = 5;
  CHECK(ttpred::load_dataset(s).n == 5);
}

TEST_CASE("check_finite: Inf targets and negative labels") {
  Dataset d;
  d.source = "mem";
  d.sample_shape = {2};
  d.n = 2;
  d.x = {0, 1, 2, 3};
  d.y = {0, -1};
  Caught a = catch_error([&] { ttpred::check_finite(d); });
  REQUIRE(a.thrown);
  CHECK(a.code == Exit::invalid);
  CHECK(has(a.msg, "sample 1"));
  d.y.clear();
  d.target_dim = 2;
  d.targets = {0, 1, INFINITY, 0};
  Caught b = catch_error([&] { ttpred::check_finite(d); });
  REQUIRE(b.thrown);
  CHECK(b.code == Exit::invalid);
  CHECK(has(b.msg, "sample 1"));
  d.targets = {0, 1, 2, 0};
  CHECK_NOTHROW(ttpred::check_finite(d));
}

TEST_CASE("truncated and garbage IDX files are input errors") {
  TempDir t;
  const std::string labels = M("tiny-labels-idx1-ubyte");
  auto img = read_bytes(M("tiny-images-idx3-ubyte"));
  REQUIRE(img.size() > 100);

  // Data cut short.
  std::vector<unsigned char> cut(img.begin(), img.begin() + 100);
  std::string p = t.write("cut-idx3-ubyte", cut);
  Caught a = catch_error([&] { ttpred::read_idx(p, labels); });
  REQUIRE(a.thrown);
  CHECK(a.code == Exit::input);
  CHECK(has(a.msg, p));
  CHECK(has(a.msg, "truncated"));

  // Header cut short.
  std::vector<unsigned char> hdr(img.begin(), img.begin() + 9);
  p = t.write("hdr-idx3-ubyte", hdr);
  Caught b = catch_error([&] { ttpred::read_idx(p, labels); });
  REQUIRE(b.thrown);
  CHECK(b.code == Exit::input);

  // Garbage (bad magic).
  std::vector<unsigned char> junk;
  for (int i = 0; i < 200; ++i) junk.push_back(static_cast<unsigned char>(7 * i + 3));
  p = t.write("junk", junk);
  Caught c = catch_error([&] { ttpred::read_idx(p, labels); });
  REQUIRE(c.thrown);
  CHECK(c.code == Exit::input);
  CHECK(has(c.msg, "magic"));

  // Empty file.
  p = t.write("empty", {});
  Caught d = catch_error([&] { ttpred::read_idx(p, labels); });
  REQUIRE(d.thrown);
  CHECK(d.code == Exit::input);

  // A truncated .gz file.
  auto gz = read_bytes(M("tiny-images-idx3-ubyte.gz"));
  std::vector<unsigned char> gzcut(gz.begin(), gz.begin() + long(gz.size() / 2));
  p = t.write("cut.gz", gzcut);
  Caught e = catch_error([&] { ttpred::read_idx(p, labels); });
  REQUIRE(e.thrown);
  CHECK(e.code == Exit::input);
  CHECK(e.msg.find('\n') == std::string::npos);

  // Non-byte element type (0x0D = float).
  auto fl = img;
  fl[2] = 0x0D;
  p = t.write("float-idx3", fl);
  Caught f = catch_error([&] { ttpred::read_idx(p, labels); });
  REQUIRE(f.thrown);
  CHECK(f.code == Exit::input);

  // Labels and images swapped: labels must be 1-D.
  Caught g = catch_error([&] { ttpred::read_idx(labels, M("tiny-images-idx3-ubyte")); });
  REQUIRE(g.thrown);
  CHECK(g.code == Exit::input);
}

// Regression (fixed): data.cpp idx_header(): `total *= size_t(dims.back())` is not checked for
// overflow, so a header claiming 20 x 2^31 x 2^31 bytes wraps `total` to 0 and passes
// the "truncated IDX data" check; read_idx then returns n = 20 with an empty x
// (d.n * k also overflows int64). Expected: Error(Exit::input).
TEST_CASE("IDX header whose size overflows is refused") {
  TempDir t;
  auto b = idx_header({20, 0x80000000u, 0x80000000u});
  for (int i = 0; i < 64; ++i) b.push_back(0);
  std::string p = t.write("huge-idx3-ubyte", b);
  Caught c = catch_error([&] {
    Dataset d = ttpred::read_idx(p, M("tiny-labels-idx1-ubyte"));
    // If it returns, it must at least be consistent.
    CHECK(d.x.size() == size_t(d.n * d.sample_numel()));
  });
  CHECK(c.thrown);
  CHECK(c.code == Exit::input);
}

TEST_CASE("images/labels count mismatch is invalid") {
  TempDir t;
  // 19 labels for 20 images.
  auto b = idx_header({19});
  for (int i = 0; i < 19; ++i) b.push_back(static_cast<unsigned char>(i % 4));
  std::string lab = t.write("labels19", b);
  Caught c = catch_error([&] { ttpred::read_idx(M("tiny-images-idx3-ubyte.gz"), lab); });
  REQUIRE(c.thrown);
  CHECK(c.code == Exit::invalid);
  CHECK(has(c.msg, "20"));
  CHECK(has(c.msg, "19"));
  CHECK(c.msg.find('\n') == std::string::npos);
  // A well-formed handmade pair loads.
  auto im = idx_header({19, 2, 3});
  for (int i = 0; i < 19 * 6; ++i) im.push_back(static_cast<unsigned char>(i));
  std::string ip = t.write("images19", im);
  Dataset d = ttpred::read_idx(ip, lab);
  CHECK(d.n == 19);
  CHECK(d.sample_shape == std::vector<int64_t>{1, 2, 3});
  CHECK(d.x[7] == doctest::Approx(7 / 255.0));
}
