#include "sbatch_request.hpp"

#include "budget.hpp"

#include <cctype>
#include <cstring>
#include <sstream>

namespace ttpred::slurm {

namespace {

constexpr std::size_t kMaxArgs = 4096;
constexpr std::size_t kMaxValue = 256;

// sbatch's short options that take an argument (getopt: "A:a:B:b:C:c:D:d:e:F:G:i:J:L:M:m:N:n:o:p:q:S:t:w:x:").
bool short_takes_arg(char c) { return std::strchr("AaBbCcDdeFGiJLMmNnopqStwx", c) != nullptr; }

// sbatch's long options with no or an optional argument: `--name VALUE` does not
// consume VALUE for these (getopt_long takes an optional argument only as --name=VALUE).
const char* const kLongNoArg[] = {
    "contiguous", "exclusive", "get-user-env", "help", "hold", "ignore-pbs", "nice", "no-kill",
    "no-requeue", "overcommit", "oversubscribe", "parsable", "propagate", "quiet", "reboot",
    "requeue", "spread-job", "test-only", "usage", "use-min-nodes", "verbose", "version", "wait"};
// The long options read here, and the others that take an argument, for getopt_long's
// unambiguous prefixes (--part=gpu is --partition=gpu).
const char* const kLongWithArg[] = {
    "account", "acctg-freq", "array", "batch", "bb", "bbf", "begin", "chdir", "cluster-constraint",
    "clusters", "comment", "constraint", "container", "core-spec", "cores-per-socket", "cpu-freq",
    "cpus-per-gpu", "cpus-per-task", "deadline", "delay-boot", "dependency", "distribution", "error",
    "export", "export-file", "extra-node-info", "gid", "gpu-bind", "gpu-freq", "gpus", "gpus-per-node",
    "gpus-per-socket", "gpus-per-task", "gres", "gres-flags", "hint", "input", "job-name",
    "kill-on-invalid-dep", "licenses", "mail-type", "mail-user", "mcs-label", "mem", "mem-bind",
    "mem-per-cpu", "mem-per-gpu", "mincpus", "network", "nodefile", "nodelist", "nodes", "ntasks",
    "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "open-mode",
    "output", "partition", "power", "prefer", "priority", "profile", "qos", "reservation",
    "signal", "sockets-per-node", "switches", "thread-spec", "threads-per-core", "time", "time-min",
    "tmp", "tres-per-task", "uid", "wait-all-nodes", "wckey", "wrap", "exclude"};

// The full name of a long option given as `name` (exact, or an unambiguous prefix);
// "" when unknown or ambiguous. *takes_arg: whether `--name VALUE` consumes VALUE.
std::string long_name(const std::string& name, bool* takes_arg) {
  std::string found;
  int matches = 0;
  auto scan = [&](const char* const* list, std::size_t n, bool arg) {
    for (std::size_t i = 0; i < n; ++i) {
      const std::string cand = list[i];
      if (cand == name) {
        found = cand, matches = 1, *takes_arg = arg;
        return true;
      }
      if (cand.compare(0, name.size(), name) == 0) found = cand, ++matches, *takes_arg = arg;
    }
    return false;
  };
  if (scan(kLongNoArg, sizeof kLongNoArg / sizeof *kLongNoArg, false)) return found;
  if (scan(kLongWithArg, sizeof kLongWithArg / sizeof *kLongWithArg, true)) return found;
  if (matches == 1) return found;
  // Unknown (another SPANK plugin's option, or a newer sbatch's): assume it takes
  // an argument, as most do (--ttpred SPEC does).
  *takes_arg = true;
  return "";
}

// A plain Slurm name (partition list, GPU type): letters, digits, _ . - and, for
// partitions, commas; bounded.
bool plain(const std::string& v, bool comma) {
  if (v.empty() || v.size() > kMaxValue) return false;
  for (unsigned char c : v)
    if (!(std::isalnum(c) || c == '_' || c == '.' || c == '-' || (comma && c == ','))) return false;
  return true;
}

// One option (full long name, or a one-letter short name) with its value.
void apply(SbatchRequest& r, const std::string& name, const std::string& value) {
  if (name == "partition" || name == "p") {
    if (plain(value, true)) r.partition = value;
  } else if (name == "gres") {
    if (!value.empty() && value.size() <= kMaxValue) r.gres_type = gpu_type_of_gres(value);
  } else if (name == "gpus" || name == "G" || name == "gpus-per-node" || name == "gpus-per-task" ||
             name == "gpus-per-socket") {
    if (!value.empty() && value.size() <= kMaxValue) r.gpus_type = gpu_type_of_gpus(value);
  }
}

// Walks sbatch's options in args[from..]; returns the index of the first
// argument that is not an option (the script), or args.size().
std::size_t parse_options(SbatchRequest& r, const std::vector<std::string>& args, std::size_t from,
                          bool* wrap) {
  std::size_t i = from;
  for (; i < args.size() && i < kMaxArgs; ++i) {
    const std::string& a = args[i];
    if (a == "--") return i + 1;
    if (a.size() < 2 || a[0] != '-') return i;
    if (a[1] == '-') {
      const auto eq = a.find('=');
      const std::string given = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      bool takes = true;
      const std::string name = long_name(given, &takes);
      std::string value;
      if (eq != std::string::npos) value = a.substr(eq + 1);
      else if (takes && i + 1 < args.size()) value = args[++i];
      if (name == "wrap") *wrap = true;
      apply(r, name, value);
      continue;
    }
    // A cluster of short options: -Hp gpu, -pgpu, -G2.
    for (std::size_t k = 1; k < a.size(); ++k) {
      const char c = a[k];
      if (!short_takes_arg(c)) continue;
      std::string value = a.substr(k + 1);
      if (value.empty() && i + 1 < args.size()) value = args[++i];
      apply(r, std::string(1, c), value);
      break;
    }
  }
  return i;
}

// The words of one #SBATCH line (quotes removed; a word starting with # ends it).
std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool in = false;
  char quote = 0;
  for (char c : line) {
    if (quote) {
      if (c == quote) quote = 0;
      else cur += c;
      continue;
    }
    if (c == '"' || c == '\'') {
      quote = c, in = true;
    } else if (c == ' ' || c == '\t' || c == '\r') {
      if (in) out.push_back(cur), cur.clear(), in = false;
    } else {
      if (!in && c == '#') break;
      cur += c, in = true;
    }
  }
  if (in) out.push_back(cur);
  return out;
}

}  // namespace

// The GPU type as job_submit/ttpred reads it from a job's TRES (gpu_type_in_tres),
// kept only when it is a plain name: it goes into the prediction job's request.
std::string plain_gpu_type(const std::string& tres) {
  TresRequest t;
  t.per_node = tres;
  const std::string type = gpu_type_in_tres(t);
  return plain(type, false) ? type : "";
}

std::string gpu_type_of_gres(const std::string& gres) { return plain_gpu_type(gres); }

std::string gpu_type_of_gpus(const std::string& gpus) {
  std::string tres = "gpu:";  // --gpus=a100:2,v100:1 is gres gpu:a100:2,gpu:v100:1
  for (char c : gpus) tres += c == ',' ? std::string(",gpu:") : std::string(1, c);
  return plain_gpu_type(tres);
}

SbatchRequest request_from_args(const std::vector<std::string>& argv) {
  SbatchRequest r;
  bool wrap = false;
  const std::size_t script = parse_options(r, argv, 1, &wrap);
  if (!wrap && script < argv.size() && argv[script].size() <= 4096) r.script = argv[script];
  return r;
}

SbatchRequest request_from_script(const std::string& text) {
  SbatchRequest r;
  std::istringstream in(text.substr(0, kMaxScriptHead));
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    const bool shebang = first && line.compare(0, 2, "#!") == 0;
    first = false;
    if (shebang) continue;
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;  // blank
    if (line[b] != '#') break;             // the first command: sbatch reads no further
    if (line.compare(b, 7, "#SBATCH") != 0) continue;
    auto w = words(line.substr(b + 7));
    if (!w.empty() && (w[0] == "hetjob" || w[0] == "packjob")) break;  // the first component only
    w.insert(w.begin(), "sbatch");
    bool wrap = false;
    parse_options(r, w, 1, &wrap);
  }
  return r;
}

SbatchRequest request_from_env(const char* const* env) {
  SbatchRequest r;
  for (std::size_t i = 0; env && env[i] && i < kMaxArgs; ++i) {
    const std::string e = env[i];
    if (e.compare(0, 7, "SBATCH_") != 0) continue;
    const auto eq = e.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = e.substr(0, eq), v = e.substr(eq + 1);
    if (k == "SBATCH_PARTITION") apply(r, "partition", v);
    else if (k == "SBATCH_GRES") apply(r, "gres", v);
    else if (k == "SBATCH_GPUS") apply(r, "gpus", v);
    else if (k == "SBATCH_GPUS_PER_NODE") apply(r, "gpus-per-node", v);
    else if (k == "SBATCH_GPUS_PER_TASK") apply(r, "gpus-per-task", v);
  }
  return r;
}

std::string SbatchRequest::gpu_type() const {
  if (gres_type && !gres_type->empty()) return *gres_type;
  if (gpus_type && !gpus_type->empty()) return *gpus_type;
  return "";
}

SbatchRequest merge_requests(const SbatchRequest& cmdline, const SbatchRequest& env, const SbatchRequest& script) {
  SbatchRequest r = script;
  for (const SbatchRequest* s : {&env, &cmdline}) {
    if (s->partition) r.partition = s->partition;
    if (s->gres_type) r.gres_type = s->gres_type;
    if (s->gpus_type) r.gpus_type = s->gpus_type;
  }
  r.script = cmdline.script;
  return r;
}

std::vector<std::string> split_cmdline(const std::string& bytes) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : bytes) {
    if (c == '\0') {
      out.push_back(cur);
      cur.clear();
      if (out.size() >= kMaxArgs) return out;
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace ttpred::slurm
