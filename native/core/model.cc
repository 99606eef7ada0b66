#include "model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <dlfcn.h>
#include <torch/cuda.h>

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <type_traits>

namespace choripan {

namespace {

bool OutOfMemory(const std::exception& error) {
  return dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr ||
         std::string_view(error.what()).find("out of memory") != std::string_view::npos;
}

// libtorch gives a thread its process-wide thread count (the last at::set_num_threads of any thread)
// the first time that thread asks for it, which every parallel operation does, over whatever the thread
// set before. Unless a worker takes that step before setting its own count, its first operation can
// hand it another worker's count: a second OpenMP team, more OpenMP threads than cores, and GNU OpenMP
// then sleeps between parallel regions instead of spinning (a lone forward pass 7.5 → 11 ms, in about
// half of the processes started). at::internal::lazy_init_num_threads would only set this library's
// copy of the flag: at::get_num_threads is libtorch's own.
void TakeLibtorchThreadCount() { at::get_num_threads(); }

Error Withdrawn() { return Error(ErrorCode::kAborted, "the request was withdrawn before it ran"); }

}  // namespace

std::shared_ptr<Model> Model::Load(const std::string& path, const Options& requested) {
  Validate(requested);
  // Resolved as for a package until the artifact says its format: a package makes a runner for each of
  // its workers, and one for Forward on a caller's thread.
  const auto as_package = Resolve(requested, "aoti");

  // Loading runs libtorch's parallel copies. GNU OpenMP keeps a thread pool for every thread that
  // opens a parallel region and, once it manages more threads than there are cores, stops spinning
  // between regions, which makes every forward pass slower. A short-lived loader thread takes its
  // pool with it, so the only pools left are the workers'.
  Artifact artifact;
  std::optional<Error> failure;
  std::thread loader([&] {
    try {
      artifact = LoadArtifact(path, as_package.device, as_package.workers + 1, as_package.max_batch, as_package.sha256);
    } catch (const Error& error) {
      failure = error;
    } catch (const std::exception& error) {
      failure = ModelLoadError(path, Describe(error));
    }
  });
  loader.join();
  if (failure) throw *failure;
  auto& metadata = artifact.metadata;
  const auto options = metadata.format == "aoti" ? as_package : Resolve(requested, metadata.format);

  if (metadata.max_batch > 0 && options.max_batch > metadata.max_batch) {
    throw Error(Misuse::kRange, std::string(OptionName("max_batch", options.spelling)) + " is " +
                                    std::to_string(options.max_batch) + " but " + path + " runs batches of at most " +
                                    std::to_string(metadata.max_batch));
  }
  std::shared_ptr<Model> model(new Model(path, options, std::move(artifact.runner), std::move(metadata)));
  model->StartWorkers();
  return model;
}

Model::Model(std::string path, Options options, std::shared_ptr<Runner> runner, Metadata metadata)
    : path_(std::move(path)),
      options_(options),
      metadata_(std::move(metadata)),
      classes_(static_cast<int64_t>(metadata_.labels.size())),
      runner_(std::move(runner)) {}

Model::~Model() {
  Dispose();
  Join();
}

void Model::StartWorkers() {
  std::unique_lock lock(mutex_);
  for (int64_t i = 0; i < options_.workers; ++i) {
    workers_.emplace_back(&Model::WorkerMain, this, i);
  }
  preprocessor_ = std::thread(&Model::PreprocessorMain, this);
  ready_.wait(lock, [&] { return workers_ready_ == options_.workers; });
  if (startup_error_) {
    auto failure = *startup_error_;
    lock.unlock();
    Dispose();
    Join();
    throw failure;
  }
}

void Model::LeadChose(std::optional<LoneBatch> chosen) {
  {
    std::lock_guard lock(mutex_);
    lead_chose_ = true;
    lone_batch_ = std::move(chosen);
  }
  ready_.notify_all();
}

std::optional<LoneBatch> Model::lone_batch() const {
  std::lock_guard lock(mutex_);
  return lone_batch_;
}

std::shared_ptr<Runner> Model::runner() const {
  std::lock_guard lock(mutex_);
  return runner_;
}

void Model::WorkerMain(int64_t worker) {
  // One thread per worker, and all of them for a batch that runs alone (Options::intra_op_threads)
  // on worker 0 only: GNU OpenMP stops spinning once it manages more threads than there are cores,
  // so a single widening team keeps the count at `workers`.
  const auto narrow = options_.intra_op_threads;
  const auto wide = worker == 0 && narrow == 1 ? options_.workers : narrow;
  // Sets this thread's OpenMP team size (libtorch also records it process-wide); later changes go to
  // OpenMP directly, which is all a change of team size needs.
  TakeLibtorchThreadCount();
  at::set_num_threads(static_cast<int>(wide));
  int64_t threads = wide;
  c10::InferenceMode inference_mode;  // thread-local: it must be created on the thread that runs forward
  auto runner = this->runner();

  std::optional<Error> failure;
  if (options_.warmup) {
    // Worker 0 times the package's models alone on the machine, as a lone request will run them.
    if (worker != 0 && runner->ChoosesLoneModel()) {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [&] { return lead_chose_; });
    }
    try {
      const auto crop = metadata_.preprocessing.crop;
      for (const auto team : {wide, narrow}) {
        omp_set_num_threads(static_cast<int>(team));
        Run(*runner, at::zeros({1, 3, crop, crop}));
        if (worker == 0 && team == wide) {
          // Before the larger batches, so that they warm the models chosen to run them.
          runner->ChooseLoneModel(at::zeros({1, 3, crop, crop}));
          LeadChose(runner->lone_batch());
        }
        for (const auto size : runner->PackedBatchSizes()) {
          if (size > 1 && size < options_.max_batch) Run(*runner, at::zeros({size, 3, crop, crop}));
        }
        if (options_.max_batch > 1) Run(*runner, at::zeros({options_.max_batch, 3, crop, crop}));
        if (wide == narrow) break;
      }
      threads = narrow;
    } catch (const Error& error) {
      failure = ModelLoadError(path_, error.what());
    } catch (const std::exception& error) {
      failure = ModelLoadError(path_, "the warm-up forward pass failed: " + Describe(error));
    }
  }
  {
    std::lock_guard lock(mutex_);
    if (failure && !startup_error_) startup_error_ = failure;
    ++workers_ready_;
  }
  if (worker == 0) LeadChose(runner->lone_batch());  // also where the warm-up failed first: no worker waits on
  ready_.notify_all();

  bool alone = false;
  while (auto batch = NextBatch(worker, alone)) {
    const auto team = alone ? wide : narrow;
    if (team != threads) omp_set_num_threads(static_cast<int>(threads = team));
    RunBatch(*batch, *runner);
    std::lock_guard lock(mutex_);
    --running_;
    if (worker == 0) lead_running_ = false;
  }
  // Dispose dropped the model's own reference: the artifact's memory goes with the last worker's.
}

std::optional<std::vector<Model::Request>> Model::NextBatch(int64_t worker, bool& alone) {
  const auto max_batch = static_cast<size_t>(options_.max_batch);
  const auto delay = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(options_.max_delay_ms));
  // Worker 0 takes whatever comes; the others join in only under load, so that a lone request goes
  // to the one worker that can run it with every thread.
  auto has_work = [&] {
    return !queue_.empty() && (worker == 0 || lead_running_ || queue_.size() > 1 || reserved_ > 0);
  };
  auto& wake = worker == 0 ? lead_wake_ : helper_wake_;
  std::vector<Request> batch;
  std::vector<Request> expired;
  bool others_have_work = false;
  {
    std::unique_lock lock(mutex_);
    while (batch.empty() && expired.empty()) {
      wake.wait(lock, [&] { return disposed_ || has_work(); });
      // Gather company for the oldest request, at most `max_delay_ms` after it arrived, while there is
      // company to gather: other requests queued or reserved. The oldest can change while waiting
      // (another worker took a batch, a request was withdrawn): look again.
      while (!disposed_ && has_work() && queue_.size() < max_batch && (queue_.size() > 1 || reserved_ > 0)) {
        const auto gather_until = queue_.front().submitted + delay;
        if (Clock::now() >= gather_until) break;
        wake.wait_until(lock, gather_until);
      }
      if (disposed_) return std::nullopt;
      if (!has_work()) continue;
      const auto now = Clock::now();
      while (!queue_.empty() && batch.size() < max_batch) {
        auto& request = queue_.front();
        (request.deadline && *request.deadline <= now ? expired : batch).push_back(std::move(request));
        queue_.pop_front();
      }
      inflight_ += batch.size() + expired.size();
    }
    // Not while a large image is being preprocessed: that takes a core of its own.
    alone = running_ == 0 && Waiting() == 0;
    ++running_;
    if (worker == 0) lead_running_ = true;
    others_have_work = !queue_.empty();
  }
  if (others_have_work) helper_wake_.notify_all();
  for (auto& request : expired) {
    Finish(request, Outcome{Error(ErrorCode::kTimeout, "the deadline passed while the request was queued"), {}},
           /*was_running=*/true);
  }
  return batch;
}

void Model::RunBatch(std::vector<Request>& batch, Runner& runner) {
  const auto crop = metadata_.preprocessing.crop;
  // Each request is preprocessed straight into its row of the batch.
  auto input = at::empty({static_cast<int64_t>(batch.size()), 3, crop, crop}, at::kFloat);
  std::vector<Request*> admitted;
  for (auto& request : batch) {
    try {
      const auto row = input[static_cast<int64_t>(admitted.size())];
      // One prepared off the workers is a tensor by now, its decoding already recorded.
      if (auto decoding = PrepareInto(request.input, metadata_.preprocessing, row)) request.decoding = decoding;
      admitted.push_back(&request);
    } catch (const Error& error) {
      Finish(request, Outcome{error, {}}, true);
    } catch (const std::exception& error) {
      Finish(request, Outcome{Error(ErrorCode::kInternal, "preprocessing failed: " + Describe(error)), {}}, true);
    }
  }
  if (admitted.empty()) return;

  at::Tensor probabilities;
  const auto started = Clock::now();
  double elapsed = 0;
  try {
    probabilities = Run(runner, input.narrow(0, 0, static_cast<int64_t>(admitted.size())));
    elapsed = Milliseconds(Clock::now() - started);
    std::lock_guard lock(mutex_);
    statistics_.Batch(admitted.size(), elapsed);
  } catch (const std::exception& error) {
    const auto message = std::string("the forward pass failed: ") + Describe(error);
    for (auto* request : admitted) Finish(*request, Outcome{Error(ErrorCode::kInternal, message), {}}, true);
    return;
  }
  const auto* data = probabilities.data_ptr<float>();
  for (size_t row = 0; row < admitted.size(); ++row) {
    auto& request = *admitted[row];
    const auto* begin = data + row * classes_;
    Outcome outcome{std::nullopt, std::vector<float>(begin, begin + classes_), Milliseconds(started - request.submitted),
                    elapsed, static_cast<int64_t>(admitted.size())};
    if (request.decoding) {
      outcome.decode_start_ms = Milliseconds(request.decoding->started - request.submitted);
      outcome.decode_ms = request.decoding->ms;
    }
    Finish(request, std::move(outcome), true);
  }
}

at::Tensor Model::Run(Runner& runner, const at::Tensor& batch) {
  auto output = runner.Run(batch);
  if (output.dim() != 2 || output.size(0) != batch.size(0) || output.size(1) != classes_) {
    throw Error(ErrorCode::kInternal, "the artifact returned shape " + c10::str(output.sizes()) +
                                          " for a batch of " + std::to_string(batch.size(0)) + "; expected [" +
                                          std::to_string(batch.size(0)) + ", " + std::to_string(classes_) +
                                          "] (one probability per label)");
  }
  return output.to(at::kFloat).contiguous();
}

at::Tensor Model::Forward(const at::Tensor& batch) {
  auto runner = this->runner();
  if (!runner) throw Error(ErrorCode::kDisposed, "the model was disposed");
  if (batch.dim() != 4 || batch.scalar_type() != at::kFloat || batch.size(0) < 1 || batch.size(1) != 3) {
    throw Error(ErrorCode::kInvalidArgument,
                "expected a float32 NCHW batch of RGB images, got " +
                    std::string(c10::toString(batch.scalar_type())) + " " + c10::str(batch.sizes()));
  }
  const auto crop = metadata_.preprocessing.crop;
  if (metadata_.max_batch > 0 && (batch.size(0) > metadata_.max_batch || batch.size(2) != crop || batch.size(3) != crop)) {
    throw Error(ErrorCode::kInvalidArgument, "this compiled package takes [N, 3, " + std::to_string(crop) + ", " +
                                                 std::to_string(crop) + "] with N from 1 to " +
                                                 std::to_string(metadata_.max_batch) + ", got " + c10::str(batch.sizes()));
  }
  at::Tensor output;
  {
    c10::InferenceMode inference_mode;
    try {
      output = Run(*runner, batch);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& error) {
      // The batch is the caller's (any size, not only the crop): the artifact decides what it accepts.
      if (OutOfMemory(error)) throw Error(ErrorCode::kInternal, "the forward pass failed: " + Describe(error));
      throw Error(ErrorCode::kInvalidArgument, "the artifact rejected the input: " + Describe(error));
    }
  }
  return output.clone();  // an ordinary tensor, usable outside inference mode
}

void Model::Submit(Input input, Completion done, std::optional<Clock::time_point> deadline) {
  Queue(std::nullopt, std::move(input), std::move(done), deadline, /*reserved=*/false);
}

void Model::Queue(std::optional<RequestId> id, Input input, Completion done, std::optional<Clock::time_point> deadline,
                  bool reserved) {
  CheckInput(input, metadata_.preprocessing.crop);
  const auto bytes = InputBytes(input);
  const bool large = InputPixels(input) > kOffWorkerPixels;
  bool helpers = false;  // whether the others would take it (see NextBatch)
  {
    std::lock_guard lock(mutex_);
    if (disposed_) throw Error(ErrorCode::kDisposed, "the model was disposed");
    if (!reserved && Waiting() >= static_cast<size_t>(options_.max_queue)) {
      statistics_.Rejected(1);
      throw Error(ErrorCode::kQueueFull, "the queue is full (" + std::to_string(options_.max_queue) +
                                             " requests waiting; see " + Named("max_queue") + ")");
    }
    Request request{id ? *id : next_id_++, std::move(input), std::move(done), Clock::now(), deadline, bytes};
    statistics_.Accepted();
    pending_bytes_ += bytes;
    if (large) {
      large_.push_back(std::move(request));
    } else {
      helpers = Enqueue(std::move(request));
    }
  }
  if (large) {
    large_wake_.notify_one();
  } else {
    lead_wake_.notify_one();
    if (helpers) helper_wake_.notify_one();
  }
}

bool Model::Enqueue(Request request) {
  queue_.push_back(std::move(request));
  return lead_running_ || queue_.size() > 1 || reserved_ > 0;
}

void Model::PreprocessorMain() {
  // One thread: the workers keep the other cores.
  TakeLibtorchThreadCount();
  omp_set_num_threads(1);
  c10::InferenceMode inference_mode;
  std::unique_lock lock(mutex_);
  while (true) {
    large_wake_.wait(lock, [&] { return disposed_ || !large_.empty(); });
    if (disposed_) return;  // Dispose answered the ones left
    auto request = std::move(large_.front());
    large_.pop_front();
    preprocessing_ = 1;
    preprocessing_id_ = request.id;
    preprocessing_withdrawn_ = false;
    lock.unlock();
    std::optional<Error> failure;
    if (request.deadline && *request.deadline <= Clock::now()) {
      failure = Error(ErrorCode::kTimeout, "the deadline passed while the request was queued");
    } else {
      try {
        const auto crop = metadata_.preprocessing.crop;
        auto tensor = at::empty({3, crop, crop}, at::kFloat);
        request.decoding = PrepareInto(request.input, metadata_.preprocessing, tensor);
        request.input = std::move(tensor);
      } catch (const Error& error) {
        failure = error;
      } catch (const std::exception& error) {
        failure = Error(ErrorCode::kInternal, "preprocessing failed: " + Describe(error));
      }
    }
    lock.lock();
    preprocessing_ = 0;
    if (!failure && preprocessing_withdrawn_) failure = Withdrawn();
    if (!failure && disposed_) failure = Error(ErrorCode::kDisposed, "the model was disposed before this request ran");
    if (failure) {
      lock.unlock();
      Finish(request, Outcome{*failure, {}}, /*was_running=*/false);
    } else {
      const bool helpers = Enqueue(std::move(request));
      lock.unlock();
      lead_wake_.notify_one();
      if (helpers) helper_wake_.notify_one();
    }
    lock.lock();
  }
}

Reservation Model::Reserve(int64_t bytes, int64_t count, std::optional<Clock::time_point> deadline) {
  if (count < 1 || bytes < 0) throw Error(ErrorCode::kInvalidArgument, "reserve a place for at least one request");
  RequestId id;
  {
    std::lock_guard lock(mutex_);
    if (disposed_) throw Error(ErrorCode::kDisposed, "the model was disposed");
    if (count > options_.max_queue) {
      throw Error(ErrorCode::kTooLarge, std::to_string(count) + " images in one call; the queue holds " +
                                            std::to_string(options_.max_queue) + " (" + Named("max_queue") + ")");
    }
    // One image alone may take the whole budget, and more: refusing it could never succeed.
    if (count > 1 && bytes > options_.max_pending_bytes) {
      throw Error(ErrorCode::kTooLarge, std::to_string(count) + " images in one call decode to " +
                                            std::to_string(bytes >> 20) + " MiB, over " + Named("max_pending_bytes") +
                                            " (" +
                                            std::to_string(options_.max_pending_bytes >> 20) + " MiB)");
    }
    if (Waiting() + static_cast<size_t>(count) > static_cast<size_t>(options_.max_queue)) {
      statistics_.Rejected(count);
      throw Error(ErrorCode::kQueueFull, "the queue is full (" + std::to_string(options_.max_queue) +
                                             " requests waiting; see " + Named("max_queue") + ")");
    }
    if (pending_bytes_ > 0 && pending_bytes_ + bytes > options_.max_pending_bytes) {
      statistics_.Rejected(count);
      throw Error(ErrorCode::kQueueFull, std::to_string(pending_bytes_ >> 20) +
                                             " MiB of decoded images are already waiting (" +
                                             Named("max_pending_bytes") + "); retry later");
    }
    reserved_ += count;
    pending_bytes_ += bytes;
    id = next_id_++;
  }
  return Reservation(shared_from_this(), id, count, bytes, deadline);
}

void Model::Unreserve(int64_t count, int64_t bytes) {
  {
    std::lock_guard lock(mutex_);
    reserved_ = std::max<int64_t>(0, reserved_ - count);
    pending_bytes_ -= bytes;
    if (reserved_ > 0) return;
  }
  lead_wake_.notify_one();  // if it is holding a batch open for this company, it need not wait any longer
}

bool Model::Withdraw(RequestId id) {
  std::vector<Request> withdrawn;
  bool marked = false;
  {
    std::lock_guard lock(mutex_);
    for (auto* waiting : {&queue_, &large_}) {
      for (auto request = waiting->begin(); request != waiting->end();) {
        if (request->id != id) {
          ++request;
          continue;
        }
        withdrawn.push_back(std::move(*request));
        request = waiting->erase(request);
      }
    }
    if (preprocessing_ != 0 && preprocessing_id_ == id && !preprocessing_withdrawn_) {
      preprocessing_withdrawn_ = true;  // answered by the preprocessing thread when it is done with it
      marked = true;
    }
  }
  for (auto& request : withdrawn) Finish(request, Outcome{Withdrawn(), {}}, false);
  return marked || !withdrawn.empty();
}

void Model::Dispose() {
  std::deque<Request> dropped;
  {
    std::lock_guard lock(mutex_);
    if (disposed_) return;
    disposed_ = true;
    dropped.swap(queue_);
    for (auto& request : large_) dropped.push_back(std::move(request));
    large_.clear();
    runner_.reset();  // workers keep their own reference until their batch ends
  }
  lead_wake_.notify_all();
  helper_wake_.notify_all();
  large_wake_.notify_all();
  for (auto& request : dropped) {
    Finish(request, Outcome{Error(ErrorCode::kDisposed, "the model was disposed before this request ran"), {}},
           false);
  }
}

bool Model::disposed() const {
  std::lock_guard lock(mutex_);
  return disposed_;
}

void Model::Join() {
  std::lock_guard lock(join_mutex_);
  if (preprocessor_.joinable() && preprocessor_.get_id() != std::this_thread::get_id()) preprocessor_.join();
  for (auto& worker : workers_) {
    if (worker.joinable() && worker.get_id() != std::this_thread::get_id()) worker.join();
  }
}

void Model::Finish(Request& request, Outcome outcome, bool was_running) {
  {
    std::lock_guard lock(mutex_);
    if (was_running) --inflight_;
    pending_bytes_ -= request.bytes;
    statistics_.Answered(!outcome.error, Milliseconds(Clock::now() - request.submitted));
  }
  // The caller may free what the input refers to as soon as it hears back (a Python tensor whose last
  // reference then lives here would need the GIL to go): let go of it first.
  auto done = std::move(request.done);
  request.input = ImageView{};
  try {
    done(std::move(outcome));
  } catch (...) {
    // A completion must not throw; if one does, the other requests still get theirs.
  }
}

Stats Model::GetStats() const {
  Stats stats;
  std::vector<double> latencies;
  {
    std::lock_guard lock(mutex_);
    stats = statistics_.Snapshot(latencies);
    stats.queued = Queued();
    stats.inflight = inflight_;
    stats.pending_bytes = static_cast<uint64_t>(pending_bytes_);
  }
  stats.workers = static_cast<uint64_t>(options_.workers);
  stats.intra_op_threads = static_cast<uint64_t>(options_.intra_op_threads);
  // Outside the lock: stats() is read on every refusal (Retry-After), and the workers take the same
  // lock for every request.
  Statistics::Percentiles(stats, std::move(latencies));
  return stats;
}

}  // namespace choripan
