// A disk cache of Gram matrices (Θ, f0, J·w0), so that a repeated prediction on
// the same model, data subset and engine settings skips the Jacobians.
// docs/performance.md, "The Θ cache".
//
// Where: $TTPRED_CACHE_DIR, else $XDG_CACHE_HOME/ttpred, else ~/.cache/ttpred.
// Off when $TTPRED_CACHE is 0/off/no (or no directory can be created).
// Size: at most $TTPRED_CACHE_MAX_BYTES (default 2 GiB); the least recently used
// entries (by mtime, refreshed on every hit) are removed after each store.
// Concurrency: an entry is written to a unique temporary file and renamed into
// place (atomic on POSIX), so readers see a whole entry or none; each entry
// carries its key and a checksum, and a reader that finds a truncated or
// corrupt entry ignores it (and removes it), so the caller recomputes.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ttpred/data.hpp"
#include "ttpred/model.hpp"

namespace ttpred {

// SHA-256 (hex) of everything Θ depends on: the model file's bytes, the bytes of
// the chosen samples (x and labels/targets, in idx order), N0, the projection
// asked for and D0, trace_k, the seed, the device kind (cpu|cuda) and the cache
// format version. The engine (loop/fast/vmap) is not part of it: they agree to
// float rounding.
std::string gram_cache_key(const std::string& model_path, const Dataset& d, const std::vector<int64_t>& idx,
                           const GramOptions& opt, const std::string& device);

std::string cache_dir();        // the directory used (not created); "" when off
uint64_t cache_max_bytes();     // the size bound

// The entry for `key`, or nullopt when absent, unreadable or corrupt (never throws).
// On a hit, Gram::cached is true and seconds_jacobian/seconds_gram are 0 and the load time.
std::optional<Gram> cache_load(const std::string& key);
// Stores g under key and prunes the cache to its bound. Returns false (never
// throws) when the cache is off, the entry exceeds half the bound, or I/O fails.
bool cache_store(const std::string& key, const Gram& g);
// Removes least recently used entries until the total is at most max_bytes;
// also removes temporary files older than an hour (crashed writers).
void cache_prune(uint64_t max_bytes);

// ---- The prediction cache (ttpred-estimate --cache-dir DIR) ----------------
// Whole outputs of ttpred-estimate under a key of everything they depend on (the
// CLI computes it: docs/performance.md, "The prediction cache"). Entries are
// DIR/KEY.pred, written like Gram entries (temp file + rename, key and checksum
// inside), so concurrent writers and readers on shared storage are safe. DIR must
// belong to this user and not be group/other-writable (created 0700 when absent);
// otherwise the cache is not used (another user could plant entries).
struct CachedOutput {
  std::string out;  // stdout text
  std::string err;  // warnings printed to stderr
};
std::string sha256_hex(const std::string& bytes);
std::string file_sha256(const std::string& path);  // "" when unreadable
std::optional<CachedOutput> prediction_cache_load(const std::string& dir, const std::string& key);
bool prediction_cache_store(const std::string& dir, const std::string& key, const CachedOutput& c);

}  // namespace ttpred
