// choripan_core: the same core as the Node addon, for pytest and Python callers.
#include <pybind11/eval.h>
#include <torch/extension.h>

#include <algorithm>
#include <future>
#include <limits>
#include <mutex>
#include <vector>

#include "../core/model.h"
#include "../core/sha256.h"

namespace py = pybind11;
using choripan::Error;
using choripan::Model;

namespace {

// About 10 years; a longer timeout would overflow the clock.
constexpr double kLongestTimeoutMs = 3.2e11;

choripan::Outcome Wait(Model& model, choripan::Input input, std::optional<double> timeout_ms) {
  auto promise = std::make_shared<std::promise<choripan::Outcome>>();
  auto future = promise->get_future();
  std::optional<choripan::Clock::time_point> deadline;
  if (timeout_ms && !(*timeout_ms > 0)) {
    throw Error(choripan::Misuse::kRange, "timeout_ms must be positive");
  }
  if (timeout_ms && *timeout_ms < kLongestTimeoutMs) {  // beyond it (inf included): no deadline
    deadline = choripan::Clock::now() + std::chrono::duration_cast<choripan::Clock::duration>(
                                            std::chrono::duration<double, std::milli>(*timeout_ms));
  }
  model.Submit(std::move(input), [promise](choripan::Outcome outcome) { promise->set_value(std::move(outcome)); },
               deadline);
  return future.get();
}

at::Tensor ToTensor(const choripan::Outcome& outcome) {
  if (outcome.error) throw *outcome.error;
  return torch::tensor(outcome.probabilities, torch::kFloat);
}

at::Tensor RequirePixels(const at::Tensor& pixels) {
  if (!pixels.is_cpu() || pixels.scalar_type() != at::kByte || pixels.dim() != 3) {
    throw Error(choripan::Misuse::kType,
                "expected uint8 CPU pixels of shape (height, width, channels), got " +
                    std::string(c10::toString(pixels.scalar_type())) + " " + c10::str(pixels.sizes()));
  }
  return pixels.contiguous();
}

choripan::ImageView View(const at::Tensor& pixels) {
  return {pixels.data_ptr<uint8_t>(), pixels.size(0), pixels.size(1), pixels.size(2)};
}

py::dict StatsDict(const choripan::Stats& s) {
  py::dict d;
#define CHORIPAN_STATS_ITEM(name, js, type) d[#name] = s.name;
  CHORIPAN_STATS(CHORIPAN_STATS_ITEM)
#undef CHORIPAN_STATS_ITEM
  return d;
}

// Model(path, **options): keyword arguments as the core's one option reader reads them, by their
// snake_case names; None is as if not given. Python shows its values as repr() does.
class PythonOptions : public choripan::OptionSource {
 public:
  explicit PythonOptions(const py::kwargs& given) : given_(given) {}

  choripan::Spelling spelling() const override { return choripan::Spelling::kSnake; }
  std::string_view call() const override { return "Model()"; }

  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    for (const auto& [key, value] : given_) names.push_back(key.cast<std::string>());
    return names;
  }

  std::optional<choripan::OptionValue> Get(const std::string& name) const override {
    if (!given_.contains(name) || given_[name.c_str()].is_none()) return std::nullopt;
    const py::object value = given_[name.c_str()];
    if (py::isinstance<py::bool_>(value)) return value.cast<bool>();  // before int: True is an int too
    if (py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value)) {
      try {
        return py::float_(value).cast<double>();
      } catch (const py::error_already_set&) {
        return std::numeric_limits<double>::infinity();  // an int too large for a float is out of any range
      }
    }
    if (py::isinstance<py::str>(value)) return value.cast<std::string>();
    return choripan::OptionValue{};
  }

  std::string Label(const std::string& name) const override { return name; }

  std::string Received(const std::string& name) const override {
    const py::object value = given_[name.c_str()];
    auto shown = py::repr(value).cast<std::string>();
    if (shown.size() > 80) shown = shown.substr(0, 80) + "…";
    return shown + " of type " + py::type::of(value).attr("__name__").cast<std::string>();
  }

 private:
  const py::kwargs& given_;
};

// Models alive in this interpreter, disposed by an atexit hook: worker threads must be joined before
// the interpreter and libtorch's statics are torn down.
std::mutex live_mutex;
std::vector<std::weak_ptr<Model>> live_models;

std::shared_ptr<Model> Track(std::shared_ptr<Model> model) {
  {
    std::lock_guard lock(live_mutex);
    std::erase_if(live_models, [](const auto& weak) { return weak.expired(); });
    live_models.push_back(model);
  }
  // Python drops its last reference with the GIL held, and ~Model joins the workers, which may need
  // the GIL to release the tensors they hold: release it for the join.
  return std::shared_ptr<Model>(model.get(), [owner = model](Model*) mutable {
    if (PyGILState_Check()) {
      py::gil_scoped_release release;
      owner.reset();
    } else {
      owner.reset();
    }
  });
}

void DisposeAll() {
  std::vector<std::shared_ptr<Model>> models;
  {
    std::lock_guard lock(live_mutex);
    for (const auto& weak : live_models) {
      if (auto model = weak.lock()) models.push_back(std::move(model));
    }
    live_models.clear();
  }
  for (auto& model : models) {
    model->Dispose();
    model->Join();
  }
}

}  // namespace

PYBIND11_MODULE(choripan_core, m) {
  m.doc() = "choripan's native core: load an artifact, preprocess, batch and run it through libtorch.";

  // A bad call is raised as Python's own functions raise one, TypeError or ValueError, and is an Error
  // all the same (one `except choripan_core.Error` and one `.code` for every failure), as the Node
  // binding throws a TypeError or a RangeError that is a ChoripanError.
  py::exec(R"(
class Error(RuntimeError):
    """A choripan failure with a stable code (E_MODEL_LOAD, E_QUEUE_FULL, …), as in the Node package."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ChoripanTypeError(Error, TypeError):
    """A bad call (E_INVALID_ARGUMENT): an argument or option of another type, name or form."""


class ChoripanValueError(Error, ValueError):
    """A bad call (E_INVALID_ARGUMENT): a value of the right type out of its range."""
)", m.attr("__dict__"));
  // The one mapping from the core's errors to Python's classes: the kind of a bad call decides it.
  static py::object error_type = m.attr("Error");
  static py::object type_error_type = m.attr("ChoripanTypeError");
  static py::object value_error_type = m.attr("ChoripanValueError");
  py::register_exception_translator([](std::exception_ptr pointer) {
    try {
      if (pointer) std::rethrow_exception(pointer);
    } catch (const Error& error) {
      const auto& type = error.misuse() == choripan::Misuse::kType    ? type_error_type
                         : error.misuse() == choripan::Misuse::kRange ? value_error_type
                                                                      : error_type;
      PyErr_SetObject(type.ptr(), py::make_tuple(std::string(choripan::CodeName(error.code())), error.what()).ptr());
    }
  });

  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def(py::init([](const std::string& path, const py::kwargs& kwargs) {
             const auto options = choripan::ReadOptions(PythonOptions(kwargs));
             py::gil_scoped_release release;
             return Track(Model::Load(path, options));
           }),
           py::arg("path"),
           "Model(path, *, max_batch, max_delay_ms, max_queue, workers, intra_op_threads, max_pending_bytes, "
           "device, warmup): the options and defaults of the Node package (native/core/vocabulary.json).")
      .def_property_readonly("metadata",
                             [](const Model& model) {
                               return py::module_::import("json").attr("loads")(model.metadata().document);
                             })
      .def_property_readonly("labels", [](const Model& model) { return model.metadata().labels; })
      .def_property_readonly("path", &Model::path)
      .def_property_readonly(
          "lone_batch",
          [](const Model& model) -> py::object {
            const auto chosen = model.lone_batch();
            if (!chosen) return py::none();
            return py::dict(py::arg("model") = chosen->model, py::arg("single_ms") = chosen->single_ms,
                            py::arg("batched_ms") = chosen->batched_ms);
          },
          "Which compiled model of a package runs a batch of one (and of two), as the warm-up timed them (docs/runtime.md).")
      .def(
          "forward",
          [](Model& model, const at::Tensor& batch) {
            py::gil_scoped_release release;
            return model.Forward(batch);
          },
          py::arg("batch"), "Preprocessed float32 [N, 3, H, W] → probabilities [N, classes], on this thread.")
      .def(
          "preprocess",
          [](Model& model, const at::Tensor& pixels) {
            auto contiguous = RequirePixels(pixels);
            py::gil_scoped_release release;
            return choripan::Preprocess(View(contiguous), model.metadata().preprocessing);
          },
          py::arg("pixels"), "uint8 (height, width, channels) → float32 [3, crop, crop].")
      .def(
          "predict",
          [](Model& model, const at::Tensor& pixels, std::optional<double> timeout_ms) {
            auto contiguous = RequirePixels(pixels);
            py::gil_scoped_release release;
            return ToTensor(Wait(model, View(contiguous), timeout_ms));
          },
          py::arg("pixels"), py::kw_only(), py::arg("timeout_ms") = py::none(),
          "Decoded uint8 pixels → probabilities [classes], through the queue and the batcher.")
      .def(
          "predict_jpeg",
          [](Model& model, py::bytes data, int64_t width, int64_t height, std::optional<double> timeout_ms) {
            std::string_view bytes = data;  // `data` outlives the wait below
            py::gil_scoped_release release;
            choripan::JpegView jpeg{{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, height, width};
            return ToTensor(Wait(model, jpeg, timeout_ms));
          },
          py::arg("data"), py::arg("width"), py::arg("height"), py::kw_only(), py::arg("timeout_ms") = py::none(),
          "JPEG bytes (width × height, as its header says) → probabilities [classes], decoded by the core as "
          "Node's predict() decodes the common JPEG; through the queue and the batcher.")
      .def(
          "predict_preprocessed",
          [](Model& model, const at::Tensor& input, std::optional<double> timeout_ms) {
            py::gil_scoped_release release;
            return ToTensor(Wait(model, input.contiguous(), timeout_ms));
          },
          py::arg("input"), py::kw_only(), py::arg("timeout_ms") = py::none(),
          "A preprocessed float32 [3, crop, crop] tensor → probabilities, through the batcher.")
      .def(
          "predict_many",
          [](Model& model, const std::vector<at::Tensor>& inputs) {
            // Submits everything before waiting, so that the scheduler can batch it.
            std::vector<std::future<choripan::Outcome>> futures;
            std::vector<at::Tensor> owned;
            for (const auto& input : inputs) owned.push_back(input.contiguous());
            py::gil_scoped_release release;
            // A place for each first, so that the worker that takes the first one waits for the rest;
            // what is left of them goes back when the reservations do, whatever happens.
            std::vector<choripan::Reservation> reservations;
            for (const auto& input : owned) reservations.push_back(model.Reserve(static_cast<int64_t>(input.nbytes())));
            for (size_t i = 0; i < owned.size(); ++i) {
              auto promise = std::make_shared<std::promise<choripan::Outcome>>();
              futures.push_back(promise->get_future());
              reservations[i].Submit(owned[i], [promise](choripan::Outcome o) { promise->set_value(std::move(o)); });
            }
            std::vector<at::Tensor> results;
            for (auto& future : futures) results.push_back(ToTensor(future.get()));
            return results;
          },
          py::arg("inputs"), "Preprocessed tensors submitted together; returns their probabilities in order.")
      .def("stats", [](const Model& model) { return StatsDict(model.GetStats()); })
      .def("dispose", [](Model& model) {
        model.Dispose();
        py::gil_scoped_release release;
        model.Join();
      });

  m.def(
      "decode_jpeg",
      [](py::bytes data, int64_t width, int64_t height) {
        std::string_view bytes = data;
        choripan::DecodedJpeg decoded;
        {
          py::gil_scoped_release release;
          decoded = choripan::DecodeJpeg(
              {{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, height, width});
        }
        const auto& image = decoded.image;
        return torch::from_blob(decoded.pixels.data(), {image.height, image.width, image.channels}, at::kByte).clone();
      },
      py::arg("data"), py::arg("width"), py::arg("height"),
      "A JPEG as the core decodes it for predict(): uint8 (height, width, 1 or 3). width and height: its frame's, "
      "as its header says.");
  m.def(
      "_sha256",
      [](py::bytes data, bool portable) { return choripan::Sha256Hex(std::string_view(data), portable); },
      py::arg("data"), py::arg("portable") = false,
      "The core's SHA-256 of `data` in hex (portable: without the CPU's SHA extensions); for tests.");
  m.def("cuda_available", [] { return torch::cuda::is_available(); });
  m.def("_dispose_all", [] {
    py::gil_scoped_release release;
    DisposeAll();
  });
  py::module_::import("atexit").attr("register")(m.attr("_dispose_all"));
}
