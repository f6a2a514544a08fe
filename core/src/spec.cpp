#include "ttpred/spec.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "ttpred/error.hpp"

namespace fs = std::filesystem;

namespace ttpred {

const char* to_string(Loss l) { return l == Loss::mse ? "mse" : "cross_entropy"; }
const char* to_string(Optimizer o) {
  return o == Optimizer::adam ? "adam" : o == Optimizer::adamw ? "adamw" : "sgd";
}
const char* to_string(TargetKind k) {
  switch (k) {
    case TargetKind::loss: return "loss";
    case TargetKind::accuracy: return "accuracy";
    default: return "epsilon";
  }
}

std::string Spec::resolve(const std::string& p) const {
  if (p.empty() || fs::path(p).is_absolute() || dir.empty()) return p;
  return (fs::path(dir) / p).lexically_normal().string();
}

int Spec::line_of(const std::string& key) const {
  auto it = lines.find(key);
  return it == lines.end() ? 0 : it->second;
}

void Spec::fail(const std::string& key, const std::string& message) const {
  throw Error(Exit::spec, located(file, line_of(key), key, message));
}

namespace {

// Reads one YAML mapping, remembering lines and refusing unknown keys.
class Reader {
 public:
  Reader(Spec& spec, const YAML::Node& node, std::string prefix)
      : spec_(spec), node_(node), prefix_(std::move(prefix)) {}

  void allow(std::initializer_list<const char*> keys) {
    std::set<std::string> ok(keys.begin(), keys.end()), seen;
    for (const auto& kv : node_) {
      std::string k = kv.first.Scalar();
      std::string full = prefix_ + k;
      spec_.lines[full] = kv.first.Mark().line + 1;
      if (!seen.insert(k).second) spec_.fail(full, "duplicate key");
      if (!ok.count(k)) {
        std::string list;
        for (const auto& a : keys) list += std::string(list.empty() ? "" : ", ") + a;
        spec_.fail(full, "unknown key (expected one of: " + list + ")");
      }
    }
  }

  bool has(const char* k) const { return node_[k].IsDefined() && !node_[k].IsNull(); }
  std::string key(const char* k) const { return prefix_ + k; }

  YAML::Node map(const char* k) const {
    YAML::Node n = node_[k];
    if (!n.IsMap()) spec_.fail(key(k), "must be a mapping");
    return n;
  }

  template <class T>
  T get(const char* k, const char* what) const {
    YAML::Node n = node_[k];
    if (!n.IsScalar()) spec_.fail(key(k), std::string("must be ") + what);
    try {
      return n.as<T>();
    } catch (const YAML::Exception&) {
      spec_.fail(key(k), std::string("must be ") + what + " (got '" + n.Scalar() + "')");
    }
  }
  double number(const char* k) const {
    double v = get<double>(k, "a number");
    if (!std::isfinite(v)) spec_.fail(key(k), "must be finite");
    return v;
  }
  int64_t integer(const char* k) const {
    YAML::Node n = node_[k];
    // yaml-cpp accepts "3.5" as int64 by truncation in some versions: check the text.
    if (n.IsScalar() && n.Scalar().find_first_of(".eE") != std::string::npos &&
        n.Scalar().rfind("0x", 0) != 0)
      spec_.fail(key(k), "must be an integer (got '" + n.Scalar() + "')");
    return get<int64_t>(k, "an integer");
  }
  int64_t integer_in(const char* k, int64_t lo, int64_t hi) const {
    int64_t v = integer(k);
    if (v < lo || v > hi)
      spec_.fail(key(k), "must be in " + std::to_string(lo) + ".." + std::to_string(hi) + " (got " +
                             std::to_string(v) + ")");
    return v;
  }
  std::string string(const char* k) const { return get<std::string>(k, "a string"); }

  Spec& spec_;
  YAML::Node node_;
  std::string prefix_;
};

}  // namespace

double Schedule::at(double lr, int64_t t, int64_t horizon) const {
  const double T = double(std::max<int64_t>(1, horizon));
  double v = lr;
  if (type == "step")
    v = lr * std::pow(gamma, double(t / std::max<int64_t>(1, step_size)));
  else if (type == "cosine")
    v = min_lr + (lr - min_lr) * (1 + std::cos(M_PI * double(t) / T)) / 2;
  else if (type == "linear")
    v = lr + (min_lr - lr) * double(t) / T;
  else if (type == "table" && !factors.empty())
    v = lr * factors[size_t(std::clamp<int64_t>(t, 0, int64_t(factors.size()) - 1))];
  if (t < warmup_steps) v *= double(t + 1) / double(warmup_steps);
  return v;
}

namespace {
// optimizer.schedule.factors: a non-empty list of finite numbers >= 0, one per step.
std::vector<double> schedule_factors(Spec& s, const YAML::Node& n) {
  constexpr size_t kMaxFactors = 10000000;
  const char* key = "optimizer.schedule.factors";
  if (!n.IsSequence() || n.size() == 0) s.fail(key, "must be a non-empty list of numbers (lr_t / lr, one per step)");
  if (n.size() > kMaxFactors) s.fail(key, "has " + std::to_string(n.size()) + " entries (at most 10000000)");
  std::vector<double> f;
  f.reserve(n.size());
  for (size_t i = 0; i < n.size(); ++i) {
    double v = 0;
    bool ok = n[i].IsScalar();
    try {
      if (ok) v = n[i].as<double>();
    } catch (const YAML::Exception&) {
      ok = false;
    }
    if (!ok || !std::isfinite(v) || v < 0)
      s.fail(key, "entry " + std::to_string(i) + " must be a finite number >= 0 (got '" +
                      (n[i].IsScalar() ? n[i].Scalar() : std::string("a list or map")) + "')");
    f.push_back(v);
  }
  return f;
}
}  // namespace

Spec parse_spec(const std::string& text, const std::string& file, const std::string& dir) {
  Spec s;
  s.file = file;
  s.dir = dir;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw Error(Exit::spec, located(file, e.mark.line + 1, "", "YAML syntax error: " + e.msg));
  }
  if (!root.IsMap()) throw Error(Exit::spec, located(file, 0, "", "the spec must be a YAML mapping"));

  Reader top(s, root, "");
  top.allow({"model", "data", "loss", "optimizer", "training", "target", "engine", "hardware", "sweep",
             "name", "description"});
  if (!top.has("model")) s.fail("model", "missing (path of a TorchScript model)");
  if (top.node_["model"].IsMap()) {
    Reader m(s, top.map("model"), "model.");
    m.allow({"path", "batchnorm"});
    if (!m.has("path")) s.lines["model.path"] = s.line_of("model"), s.fail("model.path", "missing (path of a TorchScript model)");
    s.model = s.resolve(m.string("path"));
    if (m.has("batchnorm")) {
      const std::string b = m.string("batchnorm");
      if (b != "eval" && b != "train") s.fail("model.batchnorm", "must be eval or train (got '" + b + "')");
      s.batchnorm_train = b == "train";
    }
  } else {
    s.model = s.resolve(top.string("model"));
  }
  if (!top.has("data")) s.fail("data", "missing");
  {
    Reader d(s, top.map("data"), "data.");
    d.allow({"path", "images", "labels", "label", "classes", "normalize", "size", "subset", "layout", "channels",
             "resize", "draw"});
    if (d.has("path")) s.data.path = s.resolve(d.string("path"));
    if (d.has("images")) s.data.images = s.resolve(d.string("images"));
    if (d.has("labels")) s.data.labels = s.resolve(d.string("labels"));
    if (d.has("label")) s.data.label = d.string("label");
    if (!s.data.path.empty() && !s.data.images.empty())
      s.fail("data", "give either 'path' (a data file or an ImageFolder directory) or 'images' and 'labels' (IDX files)");
    if (s.data.path.empty() && s.data.images.empty() && s.data.labels.empty())
      s.fail("data", "give either 'path' (a data file or an ImageFolder directory) or 'images' and 'labels' (IDX files)");
    if (!s.data.path.empty() && !s.data.labels.empty() && fs::path(s.data.path).extension() != ".npy")
      s.fail("data.labels", "goes with 'images' (IDX) or with an x .npy in 'path' (the y .npy); " + s.data.path +
                                " holds its own labels");
    if (s.data.path.empty() && (s.data.images.empty() || s.data.labels.empty()))
      s.fail(s.data.images.empty() ? "data.images" : "data.labels",
             "missing: IDX data needs both 'images' and 'labels'");
    if (d.has("classes")) {
      YAML::Node c = d.node_["classes"];
      if (!c.IsSequence() || c.size() == 0) s.fail("data.classes", "must be a non-empty list of class ids");
      std::set<int64_t> seen;
      for (const auto& v : c) {
        int64_t id;
        try {
          id = v.as<int64_t>();
        } catch (const YAML::Exception&) {
          s.fail("data.classes", "must be integers (got '" + v.Scalar() + "')");
        }
        if (id < 0 || !seen.insert(id).second)
          s.fail("data.classes", "class ids must be distinct and >= 0 (got " + std::to_string(id) + ")");
        s.data.classes.push_back(id);
      }
    }
    if (d.has("normalize")) {
      YAML::Node n = d.node_["normalize"];
      auto numbers = [&](YAML::Node list, std::vector<double>& out) {
        if (list.IsScalar()) list = YAML::Node(std::vector<YAML::Node>{list});
        if (!list.IsSequence() || list.size() == 0)
          s.fail("data.normalize", "must be [mean, std] or {mean: [..], std: [..]} (one value per channel)");
        for (const auto& v : list) {
          try {
            out.push_back(v.as<double>());
          } catch (const YAML::Exception&) {
            s.fail("data.normalize", "must be numbers (got '" + v.Scalar() + "')");
          }
        }
      };
      if (n.IsMap()) {
        Reader nr(s, n, "data.normalize.");
        nr.allow({"mean", "std"});
        if (!nr.has("mean") || !nr.has("std")) s.fail("data.normalize", "needs both mean and std");
        numbers(n["mean"], s.data.mean);
        numbers(n["std"], s.data.std);
        if (s.data.mean.size() != s.data.std.size())
          s.fail("data.normalize", "mean has " + std::to_string(s.data.mean.size()) + " values, std " +
                                       std::to_string(s.data.std.size()) + " (one per channel)");
      } else {
        if (!n.IsSequence() || n.size() != 2) s.fail("data.normalize", "must be [mean, std] or {mean: [..], std: [..]}");
        std::vector<double> two;
        numbers(n, two);
        s.data.mean = {two[0]};
        s.data.std = {two[1]};
      }
      for (size_t i = 0; i < s.data.mean.size(); ++i)
        if (!(s.data.std[i] > 0) || !std::isfinite(s.data.std[i]) || !std::isfinite(s.data.mean[i]))
          s.fail("data.normalize", "std must be > 0 and mean finite");
      s.data.normalize = true;
    }
    if (d.has("layout")) {
      s.data.layout = d.string("layout");
      if (s.data.layout != "auto" && s.data.layout != "nchw" && s.data.layout != "nhwc")
        s.fail("data.layout", "must be auto, nchw or nhwc (got '" + s.data.layout + "')");
    }
    if (d.has("channels")) {
      s.data.channels = d.integer("channels");
      if (s.data.channels != 1 && s.data.channels != 3)
        s.fail("data.channels", "must be 1 or 3 (got " + std::to_string(s.data.channels) + ")");
    }
    if (d.has("resize")) {
      YAML::Node r = d.node_["resize"];
      if (r.IsScalar()) {
        s.data.resize_h = s.data.resize_w = d.integer_in("resize", 1, 16384);
      } else if (r.IsSequence() && r.size() == 2) {
        try {
          s.data.resize_h = r[0].as<int64_t>();
          s.data.resize_w = r[1].as<int64_t>();
        } catch (const YAML::Exception&) {
          s.fail("data.resize", "must be an integer or [height, width]");
        }
        if (s.data.resize_h < 1 || s.data.resize_w < 1 || s.data.resize_h > 16384 || s.data.resize_w > 16384)
          s.fail("data.resize", "sizes must be in 1..16384");
      } else {
        s.fail("data.resize", "must be an integer or [height, width]");
      }
    }
    if (d.has("draw")) {
      const std::string v = d.string("draw");
      if (v != "stratified" && v != "first") s.fail("data.draw", "must be stratified or first (got '" + v + "')");
      s.data.draw_first = v == "first";
    }
    if (!s.data.label.empty() && !s.data.path.empty() && fs::path(s.data.path).extension() != ".csv")
      s.fail("data.label", "names the label column of a .csv file; data.path is not one");
    if (d.has("size")) s.data.size = d.integer("size");
    if (d.has("subset")) s.data.subset = d.integer("subset");
    if (d.has("size") && s.data.size <= 0) s.fail("data.size", "must be > 0");
    if (d.has("subset") && s.data.subset <= 0) s.fail("data.subset", "must be > 0");
  }
  if (top.has("loss")) {
    // `loss: NAME` or `loss: {name: NAME, label_smoothing: x}`.
    std::string l, at = "loss";
    if (top.node_["loss"].IsMap()) {
      Reader r(s, top.map("loss"), "loss.");
      r.allow({"name", "label_smoothing"});
      if (!r.has("name")) s.lines["loss.name"] = s.line_of("loss"), s.fail("loss.name", "missing (cross_entropy or mse)");
      l = r.string("name");
      at = "loss.name";
      if (r.has("label_smoothing")) s.label_smoothing = r.number("label_smoothing");
    } else {
      l = top.string("loss");
    }
    if (l == "cross_entropy" || l == "crossentropy" || l == "ce")
      s.loss = Loss::cross_entropy;
    else if (l == "mse")
      s.loss = Loss::mse;
    else
      s.fail(at, "must be cross_entropy or mse (got '" + l + "')");
  }
  if (!top.has("optimizer")) s.fail("optimizer", "missing (lr, batch_size, momentum, weight_decay)");
  {
    Reader o(s, top.map("optimizer"), "optimizer.");
    o.allow({"name", "type", "lr", "momentum", "nesterov", "betas", "eps", "batch_size", "accumulation_steps",
             "weight_decay", "schedule", "clip_grad_norm"});
    if (o.has("schedule")) {
      Reader sc(s, o.map("schedule"), "optimizer.schedule.");
      sc.allow({"type", "warmup_steps", "step_size", "gamma", "min_lr", "factors"});
      if (sc.has("type")) s.schedule.type = sc.string("type");
      if (s.schedule.type != "constant" && s.schedule.type != "step" && s.schedule.type != "cosine" &&
          s.schedule.type != "linear" && s.schedule.type != "table")
        s.fail("optimizer.schedule.type",
               "must be constant, step, cosine, linear or table (got '" + s.schedule.type + "')");
      if (sc.has("factors") != (s.schedule.type == "table"))
        s.fail(sc.has("factors") ? "optimizer.schedule.factors" : "optimizer.schedule",
               sc.has("factors") ? "is for type: table only" : "the table schedule needs factors (lr_t / lr per step)");
      if (sc.has("factors")) s.schedule.factors = schedule_factors(s, sc.node_["factors"]);
      if (sc.has("warmup_steps")) s.schedule.warmup_steps = sc.integer_in("warmup_steps", 0, 100000000);
      if (sc.has("step_size")) s.schedule.step_size = sc.integer_in("step_size", 1, 100000000);
      if (s.schedule.type == "step" && s.schedule.step_size == 0)
        s.fail("optimizer.schedule", "the step schedule needs step_size");
      if (sc.has("gamma")) s.schedule.gamma = sc.number("gamma");
      if (!(s.schedule.gamma > 0 && s.schedule.gamma <= 1))
        s.fail("optimizer.schedule.gamma", "must be in (0, 1]");
      if (sc.has("min_lr")) s.schedule.min_lr = sc.number("min_lr");
      if (!(s.schedule.min_lr >= 0)) s.fail("optimizer.schedule.min_lr", "must be >= 0");
    }
    // optimizer.name (optimizer.type: the older spelling of the same key).
    if (o.has("name") && o.has("type")) s.fail("optimizer.type", "give optimizer.name or optimizer.type, not both");
    if (o.has("name") || o.has("type")) {
      const char* k = o.has("name") ? "name" : "type";
      const std::string v = o.string(k);
      if (v == "sgd") s.optimizer = Optimizer::sgd;
      else if (v == "adam") s.optimizer = Optimizer::adam;
      else if (v == "adamw") s.optimizer = Optimizer::adamw;
      else s.fail(o.key(k), "must be sgd, adam or adamw (torch.optim.SGD / Adam / AdamW; got '" + v + "')");
    }
    if (o.has("betas")) {
      YAML::Node b = o.node_["betas"];
      bool ok = b.IsSequence() && b.size() == 2;
      try {
        if (ok) s.beta1 = b[0].as<double>(), s.beta2 = b[1].as<double>();
      } catch (const YAML::Exception&) {
        ok = false;
      }
      if (!ok) s.fail("optimizer.betas", "must be two numbers in [0, 1)");
    }
    if (o.has("eps")) s.eps = o.number("eps");
    if (o.has("nesterov")) s.nesterov = o.get<bool>("nesterov", "true or false");
    if (o.has("accumulation_steps")) s.accumulation_steps = o.integer_in("accumulation_steps", 1, 1000000);
    if (!o.has("lr")) s.fail("optimizer.lr", "missing");
    s.lr = o.number("lr");
    if (o.has("momentum")) s.momentum = o.number("momentum");
    if (!o.has("batch_size")) s.fail("optimizer.batch_size", "missing");
    s.batch_size = o.integer("batch_size");
    if (o.has("weight_decay")) s.weight_decay = o.number("weight_decay");
    if (o.has("clip_grad_norm")) s.clip_grad_norm = o.number("clip_grad_norm");
  }
  if (!top.has("training")) s.fail("training", "missing (steps or epochs)");
  {
    Reader t(s, top.map("training"), "training.");
    t.allow({"steps", "epochs"});
    if (t.has("steps") == t.has("epochs")) s.fail("training", "give exactly one of 'steps' or 'epochs'");
    if (t.has("steps")) s.steps = t.integer("steps");
    if (t.has("epochs")) s.epochs = t.number("epochs");
  }
  if (top.has("target")) {
    Reader t(s, top.map("target"), "target.");
    t.allow({"epsilon", "loss", "accuracy"});
    int n = t.has("epsilon") + t.has("loss") + t.has("accuracy");
    if (n != 1) s.fail("target", "give exactly one of 'epsilon', 'loss' or 'accuracy'");
    if (t.has("epsilon")) {
      s.target = TargetKind::epsilon;
      s.target_value = t.number("epsilon");
    } else if (t.has("loss")) {
      s.target = TargetKind::loss;
      s.target_value = t.number("loss");
    } else {
      s.target = TargetKind::accuracy;
      s.target_value = t.number("accuracy");
    }
  } else {
    s.target = TargetKind::epsilon;
    s.target_value = 0.01;
  }
  if (top.has("engine")) {
    Reader e(s, top.map("engine"), "engine.");
    e.allow({"device", "projection", "projection_dim", "runs", "seed", "relinearize", "diagnose_steps", "extrapolate",
             "trace_ntk", "relinearize_with", "sweep_kernel", "kernel_growth", "extrapolation_correction",
             "max_seconds", "tail_subset", "tail_parts", "prefix_runs", "relinearize_fraction", "relinearize_cap"});
    if (e.has("tail_subset")) {
      const std::string v = e.string("tail_subset");
      if (v != "stratified" && v != "tracked") s.fail("engine.tail_subset", "must be stratified or tracked (got '" + v + "')");
      s.tail_stratified = v == "stratified";
    }
    if (e.has("tail_parts")) s.tail_parts = static_cast<int>(e.integer_in("tail_parts", 1, 4));
    if (e.has("prefix_runs")) s.prefix_runs = static_cast<int>(e.integer_in("prefix_runs", 1, 4));
    if (e.has("max_seconds")) {
      s.max_seconds = e.number("max_seconds");
      if (!(s.max_seconds > 0)) s.fail("engine.max_seconds", "must be > 0 seconds");
    }
    if (e.has("sweep_kernel")) {
      const std::string v = e.string("sweep_kernel");
      if (v != "shared" && v != "each") s.fail("engine.sweep_kernel", "must be shared or each (got '" + v + "')");
      s.sweep_kernel_shared = v == "shared";
    }
    if (e.has("relinearize_with")) {
      // Missing keys: the job's own optimizer values (read above).
      Reader a(s, e.map("relinearize_with"), "engine.relinearize_with.");
      a.allow({"lr", "momentum", "weight_decay", "batch_size"});
      Spec::Anchor& w = s.relinearize_with = s.optimizer_values();
      if (a.has("lr")) w.lr = a.number("lr");
      if (a.has("momentum")) w.momentum = a.number("momentum");
      if (a.has("weight_decay")) w.weight_decay = a.number("weight_decay");
      if (a.has("batch_size")) w.batch_size = a.integer("batch_size");
    }
    if (e.has("trace_ntk")) s.trace_ntk = e.integer_in("trace_ntk", 0, 100000);
    if (e.has("extrapolate")) s.extrapolate = e.get<bool>("extrapolate", "true or false");
    if (e.has("kernel_growth")) s.kernel_growth = e.get<bool>("kernel_growth", "true or false");
    if (e.has("extrapolation_correction"))
      s.extrapolation_correction = e.get<bool>("extrapolation_correction", "true or false");
    if (e.has("relinearize")) s.relinearize = e.integer_in("relinearize", 0, 100000000);
    if (e.has("relinearize_fraction")) {
      s.relinearize_fraction = e.number("relinearize_fraction");
      if (!(s.relinearize_fraction > 0 && s.relinearize_fraction <= 1))
        s.fail("engine.relinearize_fraction", "must be > 0 and <= 1 (a fraction of the horizon)");
    }
    if (e.has("relinearize_cap")) s.relinearize_cap = e.integer_in("relinearize_cap", 1, 100000000);
    if (e.has("diagnose_steps")) s.diagnose_steps = e.integer_in("diagnose_steps", 0, 100000000);
    if (e.has("device")) s.device = e.string("device");
    if (e.has("projection")) s.projection = e.string("projection");
    if (e.has("projection_dim")) s.projection_dim = e.integer("projection_dim");
    if (e.has("runs")) s.runs = static_cast<int>(e.integer_in("runs", 1, 1000));
    if (e.has("seed")) {
      int64_t seed = e.integer("seed");
      if (seed < 0) s.fail("engine.seed", "must be >= 0");
      s.seed = static_cast<uint64_t>(seed);
    }
  }
  if (top.has("hardware")) {
    Reader h(s, top.map("hardware"), "hardware.");
    h.allow({"step_seconds", "calibrate_steps", "gpus"});
    if (h.has("gpus")) s.gpus = h.integer_in("gpus", 0, 100000);
    if (h.has("step_seconds")) {
      s.step_seconds = h.number("step_seconds");
      if (!(s.step_seconds > 0)) s.fail("hardware.step_seconds", "must be > 0");
    }
    if (h.has("calibrate_steps")) s.calibrate_steps = static_cast<int>(h.integer_in("calibrate_steps", 0, 1000));
  }
  if (top.has("sweep")) {
    Reader w(s, top.map("sweep"), "sweep.");
    w.allow({"lr", "batch_size", "momentum", "weight_decay", "data.size", "size", "training.epochs", "epochs",
             "training.steps", "steps"});
    for (const auto& kv : w.node_) {
      std::string k = kv.first.Scalar();
      if (k == "size") k = "data.size";
      if (k == "epochs") k = "training.epochs";
      if (k == "steps") k = "training.steps";
      const std::string full = "sweep." + kv.first.Scalar();
      if (!kv.second.IsSequence() || kv.second.size() == 0) s.fail(full, "must be a non-empty list of values");
      std::vector<double> vals;
      for (const auto& v : kv.second) {
        try {
          vals.push_back(v.as<double>());
        } catch (const YAML::Exception&) {
          s.fail(full, "values must be numbers (got '" + v.Scalar() + "')");
        }
      }
      for (const auto& other : s.sweep)
        if (other.first == k) s.fail(full, "given twice");
      s.sweep.emplace_back(k, vals);
    }
    bool st = false, ep = false;
    for (const auto& kv : s.sweep) st |= kv.first == "training.steps", ep |= kv.first == "training.epochs";
    if (st && ep) s.fail("sweep", "sweep either training.steps or training.epochs, not both");
  }
  validate(s);
  for (const Spec& one : expand_sweep(s)) validate(one);
  return s;
}

std::vector<Spec> expand_sweep(const Spec& spec) {
  std::vector<Spec> out{spec};
  out.front().sweep.clear();
  // engine.sweep_kernel: shared: every row re-linearizes with the spec's own
  // optimizer values (docs/budgets.md), unless the spec names others.
  bool optimizer_swept = false;
  for (const auto& kv : spec.sweep)
    optimizer_swept |= kv.first == "lr" || kv.first == "momentum" || kv.first == "weight_decay" || kv.first == "batch_size";
  if (optimizer_swept && spec.sweep_kernel_shared && !spec.relinearize_with.set)
    out.front().relinearize_with = spec.optimizer_values();
  for (const auto& [key, values] : spec.sweep) {
    std::vector<Spec> next;
    for (const Spec& base : out)
      for (double v : values) {
        Spec s = base;
        const std::string full = "sweep." + key;
        auto integer = [&](double x) {
          if (x != std::floor(x) || x < 0 || x > 1e15) spec.fail(full, "values must be non-negative integers");
          return int64_t(x);
        };
        if (key == "lr") s.lr = v;
        else if (key == "momentum") s.momentum = v;
        else if (key == "weight_decay") s.weight_decay = v;
        else if (key == "batch_size") s.batch_size = integer(v);
        else if (key == "data.size") s.data.size = integer(v);
        else if (key == "training.epochs") s.epochs = v, s.steps = 0;
        else if (key == "training.steps") s.steps = integer(v), s.epochs = 0;
        // validate() names the spec key; point it at the sweep's line.
        const std::string spec_key = key == "lr" || key == "momentum" || key == "weight_decay" || key == "batch_size"
                                         ? "optimizer." + key
                                         : key;
        s.lines[spec_key] = spec.line_of(full);
        next.push_back(std::move(s));
      }
    out = std::move(next);
  }
  if (out.size() > 10000) spec.fail("sweep", "more than 10000 combinations (" + std::to_string(out.size()) + ")");
  return out;
}

std::string batch_text(const Spec& s) {
  if (s.global_batch() == s.batch_size) return std::to_string(s.batch_size);
  std::string t = std::to_string(s.batch_size);
  if (s.gpus > 1) t += " x " + std::to_string(s.gpus) + " gpus";
  if (s.accumulation_steps > 1) t += " x " + std::to_string(s.accumulation_steps) + " accumulation_steps";
  return t + " = " + std::to_string(s.global_batch());
}

void validate(const Spec& s) {
  auto bad = [&](const std::string& key, const std::string& msg) { s.fail(key, msg); };
  auto num = [](double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  // The optimizer's values, and engine.relinearize_with's under their own keys.
  auto optimizer = [&](const std::string& at, const Spec::Anchor& a) {
    if (!(a.lr > 0) || !std::isfinite(a.lr)) bad(at + "lr", "must be > 0 (got " + num(a.lr) + ")");
    if (!(a.momentum >= 0 && a.momentum < 1)) bad(at + "momentum", "must be in [0, 1) (got " + num(a.momentum) + ")");
    if (!(a.weight_decay >= 0) || !std::isfinite(a.weight_decay))
      bad(at + "weight_decay", "must be >= 0 (got " + num(a.weight_decay) + ")");
    if (a.batch_size <= 0) bad(at + "batch_size", "must be > 0 (got " + std::to_string(a.batch_size) + ")");
  };
  optimizer("optimizer.", s.optimizer_values());
  if (s.relinearize_with.set) optimizer("engine.relinearize_with.", s.relinearize_with);
  const bool sgd = s.optimizer == Optimizer::sgd;
  if (!sgd && s.momentum != 0)
    bad("optimizer.momentum", std::string("is an SGD option: ") + to_string(s.optimizer) + " uses optimizer.betas");
  if (!sgd && s.nesterov) bad("optimizer.nesterov", std::string("is an SGD option (optimizer.name is ") + to_string(s.optimizer) + ")");
  if (s.nesterov && !(s.momentum > 0)) bad("optimizer.nesterov", "needs momentum > 0 (torch.optim.SGD)");
  if (sgd && (s.lines.count("optimizer.betas") || s.lines.count("optimizer.eps")))
    bad(s.lines.count("optimizer.betas") ? "optimizer.betas" : "optimizer.eps",
        "is an Adam/AdamW option (optimizer.name is sgd)");
  if (!(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1))
    bad("optimizer.betas", "must be two numbers in [0, 1) (got [" + num(s.beta1) + ", " + num(s.beta2) + "])");
  if (!(s.eps >= 0) || !std::isfinite(s.eps)) bad("optimizer.eps", "must be >= 0 (got " + num(s.eps) + ")");
  if (s.accumulation_steps < 1) bad("optimizer.accumulation_steps", "must be >= 1");
  if ((s.clip_grad_norm != 0 || s.lines.count("optimizer.clip_grad_norm")) && !(s.clip_grad_norm > 0 && std::isfinite(s.clip_grad_norm)))
    bad("optimizer.clip_grad_norm",
        "must be > 0 (got " + num(s.clip_grad_norm) + "; the max_norm of torch.nn.utils.clip_grad_norm_)");
  if (!(s.label_smoothing >= 0 && s.label_smoothing < 1))
    bad("loss.label_smoothing", "must be in [0, 1) (got " + num(s.label_smoothing) + ")");
  if (s.label_smoothing > 0 && s.loss != Loss::cross_entropy)
    bad("loss.label_smoothing", "only applies to cross_entropy (nn.CrossEntropyLoss)");
  if (s.steps < 0 || (s.steps == 0 && !(s.epochs > 0)))
    bad(s.lines.count("training.epochs") && !s.lines.count("training.steps") ? "training.epochs" : "training.steps",
        "the horizon must be > 0");
  if (s.steps > 100000000) bad("training.steps", "is implausibly large (> 1e8)");
  if (s.data.size < 0) bad("data.size", "must be > 0");
  if (s.data.subset < 0) bad("data.subset", "must be > 0");
  if (s.data.size > 0 && s.data.subset > s.data.size)
    bad("data.subset", "(" + std::to_string(s.data.subset) + ") exceeds data.size (" +
                           std::to_string(s.data.size) + ")");
  if (s.data.size > 0 && s.global_batch() > s.data.size)
    bad("optimizer.batch_size", "(" + batch_text(s) + ") exceeds data.size (" + std::to_string(s.data.size) + ")");
  switch (s.target) {
    case TargetKind::epsilon:
      if (!(s.target_value > 0)) bad("target.epsilon", "must be > 0 (got " + num(s.target_value) + ")");
      break;
    case TargetKind::loss:
      if (!(s.target_value >= 0)) bad("target.loss", "must be >= 0");
      break;
    case TargetKind::accuracy:
      if (!(s.target_value > 0 && s.target_value <= 1))
        bad("target.accuracy", "must be in (0, 1] (got " + num(s.target_value) + ")");
      break;
  }
  if (s.device != "auto" && s.device != "cpu" && s.device != "cuda")
    bad("engine.device", "must be auto, cpu or cuda (got '" + s.device + "')");
  if (s.projection != "auto" && s.projection != "exact" && s.projection != "countsketch")
    bad("engine.projection", "must be auto, exact or countsketch (got '" + s.projection + "')");
  if (s.projection_dim < 0) bad("engine.projection_dim", "must be > 0");
  if (s.runs < 0 || s.runs > 1000) bad("engine.runs", "must be in 1..1000");
  if (!(s.max_seconds >= 0) || !std::isfinite(s.max_seconds)) bad("engine.max_seconds", "must be > 0 seconds");
  if (s.calibrate_steps < 0 || s.calibrate_steps > 1000) bad("hardware.calibrate_steps", "must be in 0..1000");
}

Spec load_spec(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(Exit::input, path + ": no such file");
  if (fs::is_directory(path, ec)) throw Error(Exit::input, path + ": is a directory, not a spec file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Exit::input, path + ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  fs::path abs = fs::absolute(path).lexically_normal();
  return parse_spec(ss.str(), path, abs.parent_path().string());
}

std::string default_spec_path() {
  for (const char* base : {TTPRED_SOURCE_DATADIR, TTPRED_INSTALL_DATADIR}) {
    fs::path p = fs::path(base) / "default" / "spec.yaml";
    std::error_code ec;
    if (fs::exists(p, ec)) return p.string();
  }
  return (fs::path(TTPRED_INSTALL_DATADIR) / "default" / "spec.yaml").string();
}

}  // namespace ttpred
