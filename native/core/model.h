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
#include "input.h"
#include "metadata.h"
#include "options.h"
#include "runner.h"
#include "statistics.h"

namespace choripan {

using RequestId = uint64_t;

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

class Model {
 public:
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
  // Requests queued (those being preprocessed off the workers included), and with the announced ones,
  // what max_queue bounds. Under mutex_.
  size_t Queued() const { return queue_.size() + large_.size() + preprocessing_; }
  size_t Waiting() const { return Queued() + static_cast<size_t>(announced_); }
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

  uint64_t inflight_ = 0;  // requests a worker holds
  Statistics statistics_;  // under mutex_
};

}  // namespace choripan
