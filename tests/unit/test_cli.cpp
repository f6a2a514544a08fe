// End-to-end tests of the real ttpred-estimate / ttpred-finetune binaries:
// the JSON contract of docs/json.md, the human table, usage errors and the
// documented exit codes with one-line error messages.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kModels = TEST_MODELS;
std::string M(const std::string& name) { return kModels + "/" + name; }

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

// Single-quote for /bin/sh.
std::string q(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "ttpred-test-cli-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    fs::path p = path / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
};

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs BIN ARGS... (each argument shell-quoted) under `timeout 300`, in `cwd`
// when given, capturing stdout, stderr and the exit code.
Result run(const std::string& bin, const std::vector<std::string>& args, const std::string& cwd = "") {
  static TempDir io;
  static int counter = 0;
  const fs::path out = io.path / ("out" + std::to_string(counter));
  const fs::path err = io.path / ("err" + std::to_string(counter++));
  std::string cmd;
  if (!cwd.empty()) cmd += "cd " + q(cwd) + " && ";
  cmd += "timeout 300 " + q(bin);
  for (const auto& a : args) cmd += " " + q(a);
  cmd += " </dev/null >" + q(out.string()) + " 2>" + q(err.string());
  const int st = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

Result estimate(const std::vector<std::string>& args, const std::string& cwd = "") {
  return run(ESTIMATE_BIN, args, cwd);
}

// An error: the documented exit code, one line on stderr, nothing on stdout.
void check_error(const Result& r, int code, const std::string& tool = "ttpred-estimate") {
  INFO("exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.code == code);
  CHECK(r.out.empty());
  auto ls = lines_of(r.err);
  CHECK(ls.size() == 1u);
  CHECK(r.err.rfind(tool + ": error: ", 0) == 0);
  CHECK(!r.err.empty());
  CHECK(r.err.back() == '\n');
  CHECK_FALSE(has(r.err, "terminate called"));
  CHECK_FALSE(has(r.err, "frame #"));
  CHECK_FALSE(has(r.err, "Exception raised from"));
}

// The small job: mlp.pt (C=3) on vec_train.pt (64 samples).
std::string small_spec(const std::string& model = M("mlp.pt"), const std::string& data = M("vec_train.pt"),
                       const std::string& extra_data = "", const std::string& opt_extra = "") {
  return "model: " + model + "\n" +
         "data:\n"
         "  path: " + data + "\n" + extra_data +
         "loss: cross_entropy\n"
         "optimizer:\n"
         "  lr: 0.1\n"
         "  momentum: 0.5\n"
         "  batch_size: 8\n" + opt_extra +
         "training:\n"
         "  steps: 20\n"
         "target:\n"
         "  epsilon: 0.01\n"
         "engine:\n"
         "  runs: 2\n"
         "hardware:\n"
         "  step_seconds: 0.01\n";
}

bool finite_number(const json& v) { return v.is_number() && std::isfinite(v.get<double>()); }

}  // namespace

TEST_CASE("estimate --json on the embedded default: every field of docs/json.md") {
  Result r = estimate({"--json", "--quiet", "--subset", "200", "--runs", "4"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.empty());  // --quiet, and warnings go into the JSON
  json j;
  REQUIRE_NOTHROW(j = json::parse(r.out));  // one JSON object, nothing else on stdout
  REQUIRE(j.is_object());

  for (const char* k : {"schema", "ttpred_version", "spec", "device", "model", "data", "loss", "optimizer", "target",
                        "steps", "reached", "steps_band", "epochs", "steps_per_epoch", "horizon_steps",
                        "initial_loss", "final_loss", "final_loss_band", "final_accuracy", "step_seconds",
                        "step_seconds_source", "seconds", "seconds_band", "horizon_seconds", "horizon_seconds_band",
                        "curve", "curve_band", "accuracy_curve", "gram", "timing", "warnings"}) {
    INFO("field " << k);
    CHECK(j.contains(k));
  }
  CHECK(j["schema"] == 1);
  CHECK(j["ttpred_version"].is_string());
  CHECK_FALSE(j["ttpred_version"].get<std::string>().empty());
  CHECK(j["spec"].is_string());
  CHECK(fs::path(j["spec"].get<std::string>()).is_absolute());
  CHECK(fs::equivalent(j["spec"].get<std::string>(), DEFAULT_SPEC));
  CHECK(j["device"] == "cpu");

  const json& model = j["model"];
  REQUIRE(model.is_object());
  CHECK(model["path"].is_string());
  CHECK(fs::exists(model["path"].get<std::string>()));
  CHECK(model["parameters"].get<int64_t>() > 0);
  CHECK(model["classes"] == 5);

  const json& data = j["data"];
  REQUIRE(data.is_object());
  CHECK(has(data["source"].get<std::string>(), "train-images"));
  CHECK(data["size"] == 2000);
  CHECK(data["available"].get<int64_t>() >= 2000);
  CHECK(data["subset"] == 200);

  CHECK(j["loss"] == "cross_entropy");
  const json& o = j["optimizer"];
  CHECK(o["lr"].get<double>() == doctest::Approx(0.01));
  CHECK(o["momentum"].get<double>() == doctest::Approx(0.9));
  CHECK(o["weight_decay"].get<double>() == 0.0);
  CHECK(o["batch_size"] == 32);
  CHECK(j["target"]["kind"] == "epsilon");
  CHECK(j["target"]["value"].get<double>() == doctest::Approx(0.02));

  const int64_t steps = j["steps"].get<int64_t>();
  const int64_t horizon = j["horizon_steps"].get<int64_t>();
  const int64_t per_epoch = j["steps_per_epoch"].get<int64_t>();
  CHECK(per_epoch == 2000 / 32);
  CHECK(horizon == 372);  // ceil(6 epochs * 62)
  CHECK(steps >= 0);
  CHECK(steps <= horizon);
  CHECK(j["reached"].is_boolean());
  REQUIRE(j["steps_band"].is_array());
  REQUIRE(j["steps_band"].size() == 2u);
  const int64_t lo = j["steps_band"][0].get<int64_t>(), hi = j["steps_band"][1].get<int64_t>();
  CHECK(lo <= steps);
  CHECK(steps <= hi);
  CHECK(lo >= 0);
  CHECK(hi <= horizon);
  CHECK(j["epochs"].get<double>() == doctest::Approx(double(steps) / double(per_epoch)));

  const double l0 = j["initial_loss"].get<double>(), lT = j["final_loss"].get<double>();
  CHECK(std::isfinite(l0));
  CHECK(std::isfinite(lT));
  CHECK(lT < l0);
  CHECK(lT > 0);
  REQUIRE(j["final_loss_band"].size() == 2u);
  CHECK(j["final_loss_band"][0].get<double>() <= j["final_loss_band"][1].get<double>());
  const double acc = j["final_accuracy"].get<double>();
  CHECK(acc >= 0);
  CHECK(acc <= 1);

  const double step_s = j["step_seconds"].get<double>();
  CHECK(step_s > 0);
  CHECK(j["step_seconds_source"] == "measured");
  CHECK(j["seconds"].get<double>() == doctest::Approx(double(steps) * step_s));
  REQUIRE(j["seconds_band"].size() == 2u);
  CHECK(j["seconds_band"][0].get<double>() <= j["seconds_band"][1].get<double>());
  CHECK(j["horizon_seconds"].get<double>() == doctest::Approx(double(horizon) * step_s));
  REQUIRE(j["horizon_seconds_band"].size() == 2u);
  CHECK(j["horizon_seconds_band"][0].get<double>() <= j["horizon_seconds_band"][1].get<double>());

  const json& curve = j["curve"];
  REQUIRE(curve.is_array());
  REQUIRE(curve.size() >= 2u);
  CHECK(curve.size() <= 201u);
  CHECK(curve.front()[0] == 0);
  CHECK(curve.back()[0] == horizon);
  CHECK(curve.front()[1].get<double>() == doctest::Approx(l0));
  CHECK(curve.back()[1].get<double>() == doctest::Approx(lT));
  int64_t prev = -1;
  bool all_ok = true;
  for (const auto& p : curve) {
    all_ok &= p.is_array() && p.size() == 2 && p[0].get<int64_t>() > prev && finite_number(p[1]) &&
              p[1].get<double>() > 0;
    prev = p[0].get<int64_t>();
  }
  CHECK(all_ok);
  const json& band = j["curve_band"];
  REQUIRE(band.size() == curve.size());
  bool band_ok = true;
  for (size_t i = 0; i < band.size(); ++i)
    band_ok &= band[i].size() == 3 && band[i][0] == curve[i][0] && finite_number(band[i][1]) &&
               finite_number(band[i][2]) && band[i][1].get<double>() <= band[i][2].get<double>();
  CHECK(band_ok);
  const json& ac = j["accuracy_curve"];
  REQUIRE(ac.size() == curve.size());
  bool acc_ok = true;
  for (size_t i = 0; i < ac.size(); ++i)
    acc_ok &= ac[i][0] == curve[i][0] && ac[i][1].get<double>() >= 0 && ac[i][1].get<double>() <= 1;
  CHECK(acc_ok);

  const json& g = j["gram"];
  CHECK((g["method"] == "exact" || g["method"] == "countsketch"));
  CHECK(g["rows"] == 200 * 5);
  if (g["method"] == "exact") CHECK(g["dim"].is_null());
  else CHECK(g["dim"].get<int64_t>() > 0);

  const json& t = j["timing"];
  for (const char* k : {"load", "jacobian", "gram", "simulate", "calibrate", "total"}) {
    INFO("timing." << k);
    REQUIRE(t.contains(k));
    CHECK(t[k].get<double>() >= 0);
  }
  CHECK(t["total"].get<double>() >= t["simulate"].get<double>());
  REQUIRE(j["warnings"].is_array());
  for (const auto& w : j["warnings"]) CHECK(w.is_string());

  // N0 = 200 of N = 2000: Θ is extrapolated to N, with its self-check (N0/4 = 50 < 2B = 64,
  // so from N0/2 = 100).
  CHECK(j["extrapolated"] == true);
  REQUIRE(j["extrapolation"].is_object());
  CHECK(j["extrapolation"]["shared_modes"].get<double>() > 0);
  CHECK(j["extrapolation"]["band_width"].get<double>() >= 0);
  CHECK(j["extrapolation"]["check"]["from"] == 100);
  CHECK(j["extrapolation"]["check"]["to"] == 200);
  CHECK(j["timing"].contains("extrapolate"));
  for (const auto& w : j["warnings"]) CHECK_FALSE(has(w.get<std::string>(), "not extrapolated"));
  // --no-extrapolate: the prediction for the 200 samples themselves, with a warning.
  Result off = estimate({"--json", "--quiet", "--subset", "200", "--runs", "4", "--no-extrapolate"});
  REQUIRE(off.code == 0);
  json k = json::parse(off.out);
  CHECK(k["extrapolated"] == false);
  CHECK_FALSE(k.contains("extrapolation"));
  bool warned = false;
  for (const auto& w : k["warnings"]) warned |= has(w.get<std::string>(), "not extrapolated");
  CHECK(warned);
}

TEST_CASE("estimate: the human table") {
  Result r = estimate({"--quiet", "--subset", "200", "--runs", "4", "--step-seconds", "0.01"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  bool steps = false, wall = false;
  for (const auto& l : lines_of(r.out)) {
    steps |= l.rfind("  steps ", 0) == 0;
    wall |= l.rfind("  wall-clock ", 0) == 0;
  }
  CHECK(steps);
  CHECK(wall);
  CHECK(has(r.out, "372 steps"));  // the horizon
  CHECK_FALSE(has(r.out, "{"));    // not JSON
  // Warnings (N0 < N here) go to stderr as "ttpred-estimate: warning: ..." lines.
  for (const auto& l : lines_of(r.err)) CHECK(l.rfind("ttpred-estimate: warning: ", 0) == 0);
}

TEST_CASE("estimate: command line") {
  Result h = estimate({"--help"});
  CHECK(h.code == 0);
  CHECK(has(h.out, "--spec"));
  CHECK(has(h.out, "--json"));
  Result v = estimate({"--version"});
  CHECK(v.code == 0);

  check_error(estimate({"--no-such-option"}), 2);
  check_error(estimate({"--lr", "-1"}), 2);
  check_error(estimate({"--lr", "fast"}), 2);
  check_error(estimate({"--device", "tpu"}), 2);
  check_error(estimate({"--steps", "10", "--epochs", "2"}), 2);
  check_error(estimate({"--subset", "0"}), 2);
  Result u = estimate({"--no-such-option"});
  CHECK(has(u.err, "--no-such-option"));
}

TEST_CASE("command-line conventions: ranges, missing values, -V, each tool's own options, outputs") {
  Result z = estimate({"--lr", "0"});
  check_error(z, 2);
  CHECK(has(z.err, "--lr: must be > 0 (got 0)"));
  CHECK(z.err.size() < 200);  // no 300-digit limit
  CHECK(has(estimate({"--lr", "abc"}).err, "--lr: must be a number > 0 (got 'abc')"));
  CHECK(has(estimate({"--batch-size", "0"}).err, "--batch-size: must be > 0 (got 0)"));
  CHECK(has(estimate({"--batch-size", "2.5"}).err, "--batch-size: must be an integer > 0 (got '2.5')"));
  CHECK(has(estimate({"--momentum", "1"}).err, "--momentum: must be in [0, 1) (got 1)"));
  Result tp = estimate({"--tail-parts", "5"});
  check_error(tp, 2);
  CHECK(has(tp.err, "--tail-parts: must be in [1, 4] (got 5)"));
  Result pr = estimate({"--prefix-runs", "0"});
  check_error(pr, 2);
  CHECK(has(pr.err, "--prefix-runs: must be in [1, 4] (got 0)"));
  Result rf = estimate({"--relinearize-fraction", "0"});
  check_error(rf, 2);
  CHECK(has(rf.err, "--relinearize-fraction: must be in (0, 1] (got 0)"));
  Result ts = estimate({"--tail-subset", "random"});
  check_error(ts, 2);
  CHECK(has(ts.err, "--tail-subset: random not in {stratified,tracked}"));
  // ttpred-finetune's own ranges (--stop-after, --log-from): one line, exit 2.
  Result sa = run(FINETUNE_BIN, {"--stop-after", "0"});
  check_error(sa, 2, "ttpred-finetune");
  CHECK(has(sa.err, "--stop-after: must be in [1, 1e+12] (got 0)"));
  Result lf = run(FINETUNE_BIN, {"--log-from", "-1"});
  check_error(lf, 2, "ttpred-finetune");
  CHECK(has(lf.err, "--log-from: must be in [0, 1e+12] (got -1)"));
  Result m = estimate({"--spec", "-q"});
  check_error(m, 2);
  CHECK(has(m.err, "--spec: missing value (got the option '-q')"));
  for (const char* flag : {"-V", "--version"}) {
    Result v = estimate({flag});
    CHECK(v.code == 0);
    CHECK(has(v.out, TTPRED_VERSION));
    CHECK(run(FINETUNE_BIN, {flag}).code == 0);
  }
  Result fh = run(FINETUNE_BIN, {"--help"});
  CHECK(fh.code == 0);
  CHECK(has(fh.out, "--lr"));
  CHECK(has(fh.out, "--log-every"));
  for (const char* est : {"--runs", "--trace-ntk", "--no-training", "--subset", "--projection", "--step-seconds"}) {
    INFO(est);
    CHECK_FALSE(has(fh.out, est));
  }
  Result fr = run(FINETUNE_BIN, {"--runs", "5", "--trace-ntk", "3", "--no-training"});
  check_error(fr, 2, "ttpred-finetune");
  CHECK(has(fr.err, "unknown option '--runs'"));  // the first one, as typed
  Result extra = estimate({"--json", "stray"});
  check_error(extra, 2);
  CHECK(has(extra.err, "unexpected argument 'stray'"));
  // An output that cannot be written fails before the work.
  Result p = estimate({"--plot", "/nonexistent-dir/curves.svg", "--json"});
  check_error(p, 4);
  CHECK(has(p.err, "--plot /nonexistent-dir/curves.svg: cannot write there (no such directory)"));
}

TEST_CASE("estimate: the small job runs, and overrides apply") {
  TempDir t;
  const std::string spec = t.write("spec.yaml", small_spec());
  Result r = estimate({"--spec", spec, "--json"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  json j = json::parse(r.out);
  CHECK(j["model"]["classes"] == 3);
  CHECK(j["data"]["size"] == 64);
  CHECK(j["horizon_steps"] == 20);
  CHECK(j["steps_per_epoch"] == 8);
  CHECK(j["step_seconds_source"] == "spec");
  CHECK(j["step_seconds"].get<double>() == doctest::Approx(0.01));
  CHECK(j["steps"].get<int64_t>() <= 20);
  CHECK(j["curve"].back()[0] == 20);

  Result o = estimate({"--spec", spec, "--json", "--steps", "30", "--lr", "0.05", "--target-loss", "0.5"});
  INFO("stderr: " << o.err);
  REQUIRE(o.code == 0);
  json k = json::parse(o.out);
  CHECK(k["horizon_steps"] == 30);
  CHECK(k["optimizer"]["lr"].get<double>() == doctest::Approx(0.05));
  CHECK(k["target"]["kind"] == "loss");
  if (!k["reached"].get<bool>()) CHECK(k["steps"] == 30);

  // An override that breaks the spec is a spec error naming the key.
  Result b = estimate({"--spec", spec, "--batch-size", "100", "--size", "64"});
  check_error(b, 3);
  CHECK(has(b.err, "optimizer.batch_size"));
}

// Progress is for people: on a TTY (script(1) gives the tool one) each phase shows on one
// redrawn stderr line, cleared before the output; never with --quiet or without a TTY.
TEST_CASE("estimate: progress on stderr on a TTY only, cleared before the result") {
  if (std::system("script -q -e -c true /dev/null >/dev/null 2>&1") != 0) {
    MESSAGE("script(1) (bsdutils) or a pseudo-terminal is missing: skipped");
    return;
  }
  TempDir t;
  const std::string spec = t.write("spec.yaml", small_spec());
  auto on_tty = [&](const std::string& extra) {
    const std::string cmd = "timeout 300 " + q(ESTIMATE_BIN) + " --spec " + q(spec) + " --json" + extra + " >" +
                            q((t.path / "out.json").string());
    Result r = run("script", {"-q", "-e", "-c", cmd, (t.path / "typescript").string()});
    r.err = read_file(t.path / "typescript");  // what the TTY showed: stderr only (stdout goes to out.json)
    r.out = read_file(t.path / "out.json");
    return r;
  };
  Result r = on_tty("");
  INFO("tty: " << r.err);
  REQUIRE(r.code == 0);
  for (const char* phase : {"load", "jacobian", "sgd steps", "simulate"})
    CHECK(has(r.err, std::string("\rttpred-estimate: ") + phase));
  CHECK(has(r.err, "% ("));
  CHECK(has(r.err, "\r\033[K"));  // the line is cleared at the end
  CHECK(json::parse(r.out)["steps"].is_number());
  Result quiet = on_tty(" --quiet");
  REQUIRE(quiet.code == 0);
  CHECK_FALSE(has(quiet.err, "jacobian"));
  Result plain = estimate({"--spec", spec, "--json"});  // stderr is a file
  REQUIRE(plain.code == 0);
  CHECK_FALSE(has(plain.err, "jacobian"));
}

// Regression (fixed): docs/json.md says `spec` is the absolute path of the spec file, but
// load_spec() (core/src/spec.cpp) keeps the path as typed in Spec::file, and
// to_json() (core/src/report.cpp) prints it as is: `--spec spec.yaml` gives "spec.yaml".
TEST_CASE("estimate --json: spec is an absolute path with a relative --spec") {
  TempDir t;
  t.write("spec.yaml", small_spec());
  Result r = estimate({"--spec", "spec.yaml", "--json"}, t.path.string());
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  json j = json::parse(r.out);
  CHECK(fs::path(j["spec"].get<std::string>()).is_absolute());
}

TEST_CASE("estimate: bad inputs give the documented exit codes and one line") {
  TempDir t;
  SUBCASE("missing spec file -> 4") {
    const std::string p = (t.path / "nope.yaml").string();
    Result r = estimate({"--spec", p, "--json"});
    check_error(r, 4);
    CHECK(has(r.err, p));
  }
  SUBCASE("spec is a directory -> 4") { check_error(estimate({"--spec", t.path.string()}), 4); }
  SUBCASE("malformed YAML -> 3 with FILE:LINE") {
    std::string y = small_spec();
    y.replace(y.find("  lr: 0.1"), 9, "  lr: 0.1: 2");  // line 6
    const std::string p = t.write("bad.yaml", y);
    Result r = estimate({"--spec", p, "--json"});
    check_error(r, 3);
    CHECK(has(r.err, p + ":6:"));
  }
  SUBCASE("unknown key -> 3") {
    std::string y = small_spec();
    y.replace(y.find("  lr: 0.1"), 9, "  lrr: 0.1");  // line 6
    const std::string p = t.write("unknown.yaml", y);
    Result r = estimate({"--spec", p, "--json"});
    check_error(r, 3);
    CHECK(has(r.err, p + ":6: optimizer.lrr"));
  }
  SUBCASE("model file missing -> 4") {
    const std::string model = (t.path / "missing.pt").string();
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(model)), "--json"});
    check_error(r, 4);
    CHECK(has(r.err, model));
  }
  SUBCASE("model that is not TorchScript -> 4") {
    const std::string model = t.write("text.pt", "this is not a model\n");
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(model)), "--json"});
    check_error(r, 4);
    CHECK(has(r.err, "text.pt"));
  }
  SUBCASE("data file that is a model -> 4") {
    check_error(estimate({"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), M("mlp.pt"))), "--json"}), 4);
  }
  SUBCASE("data file missing y -> 4") {
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), M("missing_y.pt"))), "--json"});
    check_error(r, 4);
    CHECK(has(r.err, "\"y\""));
  }
  SUBCASE("output not [B, C] -> 5") {
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(M("bad_output.pt"))), "--json"});
    check_error(r, 5);
    CHECK(has(r.err, "bad_output.pt"));
  }
  SUBCASE("label out of range -> 5") {
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), M("bad_labels.pt"))), "--json"});
    check_error(r, 5);
    CHECK(has(r.err, "label"));
    CHECK(has(r.err, "7"));
  }
  SUBCASE("NaN in the data -> 5") {
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), M("nan_data.pt"))), "--json"});
    check_error(r, 5);
    CHECK(has(r.err, "nan_data.pt"));
  }
  SUBCASE("model that cannot run on the data's sample shape -> 5") {
    std::string y = small_spec(M("cnn_small.pt"), M("vec_mse.pt"));
    y.replace(y.find("loss: cross_entropy"), 19, "loss: mse");
    check_error(estimate({"--spec", t.write("s.yaml", y), "--json"}), 5);
  }
  SUBCASE("a directory that is no ImageFolder -> 4, not an internal error") {
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), t.path.string())), "--json"});
    check_error(r, 4);
    CHECK(has(r.err, "is a directory without class folders of .png/.jpg images"));
  }
  SUBCASE("an unknown data extension -> 4") {
    Result r = estimate({"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), t.write("d.h5", "x"))), "--json"});
    check_error(r, 4);
    CHECK(has(r.err, "d.h5: unknown data format '.h5'"));
  }
  SUBCASE("subset > size -> 3") {
    Result r =
        estimate({"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), M("vec_train.pt"), "  size: 32\n  subset: 40\n")),
                  "--json"});
    check_error(r, 3);
    CHECK(has(r.err, "data.subset"));
  }
  SUBCASE("subset > samples in the file -> 3") {
    Result r = estimate(
        {"--spec", t.write("s.yaml", small_spec(M("mlp.pt"), M("vec_train.pt"), "  subset: 100\n")), "--json"});
    check_error(r, 3);
    CHECK(has(r.err, "data.subset"));
  }
  SUBCASE("batch_size > size -> 3") {
    std::string y = small_spec(M("mlp.pt"), M("vec_train.pt"), "  size: 16\n");
    y.replace(y.find("batch_size: 8"), 13, "batch_size: 32");
    Result r = estimate({"--spec", t.write("s.yaml", y), "--json"});
    check_error(r, 3);
    CHECK(has(r.err, "optimizer.batch_size"));
  }
  SUBCASE("batch_size > samples in the file -> 3") {
    std::string y = small_spec();
    y.replace(y.find("batch_size: 8"), 13, "batch_size: 100");
    Result r = estimate({"--spec", t.write("s.yaml", y), "--json"});
    check_error(r, 3);
    CHECK(has(r.err, "optimizer.batch_size"));
  }
  SUBCASE("--device cuda on a CPU-only machine -> 6") {
    // Skip where a GPU is usable: then cuda is not an error.
    if (std::system("nvidia-smi -L >/dev/null 2>&1") == 0) return;
    Result r = estimate({"--spec", t.write("s.yaml", small_spec()), "--json", "--device", "cuda"});
    check_error(r, 6);
    CHECK(has(r.err, "cuda"));
  }
}

TEST_CASE("finetune --json on the small job") {
  TempDir t;
  const std::string spec = t.write("spec.yaml", small_spec());
  Result r = run(FINETUNE_BIN, {"--spec", spec, "--json", "--quiet", "--log-every", "5"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  json j;
  REQUIRE_NOTHROW(j = json::parse(r.out));
  const int64_t horizon = j["horizon_steps"].get<int64_t>();
  CHECK(horizon == 20);
  CHECK(j["log_every"] == 5);
  CHECK(j["data"]["size"] == 64);
  CHECK(j["data"]["available"] == 64);
  CHECK(j["data"]["draw"] == "stratified");
  CHECK(j["steps_per_epoch"] == 8);
  CHECK(j["steps"].get<int64_t>() >= 0);
  CHECK(j["steps"].get<int64_t>() <= horizon);
  const json& curve = j["curve"];
  REQUIRE(curve.is_array());
  CHECK(curve.size() == size_t(horizon / 5 + 1));
  CHECK(curve.front()[0] == 0);
  CHECK(curve.back()[0] == horizon);
  bool ok = true;
  for (const auto& p : curve) ok &= finite_number(p[1]) && p[1].get<double>() > 0;
  CHECK(ok);
  CHECK(curve.back()[1].get<double>() < curve.front()[1].get<double>());
  CHECK(j["final_loss"].get<double>() == doctest::Approx(curve.back()[1].get<double>()));
  CHECK(j["accuracy_curve"].size() == curve.size());
  CHECK(j["runs"].size() == 1u);
  CHECK(j["steps_trained"] == horizon);

  // --stop-after S --log-from A: the first S steps only (the horizon stays the
  // schedule's), logged at 0 and every K from A; the same run up to S.
  Result part = run(FINETUNE_BIN, {"--spec", spec, "--json", "--quiet", "--log-every", "2", "--log-from", "5",
                                   "--stop-after", "9"});
  INFO("stderr: " << part.err);
  REQUIRE(part.code == 0);
  const json jp = json::parse(part.out);
  CHECK(jp["horizon_steps"] == horizon);
  CHECK(jp["steps_trained"] == 9);
  CHECK(jp["log_from"] == 5);
  std::vector<int64_t> logged;
  for (const auto& q : jp["curve"]) logged.push_back(q[0].get<int64_t>());
  CHECK(logged == std::vector<int64_t>{0, 5, 7, 9});
  CHECK(jp["curve"][1][1].get<double>() == doctest::Approx(curve[1][1].get<double>()).epsilon(1e-9));  // step 5

  // Its errors follow the same rules.
  check_error(run(FINETUNE_BIN, {"--spec", (t.path / "nope.yaml").string()}), 4, "ttpred-finetune");
  check_error(run(FINETUNE_BIN, {"--spec", t.write("nan.yaml", small_spec(M("mlp.pt"), M("nan_data.pt")))}), 5,
              "ttpred-finetune");
}

TEST_CASE("estimate: a sweep as table, CSV, JSON and SVG plot; its errors") {
  TempDir t;
  const std::string spec =
      t.write("sweep.yaml", small_spec() + "sweep:\n  lr: [0.05, 0.1]\n  batch_size: [8, 16]\n");
  Result table = estimate({"--spec", spec, "--quiet", "--diagnose-steps", "0"});
  INFO("stderr: " << table.err);
  REQUIRE(table.code == 0);
  CHECK(has(table.out, "sweep of 4 configurations"));
  CHECK(has(table.out, "GPU-h"));

  Result csv = estimate({"--spec", spec, "--quiet", "--csv", "--diagnose-steps", "0"});
  REQUIRE(csv.code == 0);
  auto rows = lines_of(csv.out);
  REQUIRE(rows.size() == 5u);
  CHECK(rows[0].rfind("lr,batch_size,", 0) == 0);

  const std::string svg = (fs::path(t.path) / "curves.svg").string();
  Result js = estimate({"--spec", spec, "--quiet", "--json", "--plot", svg, "--diagnose-steps", "0"});
  REQUIRE(js.code == 0);
  json j = json::parse(js.out);
  REQUIRE(j["runs"].size() == 4);
  CHECK(j["runs"][0]["lr"].get<double>() == doctest::Approx(0.05));
  CHECK(j["runs"][1]["batch_size"] == 16);
  CHECK(finite_number(j["total_gpu_hours"]));
  CHECK(read_file(svg).rfind("<svg", 0) == 0);

  // Errors: --csv without a sweep, an unwritable plot, a bad sweep value (its line).
  check_error(estimate({"--spec", t.write("one.yaml", small_spec()), "--csv"}), 2);
  check_error(estimate({"--spec", spec, "--plot", "/nonexistent-dir/x.svg", "--diagnose-steps", "0"}), 4);
  Result bad = estimate({"--spec", t.write("bad.yaml", small_spec() + "sweep:\n  lr: [0.1, -1]\n")});
  check_error(bad, 3);
  CHECK(has(bad.err, "bad.yaml:18:"));
}

TEST_CASE("estimate from an ImageFolder, an .npz and a CSV made in the test, without conversion code") {
  TempDir t;
  const std::string cmd = std::string(TTPRED_PYTHON) + " " + TEST_SOURCE_DIR + "/unit/make_data_files.py " +
                          t.path.string();
  REQUIRE(std::system(cmd.c_str()) == 0);
  auto run_json = [&](const std::string& name, const std::string& yaml) {
    Result r = estimate({"--spec", t.write(name, yaml), "--json", "--quiet"});
    INFO(name << ": exit " << r.code << " stderr: " << r.err);
    REQUIRE(r.code == 0);
    return json::parse(r.out);
  };
  // cnn_small.pt takes [B, 1, 8, 8]: 8 RGB PNG/JPEG of two sizes, to gray 8x8.
  json img = run_json("folder.yaml", small_spec(M("cnn_small.pt"), (t.path / "folder").string(),
                                                "  channels: 1\n  resize: 8\n"));
  CHECK(img["data"]["available"] == 8);
  CHECK(img["data"]["size"] == 8);
  CHECK(img["steps"].get<int64_t>() > 0);
  // mlp.pt takes [B, 8]: the same 64 samples as .npz and as CSV give the same prediction.
  json npz = run_json("npz.yaml", small_spec(M("mlp.pt"), (t.path / "vec.npz").string()));
  json csv = run_json("csv.yaml", small_spec(M("mlp.pt"), (t.path / "vec.csv").string()));
  CHECK(npz["data"]["available"] == 64);
  CHECK(csv["data"]["available"] == 64);
  CHECK(npz["steps"].get<int64_t>() > 0);
  CHECK(npz["steps"] == csv["steps"]);
  CHECK(npz["final_loss"].get<double>() == doctest::Approx(csv["final_loss"].get<double>()).epsilon(1e-9));
  // A model that cannot take the data: the shape and the reason, one line.
  Result bad = estimate({"--spec", t.write("bad.yaml", small_spec(M("mlp.pt"), (t.path / "folder").string(),
                                                                   "  resize: [8, 5]\n")),
                         "--json"});
  check_error(bad, 5);
  CHECK(has(bad.err, "forward failed on an input of shape [2, 3, 8, 5]: "));
  CHECK(has(bad.err, "mat1 and mat2 shapes cannot be multiplied"));
  CHECK_FALSE(has(bad.err, "The following operation failed"));
}

TEST_CASE("finetune and estimate: the issue's AdamW form, label smoothing, accumulation; train-mode BatchNorm") {
  TempDir t;
  const std::string adamw =
      "model: " + M("mlp.pt") + "\ndata:\n  path: " + M("vec_train.pt") +
      "\nloss: {name: cross_entropy, label_smoothing: 0.1}\n"
      "optimizer:\n  name: adamw\n  lr: 0.001\n  betas: [0.9, 0.999]\n  eps: 1.0e-8\n  weight_decay: 0.01\n"
      "  batch_size: 4\n  accumulation_steps: 2\n"
      "training:\n  steps: 16\nengine:\n  runs: 2\nhardware:\n  gpus: 2\n  step_seconds: 0.01\n";
  const std::string spec = t.write("adamw.yaml", adamw);
  Result f = run(FINETUNE_BIN, {"--spec", spec, "--json", "--quiet"});
  INFO("stderr: " << f.err);
  REQUIRE(f.code == 0);
  json j = json::parse(f.out);
  CHECK(j["optimizer"] == "adamw");
  CHECK(j["global_batch"] == 16);
  CHECK(j["steps_per_epoch"] == 4);
  Result e = estimate({"--spec", spec, "--json", "--quiet"});
  INFO("stderr: " << e.err);
  REQUIRE(e.code == 0);
  json k = json::parse(e.out);
  CHECK(k["optimizer"]["name"] == "adamw");
  CHECK(k["optimizer"]["global_batch"] == 16);
  CHECK(k["steps_per_epoch"] == 4);
  CHECK(k["label_smoothing"].get<double>() == 0.1);
  // Train-mode BatchNorm with AdamW: the ground truth runs it, the estimator predicts it
  // (its real prefix runs train mode) and refuses it without one (exit 3: only a real
  // prefix sees train mode).
  std::string bn = adamw;
  bn.replace(bn.find("model: "), 7, "model:\n  batchnorm: train\n  path: ");
  const std::string bn_spec = t.write("bn.yaml", bn);
  CHECK(run(FINETUNE_BIN, {"--spec", bn_spec, "--json", "--quiet"}).code == 0);
  Result ok = estimate({"--spec", bn_spec, "--json", "--quiet"});
  CHECK(ok.code == 0);
  CHECK(has(ok.out, "\"batchnorm\": \"train\""));
  Result r = estimate({"--spec", bn_spec, "--json", "--quiet", "--no-training"});
  check_error(r, 3);
  CHECK(has(r.err, "model.batchnorm"));
  // Errors name the key.
  std::string bad = adamw;
  bad.replace(bad.find("[0.9, 0.999]"), 12, "[0.9, 1.5]");
  Result b = run(FINETUNE_BIN, {"--spec", t.write("bad.yaml", bad)});
  check_error(b, 3, "ttpred-finetune");
  CHECK(has(b.err, "optimizer.betas: must be two numbers in [0, 1)"));
}

// ttpred-estimate is a front without LibTorch that answers cache hits itself and execs
// ttpred-estimate-engine otherwise: next to it (build tree) or in ../libexec/ttpred (installed).
TEST_CASE("estimate: the front finds its engine where it is installed, and a cache hit needs no engine") {
  TempDir t;
  const std::string spec = t.write("spec.yaml", small_spec());
  const fs::path engine = fs::path(ESTIMATE_BIN).parent_path() / "ttpred-estimate-engine";
  REQUIRE(fs::exists(engine));
  // The installed layout: PREFIX/bin/ttpred-estimate, PREFIX/libexec/ttpred/ttpred-estimate-engine.
  fs::create_directories(t.path / "prefix" / "bin");
  fs::create_directories(t.path / "prefix" / "libexec" / "ttpred");
  const fs::path front = t.path / "prefix" / "bin" / "ttpred-estimate";
  fs::copy_file(ESTIMATE_BIN, front);
  fs::create_symlink(engine, t.path / "prefix" / "libexec" / "ttpred" / "ttpred-estimate-engine");
  const std::string dir = (t.path / "pred-cache").string();
  Result a = run(front.string(), {"--spec", spec, "--json", "--cache-dir", dir});
  INFO("stderr: " << a.err);
  REQUIRE(a.code == 0);
  CHECK_FALSE(json::parse(a.out).contains("cache_hit"));
  // Without any engine: the cached answer still comes, an uncached one is a one-line error.
  fs::remove(t.path / "prefix" / "libexec" / "ttpred" / "ttpred-estimate-engine");
  Result b = run(front.string(), {"--spec", spec, "--json", "--cache-dir", dir});
  REQUIRE(b.code == 0);
  CHECK(json::parse(b.out)["cache_hit"] == true);
  Result c = run(front.string(), {"--spec", spec, "--json", "--cache-dir", dir, "--steps", "30"});
  CHECK(c.code == 1);
  CHECK(c.out.empty());
  CHECK(lines_of(c.err).size() == 1u);
  CHECK(has(c.err, "ttpred-estimate: internal error: the prediction engine ttpred-estimate-engine is missing"));
  // Spec errors and --help come from the front alone, the same as from the engine.
  Result h = run(front.string(), {"--help"});
  CHECK(h.code == 0);
  CHECK(has(h.out, "--cache-dir"));
  const std::string bad = t.write("bad.yaml", small_spec() + "bogus: 1\n");
  Result e = run(front.string(), {"--spec", bad});
  check_error(e, 3);
  CHECK(e.err == run(engine.string(), {"--spec", bad}).err);
  // TTPRED_ENGINE names another engine.
  Result f = run("/usr/bin/env", {"TTPRED_ENGINE=" + engine.string(), front.string(), "--spec", spec, "--json",
                                  "--steps", "30"});
  CHECK(f.code == 0);
  CHECK(json::parse(f.out)["horizon_steps"] == 30);
}

TEST_CASE("estimate --cache-dir: a repeated prediction comes from the cache, a changed input does not") {
  TempDir t;
  const std::string spec = t.write("spec.yaml", small_spec());
  const std::string dir = (t.path / "pred-cache").string();
  Result a = estimate({"--spec", spec, "--json", "--cache-dir", dir});
  INFO("stderr: " << a.err);
  REQUIRE(a.code == 0);
  json ja = json::parse(a.out);
  CHECK_FALSE(ja.contains("cache_hit"));
  Result b = estimate({"--spec", spec, "--json", "--cache-dir", dir});
  REQUIRE(b.code == 0);
  json jb = json::parse(b.out);
  CHECK(jb["cache_hit"] == true);
  jb.erase("cache_hit");
  CHECK(jb == ja);  // the whole prediction, unchanged
  CHECK(has(b.err, "prediction from the cache"));
  // a different command-line value or spec byte is another prediction
  Result c = estimate({"--spec", spec, "--json", "--cache-dir", dir, "--steps", "30"});
  REQUIRE(c.code == 0);
  CHECK_FALSE(json::parse(c.out).contains("cache_hit"));
  const std::string spec2 = t.write("spec2.yaml", small_spec() + "# another byte\n");
  Result d = estimate({"--spec", spec2, "--json", "--cache-dir", dir});
  REQUIRE(d.code == 0);
  CHECK_FALSE(json::parse(d.out).contains("cache_hit"));
  // a torn entry is ignored and rewritten
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".pred") continue;
    ++entries;
    fs::resize_file(e.path(), fs::file_size(e.path()) / 2);
  }
  CHECK(entries == 3);
  Result e = estimate({"--spec", spec, "--json", "--cache-dir", dir});
  REQUIRE(e.code == 0);
  CHECK_FALSE(json::parse(e.out).contains("cache_hit"));
  CHECK(json::parse(estimate({"--spec", spec, "--json", "--cache-dir", dir}).out)["cache_hit"] == true);
  // a directory others can write to is not used (they could plant entries)
  const fs::path shared = t.path / "shared";
  fs::create_directory(shared);
  fs::permissions(shared, fs::perms::all);
  Result s = estimate({"--spec", spec, "--json", "--cache-dir", shared.string()});
  REQUIRE(s.code == 0);
  CHECK(has(s.err, "cannot write the prediction cache"));
  CHECK(fs::is_empty(shared));
}
