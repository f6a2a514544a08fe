// The job spec: parse_spec / load_spec, path resolution, and one-line error
// messages that name FILE:LINE and the key (docs/json.md exit codes 3 and 4).
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ttpred/dynamics.hpp"
#include "ttpred/error.hpp"
#include "ttpred/spec.hpp"

namespace fs = std::filesystem;
using ttpred::Error;
using ttpred::Exit;
using ttpred::parse_spec;
using ttpred::Spec;

namespace {

// The spec form. Line numbers matter: tests refer to them.
const std::string kBase =
    "model: m.pt\n"               // 1
    "data:\n"                     // 2
    "  path: data/train.pt\n"     // 3
    "  size: 64\n"                // 4
    "  subset: 32\n"              // 5
    "optimizer:\n"                // 6
    "  lr: 0.1\n"                 // 7
    "  momentum: 0.9\n"           // 8
    "  batch_size: 8\n"           // 9
    "  weight_decay: 0.0001\n"    // 10
    "loss: cross_entropy\n"       // 11
    "training:\n"                 // 12
    "  steps: 20\n"               // 13
    "target:\n"                   // 14
    "  epsilon: 0.01\n";          // 15

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

std::string join_lines(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& l : v) s += l + "\n";
  return s;
}

// Replace 1-based line `n` of `text` with `with` (which may hold several lines,
// or be empty to delete it).
std::string replace_line(const std::string& text, int n, const std::string& with) {
  auto v = split_lines(text);
  REQUIRE(n >= 1);
  REQUIRE(size_t(n) <= v.size());
  std::vector<std::string> out(v.begin(), v.begin() + (n - 1));
  if (!with.empty())
    for (const auto& l : split_lines(with)) out.push_back(l);
  out.insert(out.end(), v.begin() + n, v.end());
  return join_lines(out);
}

// Insert `what` after 1-based line `n`.
std::string insert_after(const std::string& text, int n, const std::string& what) {
  auto v = split_lines(text);
  REQUIRE(size_t(n) <= v.size());
  std::vector<std::string> out(v.begin(), v.begin() + n);
  for (const auto& l : split_lines(what)) out.push_back(l);
  out.insert(out.end(), v.begin() + n, v.end());
  return join_lines(out);
}

// Parse and return the Error (fails the test when nothing is thrown).
struct Caught {
  bool thrown = false;
  Exit code = Exit::ok;
  std::string msg;
};

Caught parse_error(const std::string& yaml) {
  Caught c;
  try {
    parse_spec(yaml, "spec.yaml", "/jobs/a");
  } catch (const Error& e) {
    c.thrown = true;
    c.code = e.code();
    c.msg = e.what();
  }
  return c;
}

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// A spec error: exit code 3, one line, names spec.yaml:LINE and KEY.
void check_spec_error(const std::string& yaml, int line, const std::string& key) {
  Caught c = parse_error(yaml);
  INFO("yaml:\n" << yaml);
  INFO("message: " << c.msg);
  REQUIRE(c.thrown);
  CHECK(c.code == Exit::spec);
  CHECK(c.msg.find('\n') == std::string::npos);
  if (line > 0) CHECK(has(c.msg, "spec.yaml:" + std::to_string(line) + ":"));
  else CHECK(has(c.msg, "spec.yaml"));
  if (!key.empty()) CHECK(has(c.msg, key));
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "ttpred-test-spec-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    fs::path p = path / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
};

}  // namespace

TEST_CASE("the issue's spec form parses with every field") {
  Spec s = parse_spec(kBase, "spec.yaml", "/jobs/a");
  CHECK(s.file == "spec.yaml");
  CHECK(s.dir == "/jobs/a");
  CHECK(s.model == "/jobs/a/m.pt");
  CHECK(s.data.path == "/jobs/a/data/train.pt");
  CHECK(s.data.images.empty());
  CHECK(s.data.labels.empty());
  CHECK(s.data.size == 64);
  CHECK(s.data.subset == 32);
  CHECK_FALSE(s.data.normalize);
  CHECK(s.data.classes.empty());
  CHECK(s.loss == ttpred::Loss::cross_entropy);
  CHECK(s.lr == doctest::Approx(0.1));
  CHECK(s.momentum == doctest::Approx(0.9));
  CHECK(s.batch_size == 8);
  CHECK(s.weight_decay == doctest::Approx(0.0001));
  CHECK(s.steps == 20);
  CHECK(s.epochs == 0.0);
  CHECK(s.target == ttpred::TargetKind::epsilon);
  CHECK(s.target_value == doctest::Approx(0.01));
  // defaults of the optional sections
  CHECK(s.device == "auto");
  CHECK(s.projection == "auto");
  CHECK(s.projection_dim == 0);
  CHECK(s.runs == 0);
  CHECK(s.seed == 0);
  CHECK(s.step_seconds == 0.0);
  CHECK(s.calibrate_steps == 0);
  // lines are remembered for messages
  CHECK(s.line_of("model") == 1);
  CHECK(s.line_of("data.subset") == 5);
  CHECK(s.line_of("optimizer.lr") == 7);
  CHECK(s.line_of("training.steps") == 13);
  CHECK(s.line_of("target.epsilon") == 15);
  CHECK(s.line_of("no.such.key") == 0);
}

TEST_CASE("epochs instead of steps, mse, optional keys") {
  std::string y = replace_line(kBase, 13, "  epochs: 2.5");
  y = replace_line(y, 11, "loss: mse");
  y = replace_line(y, 8, "");  // no momentum
  y = replace_line(y, 13, "");  // drop "target:" (line 13 after the deletion above)
  y = replace_line(y, 13, "");  // and "  epsilon" (now line 13)
  Spec s = parse_spec(y, "spec.yaml", "/jobs/a");
  CHECK(s.steps == 0);
  CHECK(s.epochs == doctest::Approx(2.5));
  CHECK(s.loss == ttpred::Loss::mse);
  CHECK(s.momentum == 0.0);
  // No target section: epsilon 0.01.
  CHECK(s.target == ttpred::TargetKind::epsilon);
  CHECK(s.target_value == doctest::Approx(0.01));
  // aliases of cross entropy
  for (const char* alias : {"ce", "crossentropy", "cross_entropy"}) {
    Spec c = parse_spec(replace_line(kBase, 11, std::string("loss: ") + alias), "spec.yaml", "/jobs/a");
    CHECK(c.loss == ttpred::Loss::cross_entropy);
  }
}

TEST_CASE("target.loss and target.accuracy") {
  Spec a = parse_spec(replace_line(kBase, 15, "  loss: 0.25"), "spec.yaml", "/d");
  CHECK(a.target == ttpred::TargetKind::loss);
  CHECK(a.target_value == doctest::Approx(0.25));
  Spec b = parse_spec(replace_line(kBase, 15, "  accuracy: 0.9"), "spec.yaml", "/d");
  CHECK(b.target == ttpred::TargetKind::accuracy);
  CHECK(b.target_value == doctest::Approx(0.9));
  Spec c = parse_spec(replace_line(kBase, 15, "  loss: 0"), "spec.yaml", "/d");  // loss 0 is allowed
  CHECK(c.target == ttpred::TargetKind::loss);
  CHECK(c.target_value == 0.0);
  CHECK(std::string(ttpred::to_string(ttpred::TargetKind::accuracy)) == "accuracy");
  CHECK(std::string(ttpred::to_string(ttpred::Loss::mse)) == "mse");
}

TEST_CASE("IDX data, classes, normalize, engine and hardware sections") {
  const std::string y =
      "name: fmnist\n"
      "description: transfer\n"
      "model: ../models/cnn.pt\n"
      "data:\n"
      "  images: idx/train-images.gz\n"
      "  labels: /abs/train-labels.gz\n"
      "  classes: [5, 6, 7]\n"
      "  normalize: [0.286, 0.353]\n"
      "optimizer:\n"
      "  type: sgd\n"
      "  lr: 0.01\n"
      "  batch_size: 32\n"
      "training:\n"
      "  epochs: 6\n"
      "engine:\n"
      "  device: cpu\n"
      "  projection: countsketch\n"
      "  projection_dim: 4096\n"
      "  runs: 8\n"
      "  seed: 7\n"
      "hardware:\n"
      "  step_seconds: 0.02\n"
      "  calibrate_steps: 3\n";
  Spec s = parse_spec(y, "/jobs/a/spec.yaml", "/jobs/a");
  CHECK(s.model == "/jobs/models/cnn.pt");  // lexically normalised
  CHECK(s.data.path.empty());
  CHECK(s.data.images == "/jobs/a/idx/train-images.gz");
  CHECK(s.data.labels == "/abs/train-labels.gz");  // absolute: unchanged
  CHECK(s.data.classes == std::vector<int64_t>{5, 6, 7});
  CHECK(s.data.normalize);
  CHECK(s.data.mean.at(0) == doctest::Approx(0.286));
  CHECK(s.data.std.at(0) == doctest::Approx(0.353));
  CHECK(s.data.size == 0);
  CHECK(s.data.subset == 0);
  CHECK(s.epochs == doctest::Approx(6.0));
  CHECK(s.steps == 0);
  CHECK(s.device == "cpu");
  CHECK(s.projection == "countsketch");
  CHECK(s.projection_dim == 4096);
  CHECK(s.runs == 8);
  CHECK(s.seed == 7);
  CHECK(s.step_seconds == doctest::Approx(0.02));
  CHECK(s.calibrate_steps == 3);
}

TEST_CASE("Spec::resolve") {
  Spec s;
  s.dir = "/jobs/a";
  CHECK(s.resolve("m.pt") == "/jobs/a/m.pt");
  CHECK(s.resolve("./x/../m.pt") == "/jobs/a/m.pt");
  CHECK(s.resolve("../b/m.pt") == "/jobs/b/m.pt");
  CHECK(s.resolve("/abs/m.pt") == "/abs/m.pt");
  CHECK(s.resolve("").empty());
  Spec none;  // no dir: unchanged
  CHECK(none.resolve("m.pt") == "m.pt");
}

TEST_CASE("load_spec resolves relative paths against the spec's directory") {
  TempDir t;
  fs::path p = t.write("jobs/spec.yaml", kBase);
  Spec s = ttpred::load_spec(p.string());
  const fs::path dir = fs::absolute(p).lexically_normal().parent_path();
  CHECK(s.dir == dir.string());
  CHECK(s.model == (dir / "m.pt").string());
  CHECK(s.data.path == (dir / "data" / "train.pt").string());
  CHECK(fs::path(s.model).is_absolute());
  CHECK(s.lr == doctest::Approx(0.1));

  // A relative spec path (as typed on a command line) still gives absolute paths.
  const fs::path old = fs::current_path();
  fs::current_path(t.path);
  Spec r;
  std::string err;
  try {
    r = ttpred::load_spec("jobs/spec.yaml");
  } catch (const std::exception& e) {
    err = e.what();
  }
  fs::current_path(old);
  CHECK(err.empty());
  CHECK(r.model == (dir / "m.pt").string());
  CHECK(fs::path(r.dir).is_absolute());
}

TEST_CASE("load_spec: missing file and directory are input errors") {
  TempDir t;
  const std::string missing = (t.path / "nope.yaml").string();
  try {
    ttpred::load_spec(missing);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.code() == Exit::input);
    CHECK(has(e.what(), missing));
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
  try {
    ttpred::load_spec(t.path.string());
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.code() == Exit::input);
    CHECK(has(e.what(), t.path.string()));
  }
  // A spec error from a file names that file and the line.
  fs::path p = t.write("spec.yaml", replace_line(kBase, 7, "  lr: fast"));
  try {
    ttpred::load_spec(p.string());
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.code() == Exit::spec);
    CHECK(has(e.what(), p.string() + ":7:"));
    CHECK(has(e.what(), "optimizer.lr"));
  }
}

TEST_CASE("malformed YAML: spec error naming the line") {
  // "lr: 0.1: 2" is a mapping value where none is allowed.
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1: 2"), 7, "");
  // An indentation error on line 9.
  check_spec_error(replace_line(kBase, 9, "   batch_size: 8"), 9, "");
  Caught c = parse_error(replace_line(kBase, 7, "  lr: 0.1: 2"));
  CHECK(has(c.msg, "YAML"));
  // Not a mapping at all.
  check_spec_error("- just\n- a list\n", 0, "");
  check_spec_error("", 0, "");
}

TEST_CASE("unknown keys: top level and nested") {
  check_spec_error(insert_after(kBase, 11, "schedule: cosine"), 12, "schedule");
  Caught top = parse_error(insert_after(kBase, 11, "schedule: cosine"));
  CHECK(has(top.msg, "unknown key"));
  check_spec_error(replace_line(kBase, 7, "  lrr: 0.1"), 7, "optimizer.lrr");
  check_spec_error(insert_after(kBase, 5, "  shuffle: true"), 6, "data.shuffle");
  check_spec_error(insert_after(kBase, 13, "  warmup: 5"), 14, "training.warmup");
  check_spec_error(kBase + "engine:\n  gpu: 1\n", 17, "engine.gpu");
  check_spec_error(kBase + "hardware:\n  step_second: 0.1\n", 17, "hardware.step_second");
  check_spec_error(replace_line(kBase, 15, "  eps: 0.01"), 15, "target.eps");
}

TEST_CASE("ill-typed values") {
  check_spec_error(replace_line(kBase, 7, "  lr: fast"), 7, "optimizer.lr");
  Caught c = parse_error(replace_line(kBase, 7, "  lr: fast"));
  CHECK(has(c.msg, "fast"));
  check_spec_error(replace_line(kBase, 9, "  batch_size: 3.5"), 9, "optimizer.batch_size");
  check_spec_error(replace_line(kBase, 9, "  batch_size: [8]"), 9, "optimizer.batch_size");
  check_spec_error(replace_line(kBase, 4, "  size: many"), 4, "data.size");
  check_spec_error(replace_line(kBase, 13, "  steps: 2.5"), 13, "training.steps");
  check_spec_error(replace_line(kBase, 8, "  momentum: high"), 8, "optimizer.momentum");
  check_spec_error(replace_line(kBase, 7, "  lr: .nan"), 7, "optimizer.lr");
  check_spec_error(replace_line(kBase, 7, "  lr: .inf"), 7, "optimizer.lr");
  {
    std::string d = replace_line(kBase, 2, "data: train.pt");
    for (int i = 0; i < 3; ++i) d = replace_line(d, 3, "");
    check_spec_error(d, 2, "data");
  }
  check_spec_error(replace_line(kBase, 11, "loss: hinge"), 11, "loss");
  check_spec_error(insert_after(kBase, 6, "  type: rmsprop"), 7, "optimizer.type");
  std::string cls = insert_after(kBase, 5, "  classes: [1, one]");
  check_spec_error(cls, 6, "data.classes");
  check_spec_error(insert_after(kBase, 5, "  classes: [1, 1]"), 6, "data.classes");
  check_spec_error(insert_after(kBase, 5, "  classes: []"), 6, "data.classes");
  check_spec_error(insert_after(kBase, 5, "  normalize: [0.5]"), 6, "data.normalize");
  check_spec_error(insert_after(kBase, 5, "  normalize: [0.5, 0]"), 6, "data.normalize");
}

TEST_CASE("invalid values") {
  check_spec_error(replace_line(kBase, 7, "  lr: 0"), 7, "optimizer.lr");
  check_spec_error(replace_line(kBase, 7, "  lr: -0.1"), 7, "optimizer.lr");
  check_spec_error(replace_line(kBase, 8, "  momentum: 1"), 8, "optimizer.momentum");
  check_spec_error(replace_line(kBase, 8, "  momentum: 1.5"), 8, "optimizer.momentum");
  check_spec_error(replace_line(kBase, 8, "  momentum: -0.1"), 8, "optimizer.momentum");
  check_spec_error(replace_line(kBase, 10, "  weight_decay: -1"), 10, "optimizer.weight_decay");
  check_spec_error(replace_line(kBase, 9, "  batch_size: 0"), 9, "optimizer.batch_size");
  check_spec_error(replace_line(kBase, 4, "  size: 0"), 4, "data.size");
  check_spec_error(replace_line(kBase, 5, "  subset: -3"), 5, "data.subset");
  check_spec_error(replace_line(kBase, 13, "  steps: -5"), 13, "training.steps");
  check_spec_error(replace_line(kBase, 13, "  epochs: 0"), 13, "training.epochs");
  check_spec_error(kBase + "engine:\n  device: tpu\n", 17, "engine.device");
  check_spec_error(kBase + "engine:\n  projection: random\n", 17, "engine.projection");
  check_spec_error(kBase + "engine:\n  runs: 5000\n", 17, "engine.runs");
  check_spec_error(kBase + "engine:\n  seed: -1\n", 17, "engine.seed");
  check_spec_error(kBase + "hardware:\n  step_seconds: 0\n", 17, "hardware.step_seconds");
  check_spec_error(kBase + "hardware:\n  calibrate_steps: 2000\n", 17, "hardware.calibrate_steps");
}

TEST_CASE("subset and batch_size larger than data.size") {
  check_spec_error(replace_line(kBase, 5, "  subset: 100"), 5, "data.subset");
  Caught a = parse_error(replace_line(kBase, 5, "  subset: 100"));
  CHECK(has(a.msg, "100"));
  CHECK(has(a.msg, "64"));
  check_spec_error(replace_line(kBase, 9, "  batch_size: 65"), 9, "optimizer.batch_size");
  // Equal is fine.
  Spec s = parse_spec(replace_line(replace_line(kBase, 5, "  subset: 64"), 9, "  batch_size: 64"), "spec.yaml",
                      "/d");
  CHECK(s.data.subset == 64);
  CHECK(s.batch_size == 64);
}

TEST_CASE("horizon: exactly one of steps and epochs") {
  check_spec_error(insert_after(kBase, 13, "  epochs: 3"), 12, "training");
  Caught both = parse_error(insert_after(kBase, 13, "  epochs: 3"));
  CHECK(has(both.msg, "steps"));
  CHECK(has(both.msg, "epochs"));
  // neither
  check_spec_error(replace_line(kBase, 13, "  {}"), 12, "training");
}

// Regression (fixed): spec.cpp validate(): `bad(s.steps ? "training.steps" : "training.epochs", ...)`
// names training.epochs (with no line) when the spec says `steps: 0`.
TEST_CASE("steps: 0 names training.steps and its line") {
  check_spec_error(replace_line(kBase, 13, "  steps: 0"), 13, "training.steps");
}

TEST_CASE("missing sections and keys") {
  // optimizer missing (lines 6-10 deleted)
  std::string noopt = kBase;
  for (int i = 0; i < 5; ++i) noopt = replace_line(noopt, 6, "");
  check_spec_error(noopt, 0, "optimizer");
  Caught c = parse_error(noopt);
  CHECK(has(c.msg, "missing"));
  check_spec_error(replace_line(kBase, 1, ""), 0, "model");
  check_spec_error(replace_line(kBase, 7, ""), 0, "optimizer.lr");
  check_spec_error(replace_line(kBase, 9, ""), 0, "optimizer.batch_size");
  std::string notrain = replace_line(replace_line(kBase, 12, ""), 12, "");
  check_spec_error(notrain, 0, "training");
  // data without path or IDX files; IDX images without labels
  check_spec_error(replace_line(kBase, 3, ""), 2, "data");
  check_spec_error(replace_line(kBase, 3, "  images: a.idx"), 0, "data.labels");
  check_spec_error(insert_after(kBase, 3, "  images: a.idx\n  labels: b.idx"), 2, "data");
}

TEST_CASE("bad targets") {
  check_spec_error(replace_line(kBase, 15, "  epsilon: 0"), 15, "target.epsilon");
  check_spec_error(replace_line(kBase, 15, "  epsilon: -0.5"), 15, "target.epsilon");
  check_spec_error(replace_line(kBase, 15, "  accuracy: 1.5"), 15, "target.accuracy");
  check_spec_error(replace_line(kBase, 15, "  accuracy: 0"), 15, "target.accuracy");
  check_spec_error(replace_line(kBase, 15, "  loss: -1"), 15, "target.loss");
  check_spec_error(replace_line(kBase, 15, "  epsilon: small"), 15, "target.epsilon");
  check_spec_error(insert_after(kBase, 15, "  loss: 0.2"), 14, "target");  // two targets
  check_spec_error(replace_line(kBase, 15, "  {}"), 14, "target");          // none
  check_spec_error(replace_line(replace_line(kBase, 15, ""), 14, "target: 0.01"), 14, "target");  // not a mapping
}

TEST_CASE("validate re-checks after overrides") {
  Spec s = parse_spec(kBase, "spec.yaml", "/d");
  s.lr = -1;
  try {
    ttpred::validate(s);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.code() == Exit::spec);
    CHECK(has(e.what(), "spec.yaml:7:"));
    CHECK(has(e.what(), "optimizer.lr"));
  }
  s = parse_spec(kBase, "spec.yaml", "/d");
  s.data.subset = 1000;  // --subset above data.size
  CHECK_THROWS_AS(ttpred::validate(s), Error);
}

// Regression (fixed): spec.cpp parse_spec(): `s.runs = static_cast<int>(e.integer("runs"))` truncates
// before the 1..1000 range check, so runs: 4294967298 (2^32 + 2) is accepted as 2.
// Same for hardware.calibrate_steps.
TEST_CASE("engine.runs beyond int range is refused") {
  check_spec_error(kBase + "engine:\n  runs: 4294967298\n", 17, "engine.runs");
  check_spec_error(kBase + "hardware:\n  calibrate_steps: 4294967299\n", 17, "hardware.calibrate_steps");
}

TEST_CASE("error messages: located() format") {
  CHECK(ttpred::located("f.yaml", 3, "a.b", "bad") == "f.yaml:3: a.b: bad");
  CHECK(ttpred::located("f.yaml", 0, "a.b", "bad") == "f.yaml: a.b: bad");
  CHECK(ttpred::located("", 0, "", "bad") == "bad");
}

TEST_CASE("the embedded default spec loads") {
  Spec s = ttpred::load_spec(DEFAULT_SPEC);
  CHECK(s.data.classes == std::vector<int64_t>{5, 6, 7, 8, 9});
  CHECK(s.data.size == 2000);
  CHECK(s.batch_size == 32);
  CHECK(s.epochs == doctest::Approx(6));
  CHECK(fs::path(s.model).is_absolute());
  CHECK(fs::exists(s.model));
  CHECK(fs::exists(ttpred::default_spec_path()));
}

TEST_CASE("a duplicate key is an error naming its second line") {
  check_spec_error(replace_line(kBase, 8, "  lr: 0.2"), 8, "optimizer.lr");
}

TEST_CASE("sweep: cartesian product, first key slowest, each combination validated") {
  std::string y = kBase + "sweep:\n  lr: [0.01, 0.02, 0.04]\n  batch_size: [8, 16]\n";
  Spec s = parse_spec(y, "spec.yaml", "/tmp");
  REQUIRE(s.sweep.size() == 2);
  auto all = expand_sweep(s);
  REQUIRE(all.size() == 6);
  CHECK(all[0].lr == 0.01);
  CHECK(all[0].batch_size == 8);
  CHECK(all[1].batch_size == 16);
  CHECK(all[5].lr == 0.04);
  CHECK(all[5].batch_size == 16);
  for (const auto& one : all) CHECK(one.sweep.empty());
  // Aliases and the data/horizon keys.
  Spec t = parse_spec(kBase + "sweep:\n  size: [32, 64]\n  epochs: [1, 2]\n", "spec.yaml", "/tmp");
  auto tt = expand_sweep(t);
  REQUIRE(tt.size() == 4);
  CHECK(tt[0].data.size == 32);
  CHECK(tt[3].epochs == 2);
  CHECK(tt[3].steps == 0);
}

TEST_CASE("sweep: the rows share the spec's re-linearization unless engine.sweep_kernel is each") {
  Spec s = parse_spec(kBase + "sweep:\n  lr: [0.05, 0.2]\n  batch_size: [8, 16]\n", "spec.yaml", "/tmp");
  CHECK(s.sweep_kernel_shared);
  CHECK_FALSE(s.relinearize_with.set);  // the spec itself: its own values
  for (const Spec& r : expand_sweep(s)) {
    CHECK(r.relinearize_with.set);
    CHECK(r.relinearize_with.lr == 0.1);
    CHECK(r.relinearize_with.momentum == 0.9);
    CHECK(r.relinearize_with.weight_decay == 0.0001);
    CHECK(r.relinearize_with.batch_size == 8);
  }
  Spec each = parse_spec(kBase + "engine:\n  sweep_kernel: each\nsweep:\n  lr: [0.05, 0.2]\n", "spec.yaml", "/tmp");
  CHECK_FALSE(each.sweep_kernel_shared);
  for (const Spec& r : expand_sweep(each)) CHECK_FALSE(r.relinearize_with.set);
  // A sweep of N or the horizon only: nothing to share, the rows are plain.
  for (const Spec& r : expand_sweep(parse_spec(kBase + "sweep:\n  size: [32, 64]\n", "spec.yaml", "/tmp")))
    CHECK_FALSE(r.relinearize_with.set);
  // Named in the spec: missing keys are the spec's own; the sweep keeps it.
  Spec named = parse_spec(kBase + "engine:\n  relinearize_with:\n    lr: 0.3\n    batch_size: 16\n"
                                  "sweep:\n  lr: [0.05, 0.2]\n", "spec.yaml", "/tmp");
  CHECK(named.relinearize_with.set);
  CHECK(named.relinearize_with.lr == 0.3);
  CHECK(named.relinearize_with.batch_size == 16);
  CHECK(named.relinearize_with.momentum == 0.9);
  CHECK(named.relinearize_with.weight_decay == 0.0001);
  for (const Spec& r : expand_sweep(named)) CHECK(r.relinearize_with.lr == 0.3);
  check_spec_error(kBase + "engine:\n  sweep_kernel: some\n", 17, "engine.sweep_kernel");
  check_spec_error(kBase + "engine:\n  relinearize_with:\n    lr: -1\n", 18, "engine.relinearize_with.lr");
  check_spec_error(kBase + "engine:\n  relinearize_with:\n    momentum: 1\n", 18, "engine.relinearize_with.momentum");
  check_spec_error(kBase + "engine:\n  relinearize_with:\n    batch_size: 0\n", 18,
                   "engine.relinearize_with.batch_size");
  check_spec_error(kBase + "engine:\n  relinearize_with:\n    gamma: 1\n", 18, "engine.relinearize_with.gamma");
  check_spec_error(kBase + "engine:\n  relinearize_with: 0.1\n", 17, "engine.relinearize_with");
}

TEST_CASE("sweep errors name the sweep line") {
  check_spec_error(kBase + "sweep:\n  lr: [0.1, -0.5]\n", 17, "optimizer.lr");
  check_spec_error(kBase + "sweep:\n  lr: 0.1\n", 17, "sweep.lr");
  check_spec_error(kBase + "sweep:\n  lr: [0.1, fast]\n", 17, "sweep.lr");
  check_spec_error(kBase + "sweep:\n  batch_size: [8, 2.5]\n", 17, "sweep.batch_size");
  check_spec_error(kBase + "sweep:\n  gamma: [1]\n", 17, "sweep.gamma");
  check_spec_error(kBase + "sweep:\n  batch_size: [8, 128]\n", 17, "optimizer.batch_size");  // > size 64
}

TEST_CASE("learning-rate schedules follow PyTorch's schedulers, per step") {
  ttpred::Schedule c;
  CHECK(c.at(0.1, 57, 100) == 0.1);
  ttpred::Schedule st;
  st.type = "step";
  st.step_size = 10;
  st.gamma = 0.5;
  CHECK(st.at(0.1, 9, 100) == doctest::Approx(0.1));
  CHECK(st.at(0.1, 10, 100) == doctest::Approx(0.05));
  CHECK(st.at(0.1, 25, 100) == doctest::Approx(0.025));
  ttpred::Schedule cos;
  cos.type = "cosine";
  cos.min_lr = 0.01;
  CHECK(cos.at(0.1, 0, 100) == doctest::Approx(0.1));
  CHECK(cos.at(0.1, 50, 100) == doctest::Approx(0.055));
  CHECK(cos.at(0.1, 100, 100) == doctest::Approx(0.01));
  ttpred::Schedule lin;
  lin.type = "linear";
  lin.warmup_steps = 4;
  CHECK(lin.at(1.0, 0, 100) == doctest::Approx(0.25 * 1.0));
  CHECK(lin.at(1.0, 3, 100) == doctest::Approx(0.97));
  CHECK(lin.at(1.0, 50, 100) == doctest::Approx(0.5));

  Spec s = parse_spec(replace_line(kBase, 7, "  lr: 0.1\n  schedule: {type: cosine, warmup_steps: 5, min_lr: 0.001}"),
                      "spec.yaml", "/tmp");
  CHECK(s.schedule.type == "cosine");
  CHECK(s.schedule.warmup_steps == 5);
  CHECK(s.schedule.min_lr == 0.001);
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1\n  schedule: {type: exponential}"), 8, "optimizer.schedule.type");
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1\n  schedule: {type: step}"), 8, "step_size");

  // table: lr × factors[t], the last factor holding past the end.
  ttpred::Schedule tab;
  tab.type = "table";
  tab.factors = {0.5, 1.0, 0.25};
  CHECK(tab.at(0.1, 0, 100) == doctest::Approx(0.05));
  CHECK(tab.at(0.1, 1, 100) == doctest::Approx(0.1));
  CHECK(tab.at(0.1, 2, 100) == doctest::Approx(0.025));
  CHECK(tab.at(0.1, 99, 100) == doctest::Approx(0.025));
  tab.warmup_steps = 2;  // a warm-up still multiplies
  CHECK(tab.at(0.1, 0, 100) == doctest::Approx(0.025));
  Spec t = parse_spec(replace_line(kBase, 7, "  lr: 0.1\n  schedule: {type: table, factors: [0, 0.5, 1]}"),
                      "spec.yaml", "/tmp");
  CHECK(t.schedule.type == "table");
  CHECK(t.schedule.factors == std::vector<double>{0, 0.5, 1});
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1\n  schedule: {type: table}"), 8, "factors");
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1\n  schedule: {type: table, factors: []}"), 8,
                   "optimizer.schedule.factors");
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1\n  schedule:\n    type: table\n    factors: [1, -1]"), 10,
                   "entry 1");
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1\n  schedule:\n    type: table\n    factors: [1, abc]"), 10,
                   "entry 1");
  check_spec_error(replace_line(kBase, 7, "  lr: 0.1\n  schedule: {type: cosine, factors: [1]}"), 8,
                   "type: table only");
}

TEST_CASE("engine keys of the later stages: values and errors") {
  Spec s = parse_spec(kBase + "engine:\n  relinearize: 0\n  diagnose_steps: 7\n  extrapolate: false\n  trace_ntk: 4\n",
                      "spec.yaml", "/tmp");
  CHECK(s.relinearize == 0);
  CHECK(s.diagnose_steps == 7);
  CHECK_FALSE(s.extrapolate);
  CHECK(parse_spec(kBase, "spec.yaml", "/tmp").extrapolate);  // on by default
  // The self-check's stretch: off by default since session 12 (docs/method.md §5), available on request.
  CHECK_FALSE(parse_spec(kBase, "spec.yaml", "/tmp").extrapolation_correction);
  CHECK(parse_spec(kBase + "engine:\n  extrapolation_correction: true\n", "spec.yaml", "/tmp").extrapolation_correction);
  check_spec_error(kBase + "engine:\n  extrapolation_correction: 2\n", 17, "engine.extrapolation_correction");
  // The tail's samples after w_K (docs/method.md §7): stratified at w_K by default, in one part.
  CHECK(parse_spec(kBase, "spec.yaml", "/tmp").tail_stratified);
  CHECK(parse_spec(kBase, "spec.yaml", "/tmp").tail_parts == 1);
  CHECK_FALSE(parse_spec(kBase + "engine:\n  tail_subset: tracked\n", "spec.yaml", "/tmp").tail_stratified);
  CHECK(parse_spec(kBase + "engine:\n  tail_parts: 3\n", "spec.yaml", "/tmp").tail_parts == 3);
  check_spec_error(kBase + "engine:\n  tail_subset: random\n", 17, "engine.tail_subset");
  check_spec_error(kBase + "engine:\n  tail_parts: 5\n", 17, "engine.tail_parts");
  // One real prefix by default; more are averaged (docs/method.md §7).
  CHECK(parse_spec(kBase, "spec.yaml", "/tmp").prefix_runs == 1);
  CHECK(parse_spec(kBase + "engine:\n  prefix_runs: 2\n", "spec.yaml", "/tmp").prefix_runs == 2);
  check_spec_error(kBase + "engine:\n  prefix_runs: 0\n", 17, "engine.prefix_runs");
  check_spec_error(kBase + "engine:\n  prefix_runs: 5\n", 17, "engine.prefix_runs");
  // The automatic K's rule: round(0.5 T), at most 500, both settable.
  CHECK(parse_spec(kBase, "spec.yaml", "/tmp").relinearize_fraction == 0.5);
  CHECK(parse_spec(kBase, "spec.yaml", "/tmp").relinearize_cap == 500);
  CHECK(parse_spec(kBase + "engine:\n  relinearize_fraction: 0.5\n", "spec.yaml", "/tmp").relinearize_fraction == 0.5);
  CHECK(parse_spec(kBase + "engine:\n  relinearize_cap: 500\n", "spec.yaml", "/tmp").relinearize_cap == 500);
  check_spec_error(kBase + "engine:\n  relinearize_fraction: 0\n", 17, "engine.relinearize_fraction");
  check_spec_error(kBase + "engine:\n  relinearize_fraction: 1.5\n", 17, "engine.relinearize_fraction");
  check_spec_error(kBase + "engine:\n  relinearize_cap: 0\n", 17, "engine.relinearize_cap");
  CHECK(s.trace_ntk == 4);
  CHECK(parse_spec(kBase, "spec.yaml", "/tmp").relinearize == -1);  // auto: round(0.5 T), at most 500
  check_spec_error(kBase + "engine:\n  extrapolate: maybe\n", 17, "engine.extrapolate");
  check_spec_error(kBase + "engine:\n  trace_ntk: -1\n", 17, "engine.trace_ntk");
  check_spec_error(kBase + "engine:\n  relinearize: -2\n", 17, "engine.relinearize");
  check_spec_error(kBase + "engine:\n  diagnose_steps: 1.5\n", 17, "engine.diagnose_steps");
  check_spec_error(kBase + "hardware:\n  gpus: -1\n", 17, "hardware.gpus");
}

TEST_CASE("data keys for the data a researcher has: values and errors") {
  auto with = [](const std::string& lines) { return insert_after(kBase, 5, lines); };
  Spec s = parse_spec(with("  layout: nhwc\n  channels: 3\n  resize: [224, 200]\n  draw: first\n"
                           "  normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"),
                      "spec.yaml", "/jobs/a");
  CHECK(s.data.layout == "nhwc");
  CHECK(s.data.channels == 3);
  CHECK(s.data.resize_h == 224);
  CHECK(s.data.resize_w == 200);
  CHECK(s.data.draw_first);
  CHECK(s.data.normalize);
  CHECK(s.data.mean == std::vector<double>{0.485, 0.456, 0.406});
  CHECK(s.data.std == std::vector<double>{0.229, 0.224, 0.225});
  Spec d = parse_spec(kBase, "spec.yaml", "/jobs/a");
  CHECK(d.data.layout == "auto");
  CHECK_FALSE(d.data.draw_first);  // stratified
  Spec sq = parse_spec(with("  resize: 32"), "spec.yaml", "/jobs/a");
  CHECK((sq.data.resize_h == 32 && sq.data.resize_w == 32));
  Spec csv = parse_spec(replace_line(kBase, 3, "  path: cells.csv\n  label: cell_type"), "spec.yaml", "/jobs/a");
  CHECK(csv.data.label == "cell_type");
  Spec npy = parse_spec(replace_line(kBase, 3, "  path: x.npy\n  labels: y.npy"), "spec.yaml", "/jobs/a");
  CHECK(npy.data.labels == "/jobs/a/y.npy");

  check_spec_error(with("  layout: hwc"), 6, "data.layout");
  check_spec_error(with("  channels: 2"), 6, "data.channels");
  check_spec_error(with("  resize: [0, 3]"), 6, "data.resize");
  check_spec_error(with("  resize: big"), 6, "data.resize");
  check_spec_error(with("  draw: last"), 6, "data.draw");
  check_spec_error(with("  normalize: {mean: [0.5, 0.5], std: [0.2]}"), 6, "data.normalize");
  check_spec_error(with("  normalize: {mean: [0.5]}"), 6, "data.normalize");
  check_spec_error(with("  normalize: {mean: [0.5], std: [0]}"), 6, "data.normalize");
  check_spec_error(with("  normalize: {mean: [0.5], sd: [1]}"), 6, "data.normalize.sd");
  check_spec_error(with("  label: y"), 6, "data.label");  // data.path is not a .csv
  check_spec_error(with("  labels: y.npy"), 6, "data.labels");  // a .pt holds its own labels
}

// The AdamW form (kBase's optimizer without momentum, lines 6..).
const std::string kAdamW =
    "model: m.pt\n"                 // 1
    "data:\n"                       // 2
    "  path: data/train.pt\n"       // 3
    "  size: 64\n"                  // 4
    "optimizer:\n"                  // 5
    "  name: adamw\n"               // 6
    "  lr: 0.001\n"                 // 7
    "  betas: [0.9, 0.999]\n"       // 8
    "  eps: 1.0e-8\n"               // 9
    "  weight_decay: 0.01\n"        // 10
    "  batch_size: 8\n"             // 11
    "training:\n"                   // 12
    "  steps: 20\n";                // 13

TEST_CASE("optimizer.name: sgd, adam, adamw with betas and eps; optimizer.type still reads") {
  Spec s = parse_spec(kAdamW, "spec.yaml", "/jobs/a");
  CHECK(s.optimizer == ttpred::Optimizer::adamw);
  CHECK(s.lr == 0.001);
  CHECK(s.beta1 == 0.9);
  CHECK(s.beta2 == 0.999);
  CHECK(s.eps == 1e-8);
  CHECK(s.weight_decay == 0.01);
  CHECK(std::string(ttpred::to_string(s.optimizer)) == "adamw");
  CHECK(parse_spec(replace_line(kAdamW, 6, "  name: adam"), "spec.yaml", "/jobs/a").optimizer == ttpred::Optimizer::adam);
  CHECK(parse_spec(replace_line(kAdamW, 6, "  type: adam"), "spec.yaml", "/jobs/a").optimizer == ttpred::Optimizer::adam);
  // Defaults: torch.optim.Adam's betas and eps.
  Spec d = parse_spec(replace_line(replace_line(kAdamW, 8, ""), 8, ""), "spec.yaml", "/jobs/a");
  CHECK(d.beta1 == 0.9);
  CHECK(d.beta2 == 0.999);
  CHECK(d.eps == 1e-8);
  Spec sgd = parse_spec(kBase, "spec.yaml", "/jobs/a");
  CHECK(sgd.optimizer == ttpred::Optimizer::sgd);
  CHECK(parse_spec(insert_after(kBase, 6, "  type: sgd"), "spec.yaml", "/jobs/a").optimizer == ttpred::Optimizer::sgd);
  CHECK(parse_spec(insert_after(kBase, 6, "  name: sgd\n  nesterov: true"), "spec.yaml", "/jobs/a").nesterov);
}

TEST_CASE("optimizer errors name the key and line") {
  check_spec_error(replace_line(kAdamW, 6, "  name: lamb"), 6, "optimizer.name");
  check_spec_error(replace_line(kAdamW, 8, "  betas: [0.9, 1.0]"), 8, "optimizer.betas");
  Caught b = parse_error(replace_line(kAdamW, 8, "  betas: [0.9]"));
  CHECK(has(b.msg, "optimizer.betas: must be two numbers in [0, 1)"));
  check_spec_error(replace_line(kAdamW, 8, "  betas: [0.9, x]"), 8, "optimizer.betas");
  check_spec_error(replace_line(kAdamW, 8, "  betas: 0.9"), 8, "optimizer.betas");
  check_spec_error(replace_line(kAdamW, 9, "  eps: -1"), 9, "optimizer.eps");
  check_spec_error(insert_after(kAdamW, 6, "  type: adamw"), 7, "optimizer.type");
  check_spec_error(insert_after(kAdamW, 7, "  momentum: 0.9"), 8, "optimizer.momentum");
  check_spec_error(insert_after(kAdamW, 7, "  nesterov: true"), 8, "optimizer.nesterov");
  check_spec_error(insert_after(kBase, 6, "  betas: [0.9, 0.99]"), 7, "optimizer.betas");
  check_spec_error(insert_after(kBase, 6, "  eps: 1.0e-8"), 7, "optimizer.eps");
  // Nesterov needs momentum (torch.optim.SGD refuses it otherwise).
  check_spec_error(replace_line(insert_after(kBase, 6, "  nesterov: true"), 9, "  momentum: 0"), 7, "optimizer.nesterov");
  check_spec_error(insert_after(kBase, 6, "  nesterov: maybe"), 7, "optimizer.nesterov");
  check_spec_error(insert_after(kBase, 6, "  accumulation_steps: 0"), 7, "optimizer.accumulation_steps");
  check_spec_error(insert_after(kBase, 6, "  accumulation_steps: 1.5"), 7, "optimizer.accumulation_steps");
}

TEST_CASE("loss as a mapping with label_smoothing; the string form stays") {
  Spec s = parse_spec(replace_line(kBase, 11, "loss: {name: cross_entropy, label_smoothing: 0.1}"), "spec.yaml", "/jobs/a");
  CHECK(s.loss == ttpred::Loss::cross_entropy);
  CHECK(s.label_smoothing == 0.1);
  Spec m = parse_spec(replace_line(kBase, 11, "loss:\n  name: mse"), "spec.yaml", "/jobs/a");
  CHECK(m.loss == ttpred::Loss::mse);
  CHECK(m.label_smoothing == 0);
  CHECK(parse_spec(kBase, "spec.yaml", "/jobs/a").label_smoothing == 0);
  check_spec_error(replace_line(kBase, 11, "loss:\n  name: cross_entropy\n  label_smoothing: 1"), 13,
                   "loss.label_smoothing");
  check_spec_error(replace_line(kBase, 11, "loss:\n  name: mse\n  label_smoothing: 0.1"), 13, "loss.label_smoothing");
  check_spec_error(replace_line(kBase, 11, "loss:\n  name: hinge"), 12, "loss.name");
  check_spec_error(replace_line(kBase, 11, "loss:\n  label_smoothing: 0.1"), 11, "loss.name");
  check_spec_error(replace_line(kBase, 11, "loss:\n  name: mse\n  reduction: sum"), 13, "loss.reduction");
}

TEST_CASE("model as a mapping: path and batchnorm") {
  Spec s = parse_spec(replace_line(kBase, 1, "model:\n  path: m.pt\n  batchnorm: train"), "spec.yaml", "/jobs/a");
  CHECK(s.model == "/jobs/a/m.pt");
  CHECK(s.batchnorm_train);
  CHECK_FALSE(parse_spec(replace_line(kBase, 1, "model: {path: m.pt, batchnorm: eval}"), "spec.yaml", "/jobs/a").batchnorm_train);
  CHECK_FALSE(parse_spec(kBase, "spec.yaml", "/jobs/a").batchnorm_train);
  check_spec_error(replace_line(kBase, 1, "model:\n  path: m.pt\n  batchnorm: frozen"), 3, "model.batchnorm");
  check_spec_error(replace_line(kBase, 1, "model:\n  batchnorm: train"), 1, "model.path");
}

TEST_CASE("gpus and accumulation give the global batch; it must fit in the data") {
  Spec s = parse_spec(insert_after(kBase, 9, "  accumulation_steps: 2") + "hardware:\n  gpus: 2\n", "spec.yaml", "/jobs/a");
  CHECK(s.batch_size == 8);
  CHECK(s.accumulation_steps == 2);
  CHECK(s.gpus == 2);
  CHECK(s.global_batch() == 32);
  CHECK(ttpred::batch_text(s) == "8 x 2 gpus x 2 accumulation_steps = 32");
  CHECK(parse_spec(kBase + "hardware:\n  gpus: 0\n", "spec.yaml", "/jobs/a").global_batch() == 8);  // a CPU job
  // 8 x 3 x 3 = 72 > data.size 64.
  Caught c = parse_error(insert_after(kBase, 9, "  accumulation_steps: 3") + "hardware:\n  gpus: 3\n");
  REQUIRE(c.thrown);
  CHECK(has(c.msg, "optimizer.batch_size"));
  CHECK(has(c.msg, "= 72"));
}

TEST_CASE("optimizer.clip_grad_norm: torch.nn.utils.clip_grad_norm_'s max_norm, every optimizer") {
  Spec s = parse_spec(insert_after(kBase, 6, "  clip_grad_norm: 1.0"), "spec.yaml", "/jobs/a");
  CHECK(s.clip_grad_norm == 1.0);
  CHECK(ttpred::hyper_of_spec(s, 20).clip_norm == 1.0);
  CHECK(parse_spec(kBase, "spec.yaml", "/jobs/a").clip_grad_norm == 0);  // off
  Spec a = parse_spec(replace_line(replace_line(kBase, 8, "  name: adamw"), 7, "  lr: 0.001\n  clip_grad_norm: 0.5"),
                      "spec.yaml", "/jobs/a");
  CHECK(a.optimizer == ttpred::Optimizer::adamw);
  CHECK(a.clip_grad_norm == 0.5);
  for (const char* bad : {"0", "-1", ".inf", "abc"}) {
    CAPTURE(bad);
    check_spec_error(insert_after(kBase, 6, std::string("  clip_grad_norm: ") + bad), 7, "optimizer.clip_grad_norm");
  }
  Caught c = parse_error(insert_after(kBase, 6, "  clip_grad_norm: 0"));
  CHECK(has(c.msg, "must be > 0 (got 0"));
}
