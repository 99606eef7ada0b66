// A loaded artifact and its scheduler: one queue, `workers` inference threads that merge queued
// requests into batches of up to `max_batch`, waiting at most `max_delay_ms` for company.
#pragma once

#include <ATen/Tensor.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "errors.h"
#include "jpeg.h"
#include "metadata.h"
#include "preprocess.h"
#include "runner.h"
#include "vocabulary.h"

namespace choripan {

using Clock = std::chrono::steady_clock;
using RequestId = uint64_t;

// Load options: names, defaults and ranges come from vocabulary.json (see vocabulary.h), where each is
// described. In short: workers 0 picks the CPU cores this process may use (cgroup quota and affinity
// included), or 1 on a GPU; intra_op_threads 0 picks cores / workers. With one thread per worker, a
// batch that runs alone (no other worker busy, nothing else queued or announced) gets all `workers`
// threads: a lone request is answered as fast as the cores allow, concurrent ones each take a core.
struct Options {
#define CHORIPAN_OPTION_FIELD(name, js, type, fallback, min, max) type name = fallback;
  CHORIPAN_NUMERIC_OPTIONS(CHORIPAN_OPTION_FIELD)
#undef CHORIPAN_OPTION_FIELD
  Device device = std::string_view(CHORIPAN_DEFAULT_DEVICE) == "cuda" ? Device::kCuda : Device::kCpu;
  bool warmup = CHORIPAN_DEFAULT_WARMUP;
  std::string sha256;  // the file's digest in hex; when set, any other file is refused before it is read
};

// The cores this process may run on: affinity mask and cgroup v2 CPU quota, at least 1.
int64_t AvailableCores();

// What a request is: decoded pixels, a JPEG to decode (see jpeg.h) or an already preprocessed float
// [3, crop, crop] tensor. Images are decoded and preprocessed on the worker that runs their batch,
// unless they hold more than kOffWorkerPixels: those go to the model's preprocessing thread first and
// join the queue when they are ready, so that a huge image never holds up the small ones behind it.
using Input = std::variant<ImageView, JpegView, at::Tensor>;

// About a forward pass's worth of resizing on one core.
inline constexpr int64_t kOffWorkerPixels = int64_t{1} << 22;

// Exactly one of the two is set.
struct Outcome {
  std::optional<Error> error;
  std::vector<float> probabilities;
  // Where an answered request's time went: waiting in the queue (submission to the start of its
  // batch, preprocessing included) and the forward pass of its batch of `batch_size`.
  double queue_ms = 0;
  double forward_ms = 0;
  int64_t batch_size = 0;
};

// Called exactly once per submitted request, from a worker thread, or from the thread that calls
// Cancel or Dispose. It must not throw and must not call back into the model.
using Completion = std::function<void(Outcome)>;

// Model::GetStats: the fields vocabulary.json lists, where each is described.
struct Stats {
#define CHORIPAN_STATS_FIELD(name, js, type) type name = 0;
  CHORIPAN_STATS(CHORIPAN_STATS_FIELD)
#undef CHORIPAN_STATS_FIELD
};

class Model {
 public:
  static constexpr size_t kLatencyWindow = 2048;
  static constexpr std::chrono::seconds kDrainWindow{10};

  // Loads the artifact, reads its metadata, starts the workers and, with `warmup`, runs a forward
  // pass on each so the first request is not the slow one. Throws Error(kModelLoad | kDevice |
  // kInvalidArgument).
  static std::shared_ptr<Model> Load(const std::string& path, const Options& options);

  ~Model();  // Dispose() and Join().
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Metadata& metadata() const { return metadata_; }
  const Options& options() const { return options_; }
  const std::string& path() const { return path_; }

  // Runs the artifact on the calling thread: float [N, 3, H, W] (the metadata's crop, normally) →
  // probabilities [N, classes]. Throws Error(kDisposed | kInvalidArgument | kInternal).
  at::Tensor Forward(const at::Tensor& batch);

  // Queues a request. An ImageView's memory must stay valid until `done` runs. Throws
  // Error(kQueueFull | kDisposed | kInvalidArgument) instead of queueing; `done` is then never called.
  // `announced_bytes`: the request was announced with that many bytes, and this submission ends the
  // announcement (and is never refused for the queue's length: its announcement was counted in it).
  RequestId Submit(Input input, Completion done, std::optional<Clock::time_point> deadline = {},
                   std::optional<int64_t> announced_bytes = {});

  // `count` requests are on their way, together `bytes` of pixels: the caller is decoding them. They
  // are admitted together or not at all, before anything is decoded: Error(kQueueFull) when they would
  // take the queue past max_queue requests waiting (announced ones included) or the requests announced,
  // queued and running past max_pending_bytes; Error(kTooLarge) when they never could (more than
  // max_queue of them, or several over max_pending_bytes: one image alone may take the whole budget);
  // Error(kDisposed). A worker waits up to max_delay_ms for company only while other requests are
  // queued or announced: a lone request runs at once. Each request announced ends with
  // Submit(…, its bytes) or Retract(its bytes).
  void Announce(int64_t bytes, int64_t count = 1);
  void Retract(int64_t bytes);

  // Withdraws a request that has not reached a worker yet; its completion runs with kAborted on this
  // thread, or, for one that the preprocessing thread holds, there once its preprocessing ends. False
  // when it already runs or has finished.
  bool Cancel(RequestId id);

  Stats GetStats() const;

  // Refuses new work, answers queued requests with kDisposed, lets running batches finish, and frees
  // the module when the last one ends. Never blocks; idempotent.
  void Dispose();
  bool disposed() const;

  // Waits until every worker has exited. Call after Dispose, from a thread that may block.
  void Join();

 private:
  struct Request {
    RequestId id;
    Input input;
    Completion done;
    Clock::time_point submitted;
    std::optional<Clock::time_point> deadline;
    int64_t bytes;  // the input's, counted in pending_bytes until it is answered
  };

  Model(std::string path, Options options, std::shared_ptr<Runner> runner, Metadata metadata);
  void StartWorkers();
  void WorkerMain(int64_t worker);
  void PreprocessorMain();
  // Requests waiting, announced ones included: what max_queue bounds. Under mutex_.
  size_t Waiting() const { return queue_.size() + large_.size() + preprocessing_ + static_cast<size_t>(announced_); }
  void CountQueued() { counters_.queued = queue_.size() + large_.size() + preprocessing_; }
  // Puts a request on the queue and wakes the workers that would take it. Under mutex_.
  bool Enqueue(Request request);
  // The next batch for `worker`, and whether it runs alone (see Options::intra_op_threads); nullopt
  // once disposed.
  std::optional<std::vector<Request>> NextBatch(int64_t worker, bool& alone);
  void RunBatch(std::vector<Request>& batch, Runner& runner);
  at::Tensor Run(Runner& runner, const at::Tensor& batch);
  std::shared_ptr<Runner> runner() const;
  void Finish(Request& request, Outcome outcome, bool was_running);

  const std::string path_;
  const Options options_;
  const Metadata metadata_;
  const int64_t classes_;

  std::mutex join_mutex_;
  mutable std::mutex mutex_;
  // Worker 0 and the others wait apart, so that each is woken only for work it would take: a worker
  // woken for nothing can still take a core from a forward pass that needs both.
  std::condition_variable lead_wake_;
  std::condition_variable helper_wake_;
  std::condition_variable ready_;
  std::shared_ptr<Runner> runner_;  // reset by Dispose; workers keep their own reference until they exit
  std::deque<Request> queue_;
  std::deque<Request> large_;  // more than kOffWorkerPixels, waiting for the preprocessing thread
  std::condition_variable large_wake_;
  size_t preprocessing_ = 0;  // the one the preprocessing thread holds
  RequestId preprocessing_id_ = 0;
  bool preprocessing_withdrawn_ = false;  // Cancel came while it was being preprocessed
  std::thread preprocessor_;
  int64_t announced_ = 0;
  int64_t pending_bytes_ = 0;  // announced, queued and running
  std::vector<std::thread> workers_;
  int64_t workers_ready_ = 0;
  int64_t running_ = 0;        // workers inside a batch
  bool lead_running_ = false;  // worker 0, the only one that widens (see Options::intra_op_threads)
  std::optional<Error> startup_error_;
  bool disposed_ = false;
  RequestId next_id_ = 1;

  // Statistics, under mutex_.
  Stats counters_;
  uint64_t batched_requests_ = 0;  // requests that reached a forward pass
  std::vector<double> latencies_ms_;  // ring buffer of kLatencyWindow
  std::deque<Clock::time_point> answered_at_;  // completions of the last kDrainWindow
  size_t latency_next_ = 0;
  double forward_ms_total_ = 0;
};

}  // namespace choripan
