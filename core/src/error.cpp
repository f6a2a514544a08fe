#include "ttpred/error.hpp"

namespace ttpred {

std::string located(const std::string& file, int line, const std::string& key,
                    const std::string& message) {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line);
  if (!s.empty()) s += ": ";
  if (!key.empty()) s += key + ": ";
  return s + message;
}

}  // namespace ttpred
