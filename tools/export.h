// export.h: `timbre export`, a trained run's weights in the safetensors
// layout, for PyTorch (python/timbre_torch.py rebuilds the three models and
// loads them) and anything else that reads safetensors.
//
// The safetensors layout (huggingface/safetensors, "format"):
//   uint64   N, the header's length in bytes (little-endian)
//   byte     header[N]: a JSON object; each tensor's entry is
//              "name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}
//            with b, e byte offsets into the data that follows the header,
//            and "__metadata__" is an object of string values
//   byte     data: the tensors, row-major, little-endian, back to back
// timbre writes the tensors in name order, the header's JSON compact with
// sorted keys, padded with spaces to a multiple of 8 bytes (so the data is
// 8-byte aligned), the same way the fixture script's Python writer does.
//
// What an export holds:
//   every parameter and batch-norm buffer of the model, by PyTorch's
//   state_dict names (engine/nn.h: "cnn.block1.conv1.weight", ...);
//   "timbre.band_mean" and "timbre.band_std" (rows): the per-band
//   normalisation the model's input gets first, x' = (x - mean) / std
//   (std^2 floored at 1e-12, as in training);
//   __metadata__: "format": "pt", "timbre.model" (rescnn, crnn, parallel),
//   "timbre.config" (the model's JSON configuration, with the batch-norm
//   convention that fixes epsilon), "timbre.labels" (JSON list of class
//   names, the logits' order), "timbre.features" (the feature parameters
//   the input must be made with), "timbre.version".
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/registry.h"

namespace timbre::tools {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major
};

struct SafeTensors {
  std::map<std::string, HostTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// The file's bytes (the layout above). Throws std::invalid_argument for a
// tensor whose data does not match its shape.
std::string safetensors_bytes(const SafeTensors& s);

// Reads and checks a safetensors file of F32 tensors: the header's length
// within the file, valid JSON, every entry's dtype, shape and offsets, the
// tensors covering the data without gaps or overlaps. Throws
// std::runtime_error naming the file and the problem.
SafeTensors read_safetensors(const std::string& path);

// The model's parameters and buffers by name, copied to the host.
SafeTensors model_tensors(const models::Model& model);

// Copies the tensors of `s` into the model's parameters and buffers of the
// same names (what PyTorch's load_state_dict does). Throws
// std::runtime_error listing missing, unexpected and misshapen tensors
// ("timbre.*" entries are not the model's and are skipped).
void load_model_tensors(models::Model& model, const SafeTensors& s);

struct ExportOptions {
  std::string run;                    // a run folder of timbre train
  std::string format = "safetensors";
  std::string out;                    // empty: <run>/model.safetensors
};

// Exports the run's best weights (best.ckpt); returns the file written
// (atomically).
std::string run_export(const ExportOptions& options);

}  // namespace timbre::tools
