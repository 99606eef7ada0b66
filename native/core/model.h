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
#include "reservation.h"
#include "runner.h"
#include "statistics.h"

namespace choripan {

class Model : public std::enable_shared_from_this<Model> {
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

  // Queues a request that nothing reserved a place for: refused with Error(kQueueFull) when max_queue
  // requests already wait (reserved places included), and with Error(kDisposed | kInvalidArgument);
  // `done` is then never called. An ImageView's memory must stay valid until `done` runs.
  void Submit(Input input, Completion done, std::optional<Clock::time_point> deadline = {});

  // Places for `count` requests that the caller is decoding, `bytes` of pixels between them, each to be
  // submitted through the reservation (Reservation::Submit, under `deadline`). They are admitted together
  // or not at all, before anything is decoded: Error(kQueueFull) when they would take the queue past
  // max_queue requests waiting (reserved places included) or the requests reserved, queued and running
  // past max_pending_bytes; Error(kTooLarge) when they never could (more than max_queue of them, or
  // several over max_pending_bytes: one image alone may take the whole budget); Error(kDisposed). A
  // worker waits up to max_delay_ms for company only while other requests are queued or reserved: a
  // lone request runs at once.
  Reservation Reserve(int64_t bytes, int64_t count = 1, std::optional<Clock::time_point> deadline = {});

  Stats GetStats() const;

  // Which compiled model runs a batch of one, as the warm-up chose it (Runner::ChooseLoneModel); none
  // for TorchScript, for a package without a batch-1 model, without `warmup`, or on a GPU.
  std::optional<LoneBatch> lone_batch() const;

  // Refuses new work, answers queued requests with kDisposed, lets running batches finish, and frees
  // the module when the last one ends. Never blocks; idempotent.
  void Dispose();
  bool disposed() const;

  // Waits until every worker has exited. Call after Dispose, from a thread that may block.
  void Join();

 private:
  friend class Reservation;

  struct Request {
    RequestId id;  // its reservation's, which every input of one call shares (see Withdraw)
    Input input;
    Completion done;
    Clock::time_point submitted;
    std::optional<Clock::time_point> deadline;
    int64_t bytes;  // the input's, counted in pending_bytes until it is answered
    std::optional<Decoding> decoding = std::nullopt;  // once the core has decoded its JPEG
  };

  Model(std::string path, Options options, std::shared_ptr<Runner> runner, Metadata metadata);
  void StartWorkers();
  void WorkerMain(int64_t worker);
  void LeadChose(std::optional<LoneBatch> chosen);  // records it, and lets the other workers warm up
  void PreprocessorMain();
  // Requests queued (those being preprocessed off the workers included), and with the reserved places,
  // what max_queue bounds. Under mutex_.
  size_t Queued() const { return queue_.size() + large_.size() + preprocessing_; }
  size_t Waiting() const { return Queued() + static_cast<size_t>(reserved_); }
  // Checks and queues a request; `reserved`: its place was reserved (and has just been given back), so
  // the queue's length does not refuse it. See Submit.
  void Queue(std::optional<RequestId> id, Input input, Completion done, std::optional<Clock::time_point> deadline,
             bool reserved);
  // Puts a request on the queue and wakes the workers that would take it. Under mutex_.
  bool Enqueue(Request request);
  // `count` reserved places and their `bytes` are given back (used or not).
  void Unreserve(int64_t count, int64_t bytes);
  // Withdraws the requests of reservation `id` that have not reached a worker; their completion runs
  // with kAborted on this thread, or, for one that the preprocessing thread holds, there once its
  // preprocessing ends. False when none was left to withdraw.
  bool Withdraw(RequestId id);
  // The next batch for `worker`, and whether it runs alone (see Options::intra_op_threads); nullopt
  // once disposed.
  std::optional<std::vector<Request>> NextBatch(int64_t worker, bool& alone);
  void RunBatch(std::vector<Request>& batch, Runner& runner);
  at::Tensor Run(Runner& runner, const at::Tensor& batch);
  std::shared_ptr<Runner> runner() const;
  // An option, for a message, as the caller spells it ("max_queue" from Python, "maxQueue" from JS).
  std::string Named(std::string_view option) const { return std::string(OptionName(option, options_.spelling)); }
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
  bool preprocessing_withdrawn_ = false;  // Withdraw came while it was being preprocessed
  std::thread preprocessor_;
  int64_t reserved_ = 0;       // places reserved and not used yet
  int64_t pending_bytes_ = 0;  // reserved, queued and running
  std::vector<std::thread> workers_;
  int64_t workers_ready_ = 0;
  bool lead_chose_ = false;  // worker 0 has chosen lone_batch_ (or failed first): the others may warm up
  std::optional<LoneBatch> lone_batch_;
  int64_t running_ = 0;        // workers inside a batch
  bool lead_running_ = false;  // worker 0, the only one that widens (see Options::intra_op_threads)
  std::optional<Error> startup_error_;
  bool disposed_ = false;
  RequestId next_id_ = 1;

  uint64_t inflight_ = 0;  // requests a worker holds
  Statistics statistics_;  // under mutex_
};

}  // namespace choripan
