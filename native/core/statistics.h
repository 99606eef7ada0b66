// The statistics a model keeps of its own work: what stats() reports (vocabulary.json describes each
// field). Not locked itself: the model calls it under its own lock, and computes the percentiles of a
// copy of the latencies outside it (Percentiles).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <vector>

#include "vocabulary.h"

namespace choripan {

using Clock = std::chrono::steady_clock;

// Model::GetStats: the fields vocabulary.json lists.
struct Stats {
#define CHORIPAN_STATS_FIELD(name, js, type) type name = 0;
  CHORIPAN_STATS(CHORIPAN_STATS_FIELD)
#undef CHORIPAN_STATS_FIELD
};

double Milliseconds(Clock::duration duration);

class Statistics {
 public:
  static constexpr size_t kLatencyWindow = CHORIPAN_LATENCY_ANSWERS;            // answers, for the percentiles
  static constexpr std::chrono::seconds kDrainWindow{CHORIPAN_DRAIN_SECONDS};  // for drainPerSecond

  Statistics();

  void Accepted() { ++counts_.requests; }
  void Rejected(uint64_t requests) { counts_.rejected += requests; }
  void Batch(size_t requests, double forward_ms);
  // A request answered with probabilities after `latency_ms`, or with an error.
  void Answered(bool ok, double latency_ms);

  // The counts and means; `latencies` receives the window's latencies for Percentiles.
  Stats Snapshot(std::vector<double>& latencies) const;
  // latencyP50Ms, latencyP99Ms and latencyMaxMs of `latencies`, without a full sort.
  static void Percentiles(Stats& stats, std::vector<double> latencies);

 private:
  Stats counts_;
  uint64_t batched_requests_ = 0;  // requests that reached a forward pass
  double forward_ms_total_ = 0;
  std::vector<double> latencies_ms_;           // ring buffer of kLatencyWindow
  size_t latency_next_ = 0;
  std::deque<Clock::time_point> answered_at_;  // completions of the last kDrainWindow
};

}  // namespace choripan
