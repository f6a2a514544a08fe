// Monotonic wall-clock seconds, for the phase timings.
#pragma once
#include <chrono>

namespace ttpred {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace ttpred
