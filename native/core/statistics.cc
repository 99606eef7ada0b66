#include "statistics.h"

#include <algorithm>

namespace choripan {

double Milliseconds(Clock::duration duration) { return std::chrono::duration<double, std::milli>(duration).count(); }

Statistics::Statistics() { latencies_ms_.reserve(kLatencyWindow); }

void Statistics::Batch(size_t requests, double forward_ms) {
  ++counts_.batches;
  batched_requests_ += requests;
  forward_ms_total_ += forward_ms;
}

void Statistics::Answered(bool ok, double latency_ms) {
  if (!ok) {
    ++counts_.failed;
    return;
  }
  ++counts_.completed;
  if (latencies_ms_.size() < kLatencyWindow) {
    latencies_ms_.push_back(latency_ms);
  } else {
    latencies_ms_[latency_next_] = latency_ms;
  }
  latency_next_ = (latency_next_ + 1) % kLatencyWindow;
  const auto now = Clock::now();
  answered_at_.push_back(now);
  while (answered_at_.front() < now - kDrainWindow) answered_at_.pop_front();
}

Stats Statistics::Snapshot(std::vector<double>& latencies) const {
  Stats stats = counts_;
  if (stats.batches > 0) {
    stats.mean_batch_size = static_cast<double>(batched_requests_) / static_cast<double>(stats.batches);
    stats.mean_forward_ms = forward_ms_total_ / static_cast<double>(stats.batches);
  }
  // answered_at_ is in time order: the recent ones are a suffix.
  const auto now = Clock::now();
  const auto recent = answered_at_.end() - std::lower_bound(answered_at_.begin(), answered_at_.end(), now - kDrainWindow);
  if (recent > 0) {
    // Over the window, or since the first answer when the model is younger than that.
    const auto span = std::min<Clock::duration>(kDrainWindow, now - answered_at_.front());
    stats.drain_per_second = static_cast<double>(recent) / std::max(1.0, Milliseconds(span) / 1000.0);
  }
  latencies = latencies_ms_;
  return stats;
}

void Statistics::Percentiles(Stats& stats, std::vector<double> latencies) {
  if (latencies.empty()) return;
  auto at = [&](double q) {
    const auto nth = latencies.begin() + static_cast<std::ptrdiff_t>(q * static_cast<double>(latencies.size() - 1));
    std::nth_element(latencies.begin(), nth, latencies.end());
    return *nth;
  };
  stats.latency_p50_ms = at(0.50);
  stats.latency_p99_ms = at(0.99);
  stats.latency_max_ms = *std::max_element(latencies.begin(), latencies.end());
}

}  // namespace choripan
