// device.h: which device timbre computes on, and what it says about it.
//
// Every command issues its device work from the main thread, so choosing the
// device once, before the command starts, places all of it:
//   timbre --device 1 train ...      (or: timbre train --device 1 ...)
// CUDA_VISIBLE_DEVICES narrows and renumbers the devices first, as the CUDA
// runtime does (simcuda follows the same rule for its one device, 0).
#pragma once

#include <string>

namespace timbre::tools {

// Makes `device` current for this thread. Throws UsageError (tools/train.h)
// naming the devices there are when it does not exist.
void select_device(int device);

// One line about the current device: "device 0: NVIDIA H200 (compute 9.0,
// 132 SMs, 139.8 GiB)" or simcuda's description of the CPU.
std::string device_summary();

// `timbre info`: every visible device, the backend and the launch defaults.
int run_info();

// The backend line of `timbre --version`, without touching a device: the
// flavour, the CUDA versions (toolkit built against, runtime, driver) or
// simcuda's workers.
std::string backend_description();

}  // namespace timbre::tools
