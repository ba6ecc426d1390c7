// serialize.h: named tensors on disk, written atomically, and the training
// checkpoints built on them (docs/checkpoints.md has the byte-by-byte format).
//
// Three layers, bottom to top:
//
// 1. AtomicFile: replaces a file so that a crash at any moment (SIGKILL,
//    power loss) leaves either the old file or the complete new one, never
//    a mix. The bytes go to a temporary file in the same directory, which is
//    fsync'ed and then renamed onto the target (rename(2) is atomic within
//    one file system); finally the directory is fsync'ed so that the rename
//    itself survives a power cut.
//
// 2. Tensor files: a magic number, a format version, a JSON header (each
//    tensor's name, dtype, shape, byte offset, byte count and CRC-32, plus
//    the caller's metadata document), then the raw little-endian data, each
//    tensor aligned to 64 bytes. Every byte of the file is checked on load:
//    the header by its own CRC-32, the data by the per-tensor CRC-32s, the
//    padding by being zero, the length by the header's promise. Errors
//    (SerializeError) name the file and what is wrong with it.
//
// 3. Checkpoints: a Module's parameters and buffers, the Adam state (step,
//    first and second moments, hyper-parameters), a Generator's (seed,
//    offset), the model's identity (registry name + config JSON) and the
//    caller's own JSON (epoch, early stopping, normalisation statistics...).
//    Restoring into fresh objects and training on gives bit-identical
//    results to never having stopped.
//
//   TrainingState s{"rescnn", model_config, &model, &adam, adam_settings, &gen};
//   s.extra = {{"epoch", 7}, {"best_val_acc", 0.61}};
//   save_checkpoint("run/last.ckpt", s);          // atomic
//   ...
//   load_checkpoint("run/last.ckpt", s);          // refuses another model
//   read_checkpoint_metadata("run/best.ckpt");    // header only, for tools
//
// Host code only: tensors are copied to the host (cudaMemcpy) to be written
// and copied back into the existing device storage on restore.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tensor.h"
#include "kernels/optim.cuh"

namespace timbre {

class Module;
class Adam;
class Generator;

// Every failure to save or load: the message names the file and the problem
// ("cannot load 'run/last.ckpt': truncated: ...").
class SerializeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ------------------------------ atomic writes ------------------------------
// Usage: AtomicFile f(path); f.write(...); ...; f.commit();
// Until commit() the target is untouched; an exception or a destructor
// without commit removes the temporary file. A process killed before commit
// leaves a stray "<name>.timbre-tmp-XXXXXXXXXXXX" behind; the next AtomicFile
// for the same target deletes such strays once no live writer holds them
// (each writer holds an flock(2) on its temporary file, released by the
// kernel when the writer dies).
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  // fsync the temporary file, rename it onto the target, fsync the directory.
  void commit();
  const std::string& temp_path() const { return temp_; }

 private:
  std::string path_, dir_, temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// For the crash tests only: called at each step of AtomicFile ("created",
// "data" after each write, "synced", "renamed", "committed"); a test kills
// its own process there to simulate a crash at exactly that moment.
using AtomicWriteHook = void (*)(const char* stage);
void set_atomic_write_hook(AtomicWriteHook hook);

// ------------------------------ tensor files -------------------------------
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct TensorEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};

struct TensorFileHeader {
  uint32_t version = 0;
  std::vector<TensorEntry> tensors;  // in file order
  nlohmann::json metadata;           // the caller's document
  uint64_t data_offset = 0;          // where the data section starts
  uint64_t data_bytes = 0;
};

// Names must be unique and non-empty; tensors defined. Written atomically.
void save_tensor_file(const std::string& path, const NamedTensors& tensors,
                      const nlohmann::json& metadata = nlohmann::json::object());
// Reads and verifies everything; tensors come back on the device, in file order.
NamedTensors load_tensor_file(const std::string& path, nlohmann::json* metadata = nullptr);
// Reads and verifies only the fixed prefix and the JSON header (and that the
// file is as long as the header says); the data is not read.
TensorFileHeader read_tensor_file_header(const std::string& path);

// The format version this build writes and reads.
constexpr uint32_t kTensorFileVersion = 1;

// ------------------------------- checkpoints -------------------------------
// Adam's hyper-parameters. Adam does not expose them, so the caller passes
// the ones it constructed Adam with; they are saved, and a restore refuses a
// checkpoint whose hyper-parameters differ (the resumed run would diverge).
struct AdamSettings {
  kernels::AdamConfig config;
  double decay = 0;
};

// The live objects a checkpoint captures or restores. model is required;
// adam and generator may be null (evaluation loads weights only).
struct TrainingState {
  std::string model_name;  // the models/ registry name, e.g. "rescnn"
  nlohmann::json model_config = nlohmann::json::object();
  Module* model = nullptr;
  Adam* adam = nullptr;
  AdamSettings adam_settings;
  Generator* generator = nullptr;
  // The caller's document: epoch, step, early-stopping state, normalisation
  // statistics, feature parameters, timbre version... Saved as is; replaced
  // by the checkpoint's on load.
  nlohmann::json extra = nlohmann::json::object();
};

// Captures the state and writes it atomically.
void save_checkpoint(const std::string& path, const TrainingState& state);

// Verifies the file, checks that it belongs to state.model_name/model_config
// (else throws naming both), that it has every parameter and buffer of the
// model with the same shape and dtype and nothing else, that it holds Adam
// state if state.adam is set (with the same hyper-parameters); only then
// copies everything in (all or nothing) and sets state.extra. Returns the
// checkpoint's metadata document.
nlohmann::json load_checkpoint(const std::string& path, TrainingState& state);

// The checkpoint's metadata document, from the header alone (cheap):
//   {"kind": "timbre-checkpoint", "checkpoint_version": 1,
//    "model": {"name", "config", "parameters": [...], "buffers": [...]},
//    "adam": {"step", "lr", "beta1", "beta2", "eps", "form", "decay"} (if saved),
//    "generator": {"seed", "offset"} (if saved), "extra": {...}}
// Throws SerializeError for a tensor file that is not a checkpoint.
nlohmann::json read_checkpoint_metadata(const std::string& path);

}  // namespace timbre
