// Errors inside ttpred are exceptions carrying the exit code the command line
// returns for them (documented in docs/json.md).
#pragma once
#include <stdexcept>
#include <string>

namespace ttpred {

enum class Exit : int {
  ok = 0,
  internal = 1,  // a bug
  usage = 2,     // bad command line
  spec = 3,      // YAML syntax, unknown key, wrong type, invalid value
  input = 4,     // missing/unreadable file, not a model / data file
  invalid = 5,   // model or data inconsistent (shapes, labels, NaN)
  device = 6,    // requested device unusable
  budget = 7,    // engine.max_seconds: even the smallest prediction cannot fit
};

class Error : public std::runtime_error {
 public:
  Error(Exit code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Exit code() const { return code_; }

 private:
  Exit code_;
};

// "FILE:LINE: KEY: message" (LINE and KEY omitted when unknown).
std::string located(const std::string& file, int line, const std::string& key,
                    const std::string& message);

}  // namespace ttpred
