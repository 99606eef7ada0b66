// One call's way into a model's queue: places reserved before anything is decoded, each used by one
// submitted input, and given back when the call is done with them (RAII). Also what a request is answered
// with (Outcome), and how (Completion).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "errors.h"
#include "input.h"
#include "statistics.h"

namespace choripan {

class Model;

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
  // A JPEG the core decoded (within queue_ms): from submission to the start of its decoding, and how
  // long that took; nullopt for pixels and tensors, decoded before they came.
  std::optional<double> decode_start_ms = std::nullopt;
  std::optional<double> decode_ms = std::nullopt;
};

// Called exactly once per submitted request, from a worker thread, or from the thread that cancels or
// disposes. It must not throw and must not call back into the model.
using Completion = std::function<void(Outcome)>;

// `count` places in a model's queue and `bytes` of decoded pixels between them, admitted together by
// Model::Reserve while the caller decodes its inputs: a worker holding a batch open waits for them, and
// nothing is decoded for a call the queue has no room for. Each Submit uses one place; whatever is left
// goes back with Release, Cancel or the destructor. Used from one thread at a time; it keeps its model
// alive.
class Reservation {
 public:
  Reservation() = default;  // holds nothing
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { Release(); }

  // Places not used yet.
  int64_t places() const { return places_; }

  // Queues `input` in one of the places, under the reservation's deadline; the place ends here whatever
  // the model answers (the last one takes the bytes left with it). An ImageView's memory must stay valid
  // until `done` runs. Throws Error(kAborted) once cancelled, Error(kInvalidArgument) when no place is
  // left or the input is malformed, Error(kDisposed); `done` is then never called.
  void Submit(Input input, Completion done);

  // Gives back the places not used, and their bytes; what was submitted still runs. Idempotent.
  void Release() noexcept;

  // Release, and withdraw what was submitted through it and has not reached a worker: those complete
  // with kAborted (see Model::Withdraw). Later submissions are refused. False when nothing was withdrawn.
  bool Cancel();

 private:
  friend class Model;
  Reservation(std::shared_ptr<Model> model, RequestId id, int64_t places, int64_t bytes,
              std::optional<Clock::time_point> deadline)
      : model_(std::move(model)), id_(id), places_(places), bytes_(bytes), deadline_(deadline) {}

  std::shared_ptr<Model> model_;
  RequestId id_ = 0;  // every request submitted through it carries it
  int64_t places_ = 0;
  int64_t bytes_ = 0;  // of the places left: 0 once none is
  std::optional<Clock::time_point> deadline_;
  bool submitted_ = false;
  bool cancelled_ = false;
};

}  // namespace choripan
