#include "reservation.h"

#include <algorithm>
#include <utility>

#include "model.h"

namespace choripan {

Reservation::Reservation(Reservation&& other) noexcept
    : model_(std::move(other.model_)),
      id_(other.id_),
      places_(std::exchange(other.places_, 0)),
      bytes_(std::exchange(other.bytes_, 0)),
      deadline_(other.deadline_),
      submitted_(other.submitted_),
      cancelled_(other.cancelled_) {}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    model_ = std::move(other.model_);
    id_ = other.id_;
    places_ = std::exchange(other.places_, 0);
    bytes_ = std::exchange(other.bytes_, 0);
    deadline_ = other.deadline_;
    submitted_ = other.submitted_;
    cancelled_ = other.cancelled_;
  }
  return *this;
}

void Reservation::Submit(Input input, Completion done) {
  if (cancelled_) throw Error(ErrorCode::kAborted, "the request was withdrawn before it ran");
  if (places_ == 0) {
    throw Error(ErrorCode::kInvalidArgument, "no place is left in this reservation: reserve one for each input");
  }
  // The place ends here. Its share of the bytes is what the input holds (the caller reserved at most
  // that much for it), and the last place takes whatever is left.
  const int64_t bytes = places_ == 1 ? bytes_ : std::min(bytes_, InputBytes(input));
  --places_;
  bytes_ -= bytes;
  submitted_ = true;
  model_->Unreserve(1, bytes);
  model_->Queue(id_, std::move(input), std::move(done), deadline_, /*reserved=*/true);
}

void Reservation::Release() noexcept {
  if (places_ == 0) return;
  model_->Unreserve(places_, bytes_);
  places_ = 0;
  bytes_ = 0;
}

bool Reservation::Cancel() {
  Release();
  cancelled_ = true;
  return submitted_ && model_->Withdraw(id_);
}

}  // namespace choripan
