// Data loading: IDX (raw and .gz), torch.save'd dicts, class filter + remap,
// size truncation, normalisation, and the input/invalid errors.
#include <doctest/doctest.h>

#include <algorithm>
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

// The files of tests/unit/make_data_files.py (numpy, torch.save, torchvision.io),
// written once per run into a temporary directory.
std::string F(const std::string& name) {
  static TempDir dir;
  static bool made = false;
  if (!made) {
    const std::string cmd = std::string(TTPRED_PYTHON) + " " + TEST_SOURCE_DIR + "/unit/make_data_files.py " +
                            dir.path.string();
    REQUIRE(std::system(cmd.c_str()) == 0);
    made = true;
  }
  return (dir.path / name).string();
}

ttpred::Spec path_spec(const std::string& path) {
  ttpred::Spec s;
  s.data.path = path;
  s.data.draw_first = true;
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
  s.data.draw_first = true;  // the file's order (data.draw: first)
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

TEST_CASE("load_dataset: data.draw: first truncates after the filter") {
  ttpred::Spec s = idx_spec();
  s.data.draw_first = true;
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
  s.data.mean = {0.25};
  s.data.std = {0.5};
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
  s.data.draw_first = true;
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

// ---- the data a researcher has -------------------------------------------

namespace {

void check_arange(const Dataset& d) {
  REQUIRE(d.n == 6);
  CHECK(d.sample_shape == std::vector<int64_t>{4});
  REQUIRE(d.x.size() == 24u);
  for (int i = 0; i < 24; ++i) CHECK(d.x[size_t(i)] == float(i));
  CHECK(d.y == std::vector<int64_t>{0, 1, 2, 0, 1, 2});
}

Caught load_error(const ttpred::Spec& s) {
  return catch_error([&] { ttpred::load_dataset(s); });
}

}  // namespace

TEST_CASE("npy: an x/y pair, Fortran order, float64 and int32") {
  ttpred::Spec s = path_spec(F("x.npy"));
  s.data.labels = F("y.npy");
  check_arange(ttpred::load_dataset(s));
  ttpred::Spec f = path_spec(F("x_fortran.npy"));
  f.data.labels = F("y_int32.npy");
  check_arange(ttpred::load_dataset(f));
}

TEST_CASE("npz: uint8 NHWC becomes NCHW in [0, 1]; torchvision's names; savez_compressed") {
  Dataset d = ttpred::load_dataset(path_spec(F("nhwc.npz")));
  REQUIRE(d.n == 6);
  CHECK(d.sample_shape == std::vector<int64_t>{3, 5, 4});  // detected: last dimension 3
  CHECK(d.uint8);
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 5; ++h)
        for (int w = 0; w < 4; ++w)
          REQUIRE(d.x[size_t(((i * 3 + c) * 5 + h) * 4 + w)] == float((((i * 5 + h) * 4 + w) * 3 + c) % 251) / 255.0f);
  Dataset t = ttpred::load_dataset(path_spec(F("tv_names.npz")));  // data/targets, deflated
  CHECK(t.x == d.x);
  CHECK(t.y == d.y);
  ttpred::Spec keep = path_spec(F("nhwc.npz"));
  keep.data.layout = "nchw";  // as it is
  CHECK(ttpred::load_dataset(keep).sample_shape == std::vector<int64_t>{5, 4, 3});
}

TEST_CASE("resize and per-channel normalize equal F.interpolate(bilinear) and (x - mean) / std") {
  ttpred::Spec s = path_spec(F("nhwc.npz"));
  s.data.resize_h = 7;
  s.data.resize_w = 6;
  s.data.normalize = true;
  s.data.mean = {0.5, 0.4, 0.3};
  s.data.std = {0.2, 0.25, 0.5};
  Dataset d = ttpred::load_dataset(s);
  CHECK(d.sample_shape == std::vector<int64_t>{3, 7, 6});
  ttpred::NpyArray want = ttpred::read_npy(F("nhwc_expected.npy"));
  REQUIRE(want.numel() == int64_t(d.x.size()));
  double worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) worst = std::max(worst, std::fabs(want.at(i) - d.x[size_t(i)]));
  CHECK(worst < 1e-5);
  // Three values for a one-channel sample: a spec error naming the shape.
  ttpred::Spec g = path_spec(F("mnist_like.pt"));
  g.data.normalize = true;
  g.data.mean = {0.5, 0.4, 0.3};
  g.data.std = {0.2, 0.25, 0.5};
  Caught c = load_error(g);
  CHECK(c.code == Exit::spec);
  CHECK(has(c.msg, "[1, 8, 8]"));
}

TEST_CASE("CSV: features and a named label column; class names in sorted order") {
  ttpred::Spec s = path_spec(F("iris.csv"));
  s.data.label = "species";
  Dataset d = ttpred::load_dataset(s);
  REQUIRE(d.n == 9);
  CHECK(d.sample_shape == std::vector<int64_t>{3});
  CHECK(d.class_names == std::vector<std::string>{"setosa", "versicolor", "virginica"});
  for (int i = 0; i < 9; ++i) {
    CHECK(d.y[size_t(i)] == i % 3);
    CHECK(d.x[size_t(3 * i)] == float(i));
    CHECK(d.x[size_t(3 * i + 1)] == float(i * 0.5));
    CHECK(d.x[size_t(3 * i + 2)] == float(-i));
  }
  ttpred::Spec ids = path_spec(F("ids.csv"));
  ids.data.label = "target";
  CHECK(ttpred::load_dataset(ids).y == std::vector<int64_t>{0, 1, 0, 1, 0, 1});
  Caught c = load_error(path_spec(F("iris.csv")));  // no column "label"
  CHECK(c.code == Exit::invalid);
  CHECK(has(c.msg, "iris.csv: no column 'label'"));
  CHECK(has(c.msg, "a, b, species, c"));
  Caught fl = load_error(path_spec(F("price.csv")));  // regression targets are no class ids
  CHECK(fl.code == Exit::invalid);
  CHECK(has(fl.msg, "price.csv: column 'label' holds numbers that are not class ids"));
  Caught b = load_error(path_spec(F("bad.csv")));
  CHECK(has(b.msg, "bad.csv:3: column 'f1': 'abc' is not a number"));
}

TEST_CASE("torch.save'd tuples, lists and torchvision-style uint8 {data, targets}") {
  check_arange(ttpred::load_dataset(path_spec(F("tuple.pt"))));
  check_arange(ttpred::load_dataset(path_spec(F("list.pt"))));
  Dataset m = ttpred::load_dataset(path_spec(F("mnist_like.pt")));
  CHECK(m.sample_shape == std::vector<int64_t>{1, 8, 8});  // uint8 [N, H, W]: one channel
  for (int i = 0; i < 6 * 64; ++i) REQUIRE(m.x[size_t(i)] == float(i % 256) / 255.0f);
  ttpred::Spec rgb = path_spec(F("mnist_like.pt"));
  rgb.data.channels = 3;
  Dataset r = ttpred::load_dataset(rgb);
  CHECK(r.sample_shape == std::vector<int64_t>{3, 8, 8});
  for (int c = 0; c < 3; ++c) CHECK(r.x[size_t(64 * c + 5)] == m.x[5]);

  Caught td = load_error(path_spec(F("tensor_dataset.pt")));
  CHECK(td.code == Exit::input);
  CHECK(has(td.msg, "tensor_dataset.pt: a pickled Dataset object (TensorDataset) cannot be read from C++"));
  CHECK(has(td.msg, "torch.save(tuple(ds.tensors), f)"));
  Caught lg = load_error(path_spec(F("legacy.pt")));
  CHECK(lg.code == Exit::input);
  CHECK(has(lg.msg, "legacy torch.save format"));
  Caught ix = load_error(path_spec(F("int_x.pt")));
  CHECK(ix.code == Exit::invalid);
  CHECK(has(ix.msg, "x: dtype Long (expected a float tensor, or uint8 images"));
}

TEST_CASE("ImageFolder of PNG and JPEG: classes by folder, RGB, resize, gray") {
  ttpred::Spec s = path_spec(F("folder"));
  s.data.resize_h = s.data.resize_w = 8;  // the JPEGs are 10x12
  Dataset d = ttpred::load_dataset(s);
  REQUIRE(d.n == 8);
  CHECK(d.sample_shape == std::vector<int64_t>{3, 8, 8});
  CHECK(d.class_names == std::vector<std::string>{"cat", "dog"});
  CHECK(d.y == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1});  // notes.txt skipped
  // PNG is lossless: sample 0 is cat/0.png exactly.
  ttpred::NpyArray cat0 = ttpred::read_npy(F("cat0.npy"));  // uint8 [3, 8, 8]
  REQUIRE(cat0.numel() == 192);
  for (int64_t i = 0; i < 192; ++i) REQUIRE(d.x[size_t(i)] == float(cat0.at(i)) / 255.0f);
  for (float v : d.x) REQUIRE((v >= 0 && v <= 1));
  s.data.channels = 1;
  CHECK(ttpred::load_dataset(s).sample_shape == std::vector<int64_t>{1, 8, 8});

  Caught sz = load_error(path_spec(F("folder")));  // no resize: 8x8 and 10x12 differ
  CHECK(sz.code == Exit::invalid);
  CHECK(has(sz.msg, "dog/0.jpg: image is 10x12, but "));
  CHECK(has(sz.msg, "give data.resize"));
  Caught e = load_error(path_spec(F("empty_folder")));
  CHECK(e.code == Exit::input);
  CHECK(has(e.msg, "empty_folder: is a directory without class folders of .png/.jpg images"));
  Caught bad = load_error(path_spec(F("corrupt")));
  CHECK(bad.code == Exit::input);
  CHECK(has(bad.msg, "0.png: cannot decode as PNG"));
}

TEST_CASE("IDX images for a 3-channel model: data.channels and data.resize") {
  ttpred::Spec s = idx_spec();
  s.data.channels = 3;
  s.data.resize_h = s.data.resize_w = 16;
  Dataset d = ttpred::load_dataset(s);
  CHECK(d.sample_shape == std::vector<int64_t>{3, 16, 16});
  CHECK(d.x.size() == size_t(20 * 3 * 16 * 16));
  for (int64_t p = 0; p < 256; ++p) REQUIRE((d.x[size_t(p)] == d.x[size_t(256 + p)] && d.x[size_t(p)] == d.x[size_t(512 + p)]));
}

TEST_CASE("wrong files: one line naming the file, what was found and what is expected") {
  auto msg = [](const std::string& file, Exit code, const std::string& want) {
    Caught c = load_error(path_spec(F(file)));
    INFO(c.msg);
    CHECK(c.code == code);
    CHECK(has(c.msg, F(file) + ": "));
    CHECK(has(c.msg, want));
    CHECK_FALSE(has(c.msg, "\n"));
  };
  msg("data.txt", Exit::input, "unknown data format '.txt' (expected .pt/.pth (torch.save), .npy, .npz, .csv");
  msg("x.npy", Exit::invalid, "an .npy holds one array (x): give the labels as data.labels: y.npy");
  msg("x_complex.npy", Exit::invalid, "dtype '<c8' is not supported");
  msg("x_bigendian.npy", Exit::invalid, "is big-endian");
  msg("x_truncated.npy", Exit::input, "truncated NPY data");
  msg("no_y.npz", Exit::invalid, "found the arrays [features]; expected x");
  msg("nonexistent.npz", Exit::input, "no such file");
  ttpred::Spec lay = dict_spec("vec_train.pt");
  lay.data.layout = "nhwc";
  Caught c = load_error(lay);
  CHECK(c.code == Exit::invalid);
  CHECK(has(c.msg, "samples have shape [8]; data.layout, data.channels and data.resize need images"));
}

TEST_CASE("stratified_order: every prefix in proportion, seeded, a permutation") {
  std::vector<int64_t> labels(1000, 0);
  for (size_t i = 900; i < 1000; ++i) labels[i] = 1;  // class-sorted, 9:1
  const auto a = ttpred::stratified_order(labels, 0);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(sorted[size_t(i)] == i);
  int64_t ones = 0;
  for (size_t m = 0; m < a.size(); ++m) {
    ones += labels[size_t(a[m])];
    REQUIRE(std::fabs(double(ones) - 0.1 * double(m + 1)) <= 1.0);
  }
  CHECK(ttpred::stratified_order(labels, 0) == a);
  CHECK(ttpred::stratified_order(labels, 1) != a);
}

TEST_CASE("load_dataset: N drawn at random, stratified; data.draw: first; the draw warning") {
  ttpred::Spec s = path_spec(F("sorted.npz"));  // 180 of class 0, then 20 of class 1
  s.data.draw_first = false;
  s.data.size = 50;
  Dataset d = ttpred::load_dataset(s);
  REQUIRE(d.n == 50);
  CHECK(d.available == 200);
  CHECK(d.class_counts == std::vector<int64_t>{180, 20});
  const int64_t ones = std::count(d.y.begin(), d.y.end(), 1);
  CHECK(ones == 5);
  // Rows are the file's samples (x = [2 i, 2 i + 1]) with their labels, not the first 50.
  bool beyond = false;
  for (int64_t r = 0; r < d.n; ++r) {
    const int64_t i = int64_t(d.x[size_t(2 * r)]) / 2;
    CHECK(d.x[size_t(2 * r + 1)] == float(2 * i + 1));
    CHECK(d.y[size_t(r)] == (i >= 180 ? 1 : 0));
    beyond |= i >= 50;
  }
  CHECK(beyond);
  CHECK(ttpred::draw_warning(d, 50, "the draw").empty());
  s.seed = 3;
  CHECK(ttpred::load_dataset(s).x != d.x);

  ttpred::Spec first = path_spec(F("sorted.npz"));
  first.data.size = 50;
  Dataset f = ttpred::load_dataset(first);
  CHECK(std::count(f.y.begin(), f.y.end(), 1) == 0);
  CHECK(has(ttpred::draw_warning(f, 50, "the N = 50 samples"), "the N = 50 samples miss 1 of the classes in"));

  ttpred::Spec skew = path_spec(F("skewed.npz"));  // 190:10
  skew.data.draw_first = false;
  Dataset k = ttpred::load_dataset(skew);
  CHECK(has(ttpred::draw_warning(k, 200, "the N0 = 200 samples"),
            "the N0 = 200 samples are strongly unbalanced: class 0 has 190 samples, class 1 has 10"));
}

TEST_CASE("truncated and corrupted .npy/.npz files give one-line errors, never a crash") {
  for (const char* name : {"x.npy", "x_fortran.npy", "nhwc.npz", "tv_names.npz"}) {
    const std::vector<unsigned char> good = read_bytes(F(name));
    const bool npz = has(name, ".npz");
    TempDir t;
    int errors = 0;
    auto attempt = [&](const std::vector<unsigned char>& bytes) {
      const std::string p = t.write(npz ? "m.npz" : "m.npy", bytes);
      Caught c = catch_error([&] { npz ? (void)ttpred::read_npz(p) : (void)ttpred::read_npy(p); });
      if (c.thrown) {
        ++errors;
        REQUIRE((c.code == Exit::input || c.code == Exit::invalid));
        REQUIRE(c.msg.find('\n') == std::string::npos);
        REQUIRE(has(c.msg, p));
      }
    };
    for (size_t n = 0; n < good.size(); n += npz ? 7 : 1)  // every truncation
      attempt(std::vector<unsigned char>(good.begin(), good.begin() + long(n)));
    for (size_t i = 0; i < good.size(); i += npz ? 5 : 1) {  // a byte set to 0xff, then to 0x00
      for (unsigned char v : {0xff, 0x00}) {
        std::vector<unsigned char> m = good;
        m[i] = v;
        attempt(m);
      }
    }
    CHECK(errors > 0);
  }
}
