// The Θ cache (ttpred/cache.hpp): content-addressed entries, temp file + rename.
#include "ttpred/cache.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace ttpred {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kFormat = 1;
constexpr char kMagic[8] = {'T', 'T', 'P', 'G', 'R', 'A', 'M', '1'};

// ---- SHA-256 (FIPS 180-4), small and dependency-free -----------------------
class Sha256 {
 public:
  Sha256() { reset(); }
  void update(const void* data, size_t len) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += len;
    while (len > 0) {
      const size_t take = std::min(len, size_t(64) - fill_);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      len -= take;
      if (fill_ == 64) {
        block(buf_);
        fill_ = 0;
      }
    }
  }
  template <class T>
  void pod(const T& v) {
    update(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod(uint64_t(s.size()));
    update(s.data(), s.size());
  }
  std::string hex() {
    const uint64_t bits = total_ * 8;
    const uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (fill_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h_)
      for (int i = 7; i >= 0; --i) out.push_back(digits[(v >> (4 * i)) & 15]);
    reset();
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void reset() {
    h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    fill_ = 0;
    total_ = 0;
  }
  void block(const uint8_t* b) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(b[4 * i]) << 24 | uint32_t(b[4 * i + 1]) << 16 | uint32_t(b[4 * i + 2]) << 8 | b[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h_[0] += a, h_[1] += bb, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  std::array<uint32_t, 8> h_;
  uint8_t buf_[64];
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

// FNV-1a 64 over the payload: cheap detection of torn or corrupt entries.
uint64_t fnv(const void* p, size_t n, uint64_t h) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

bool cache_off() {
  const char* v = std::getenv("TTPRED_CACHE");
  if (!v) return false;
  const std::string s = v;
  return s == "0" || s == "off" || s == "no" || s == "false";
}

std::string entry_path(const std::string& dir, const std::string& key) { return dir + "/" + key + ".gram"; }

bool valid_key(const std::string& key) {
  return key.size() == 64 && std::all_of(key.begin(), key.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

struct Writer {
  std::string buf;
  uint64_t sum = 0xcbf29ce484222325ULL;
  void raw(const void* p, size_t n) {
    buf.append(static_cast<const char*>(p), n);
    sum = fnv(p, n, sum);
  }
  void i64(int64_t v) { raw(&v, sizeof v); }
  void f64(double v) { raw(&v, sizeof v); }
  void str(const std::string& s) {
    i64(int64_t(s.size()));
    raw(s.data(), s.size());
  }
  void mat(const Eigen::MatrixXd& m) {
    i64(m.rows());
    i64(m.cols());
    raw(m.data(), size_t(m.size()) * sizeof(double));
  }
};

// Writes magic + w's bytes + w's checksum to a private temporary file in dir,
// then renames it to `path` (atomic: readers see all or nothing). False, and
// nothing left behind, on any failure.
bool write_entry(const std::string& dir, const std::string& key, const char (&magic)[8], const Writer& w,
                 const std::string& path) {
  std::error_code ec;
  std::random_device rd;
  const std::string tmp =
      dir + "/." + key + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(uint64_t(rd()) << 32 | rd());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(magic, sizeof magic);
    out.write(w.buf.data(), std::streamsize(w.buf.size()));
    out.write(reinterpret_cast<const char*>(&w.sum), 8);
    out.flush();
    if (!out) {
      out.close();
      fs::remove(tmp, ec);
      return false;
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return false;
  }
  return true;
}

struct Reader {
  const char* p;
  const char* end;
  uint64_t sum = 0xcbf29ce484222325ULL;
  bool ok = true;
  void raw(void* dst, size_t n) {
    if (!ok || size_t(end - p) < n) {
      ok = false;
      return;
    }
    std::memcpy(dst, p, n);
    sum = fnv(p, n, sum);
    p += n;
  }
  int64_t i64() {
    int64_t v = 0;
    raw(&v, sizeof v);
    return v;
  }
  double f64() {
    double v = 0;
    raw(&v, sizeof v);
    return v;
  }
  std::string str() {
    const int64_t n = i64();
    if (!ok || n < 0 || n > end - p) return ok = false, std::string();
    std::string s(size_t(n), '\0');
    raw(s.data(), size_t(n));
    return s;
  }
  Eigen::MatrixXd mat() {
    const int64_t r = i64(), c = i64();
    if (!ok || r < 0 || c < 0 || (r > 0 && c > (end - p) / 8 / r)) return ok = false, Eigen::MatrixXd();
    Eigen::MatrixXd m(r, c);
    raw(m.data(), size_t(r * c) * sizeof(double));
    return m;
  }
};

}  // namespace

std::string cache_dir() {
  if (cache_off()) return "";
  if (const char* d = std::getenv("TTPRED_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/ttpred";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/ttpred";
  return "";
}

uint64_t cache_max_bytes() {
  if (const char* v = std::getenv("TTPRED_CACHE_MAX_BYTES"); v && *v) {
    char* end = nullptr;
    const unsigned long long b = std::strtoull(v, &end, 10);
    if (end && *end == '\0') return b;
  }
  return uint64_t(2) << 30;
}

std::string gram_cache_key(const std::string& model_path, const Dataset& d, const std::vector<int64_t>& idx,
                           const GramOptions& opt, const std::string& device) {
  Sha256 h;
  h.str("ttpred-gram-cache");
  h.pod(kFormat);
  {
    std::ifstream in(model_path, std::ios::binary);
    std::vector<char> chunk(1 << 20);
    uint64_t bytes = 0;
    while (in) {
      in.read(chunk.data(), std::streamsize(chunk.size()));
      const auto got = size_t(in.gcount());
      h.update(chunk.data(), got);
      bytes += got;
    }
    h.pod(bytes);
  }
  int64_t k = 1;  // d.sample_numel(), here so that this file needs nothing of data.cpp (ttpred_spec)
  for (int64_t s : d.sample_shape) k *= s;
  h.pod(int64_t(d.sample_shape.size()));
  for (int64_t s : d.sample_shape) h.pod(s);
  h.pod(int64_t(idx.size()));
  for (int64_t i : idx) {
    h.update(d.x.data() + i * k, size_t(k) * sizeof(float));
    if (d.has_labels()) h.pod(d.y[size_t(i)]);
    if (d.target_dim > 0)
      h.update(d.targets.data() + i * d.target_dim, size_t(d.target_dim) * sizeof(float));
  }
  h.str(opt.projection);
  h.pod(opt.dim);
  h.pod(opt.trace_k);
  h.pod(opt.seed);
  h.pod(opt.max_exact_flops);
  h.pod(opt.max_jacobian_bytes);
  h.pod(opt.jw0);
  h.str(device);
  return h.hex();
}

std::optional<Gram> cache_load(const std::string& key) {
  try {
    const std::string dir = cache_dir();
    if (dir.empty() || !valid_key(key)) return std::nullopt;
    const auto t0 = std::chrono::steady_clock::now();
    const std::string path = entry_path(dir, key);
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto corrupt = [&]() -> std::optional<Gram> {
      std::error_code ec;
      fs::remove(path, ec);  // recomputed and rewritten by the caller
      return std::nullopt;
    };
    if (buf.size() < sizeof kMagic + 8 || std::memcmp(buf.data(), kMagic, sizeof kMagic) != 0) return corrupt();
    Reader r{buf.data() + sizeof kMagic, buf.data() + buf.size() - 8};
    if (r.str() != key) return corrupt();
    Gram g;
    g.n = r.i64();
    g.classes = r.i64();
    g.params = r.i64();
    g.dim = r.i64();
    g.trace_k = r.i64();
    g.threads = int(r.i64());
    g.method = r.str();
    g.engine = r.str();
    g.theta = r.mat();
    g.f0 = r.mat();
    g.jw0 = r.mat();
    g.kernel = r.mat();
    uint64_t stored = 0;
    std::memcpy(&stored, buf.data() + buf.size() - 8, 8);
    if (!r.ok || r.p != r.end || stored != r.sum || g.theta.rows() != g.n * g.classes || g.f0.rows() != g.n)
      return corrupt();
    std::error_code ec;
    fs::last_write_time(path, fs::file_time_type::clock::now(), ec);  // most recently used
    g.cached = true;
    g.seconds_jacobian = 0;
    g.seconds_gram = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return g;
  } catch (...) {
    return std::nullopt;
  }
}

bool cache_store(const std::string& key, const Gram& g) {
  try {
    const std::string dir = cache_dir();
    if (dir.empty() || !valid_key(key)) return false;
    const uint64_t max = cache_max_bytes();
    const double bytes = 8.0 * double(g.theta.size() + g.f0.size() + g.jw0.size() + g.kernel.size());
    if (bytes > double(max) / 2) return false;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return false;
    Writer w;
    w.str(key);
    w.i64(g.n);
    w.i64(g.classes);
    w.i64(g.params);
    w.i64(g.dim);
    w.i64(g.trace_k);
    w.i64(g.threads);
    w.str(g.method);
    w.str(g.engine);
    w.mat(g.theta);
    w.mat(g.f0);
    w.mat(g.jw0);
    w.mat(g.kernel);
    if (!write_entry(dir, key, kMagic, w, entry_path(dir, key))) return false;
    cache_prune(max);
    return true;
  } catch (...) {
    return false;
  }
}

void cache_prune(uint64_t max_bytes) {
  try {
    const std::string dir = cache_dir();
    if (dir.empty()) return;
    struct Entry {
      fs::path path;
      fs::file_time_type mtime;
      uint64_t size;
    };
    std::vector<Entry> entries;
    uint64_t total = 0;
    const auto stale = fs::file_time_type::clock::now() - std::chrono::hours(1);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      std::error_code ec2;
      const std::string name = e.path().filename().string();
      const auto mt = e.last_write_time(ec2);
      if (ec2) continue;
      if (name.rfind(".", 0) == 0 && name.find(".tmp.") != std::string::npos) {
        if (mt < stale) fs::remove(e.path(), ec2);  // a writer that died
        continue;
      }
      if (e.path().extension() != ".gram") continue;
      const uint64_t sz = e.file_size(ec2);
      if (ec2) continue;
      entries.push_back({e.path(), mt, sz});
      total += sz;
    }
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.mtime < b.mtime; });
    for (const auto& e : entries) {
      if (total <= max_bytes) break;
      std::error_code ec2;
      if (fs::remove(e.path, ec2)) total -= e.size;  // another process may have removed it first
    }
  } catch (...) {
  }
}

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  Sha256 h;
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), std::streamsize(chunk.size()));
    h.update(chunk.data(), size_t(in.gcount()));
  }
  return h.hex();
}

namespace {
constexpr char kPredMagic[8] = {'T', 'T', 'P', 'P', 'R', 'E', 'D', '1'};
std::string pred_path(const std::string& dir, const std::string& key) { return dir + "/" + key + ".pred"; }
// Only a directory of this user that nobody else can write to: on shared storage
// another user could otherwise plant entries for keys this user will compute.
bool own_private_dir(const std::string& dir) {
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() &&
         (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}
}  // namespace

std::optional<CachedOutput> prediction_cache_load(const std::string& dir, const std::string& key) {
  try {
    if (dir.empty() || !valid_key(key) || !own_private_dir(dir)) return std::nullopt;
    const std::string path = pred_path(dir, key);
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (buf.size() < sizeof kPredMagic + 8 || std::memcmp(buf.data(), kPredMagic, sizeof kPredMagic) != 0)
      return std::nullopt;
    Reader r{buf.data() + sizeof kPredMagic, buf.data() + buf.size() - 8};
    if (r.str() != key) return std::nullopt;
    CachedOutput c;
    c.out = r.str();
    c.err = r.str();
    uint64_t stored = 0;
    std::memcpy(&stored, buf.data() + buf.size() - 8, 8);
    if (!r.ok || r.p != r.end || stored != r.sum) return std::nullopt;  // torn or corrupt: recompute
    return c;
  } catch (...) {
    return std::nullopt;
  }
}

bool prediction_cache_store(const std::string& dir, const std::string& key, const CachedOutput& c) {
  try {
    if (dir.empty() || !valid_key(key)) return false;
    std::error_code ec;
    if (!fs::exists(dir, ec)) {
      fs::create_directories(dir, ec);
      if (ec) return false;
      fs::permissions(dir, fs::perms::owner_all, ec);  // 0700: the user's own
    }
    if (!own_private_dir(dir)) return false;
    Writer w;
    w.str(key);
    w.str(c.out);
    w.str(c.err);
    return write_entry(dir, key, kPredMagic, w, pred_path(dir, key));
  } catch (...) {
    return false;
  }
}

}  // namespace ttpred
