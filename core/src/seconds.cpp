// Stage: seconds per step (docs/method.md §4): real SGD steps at the job's batch
// size timed on the device the prediction runs on, or hardware.step_seconds.
#include "stages.hpp"
#include "ttpred/clock.hpp"

namespace ttpred {

StepTime time_steps(Model& model, const Dataset& d, const Spec& s, int64_t C) {
  StepTime st;
  const double t0 = now();
  if (s.step_seconds > 0) {
    st.median = st.lo = st.hi = s.step_seconds;
  } else {
    // One data-parallel replica's step: its accumulation_steps micro-batches of
    // batch_size samples and the optimizer step (the replicas run in parallel;
    // the gradient all-reduce is not timed).
    Hyper h = hyper_of_spec(s, 1);
    h.batch_size = s.batch_size * s.accumulation_steps;
    h.micro_batch = s.accumulation_steps > 1 ? s.batch_size : 0;
    auto secs = time_train_steps(model, d, s.loss, target_matrix(d, d.n, C), h, s.batchnorm_train,
                                 s.calibrate_steps > 0 ? s.calibrate_steps : 5, s.seed);
    st.median = percentile(secs, 50);
    st.lo = percentile(secs, 10);
    st.hi = percentile(secs, 90);
  }
  st.seconds = now() - t0;
  return st;
}

}  // namespace ttpred
