// tensorboard.h: training curves as TensorBoard event files, so that
// `tensorboard --logdir runs` shows every run live while it trains.
//
// The format (TensorFlow's event files, read by TensorBoard):
//   a file is a sequence of records; each record is
//     uint64  length of data            (little-endian)
//     uint32  masked CRC-32C of the 8 length bytes
//     byte    data[length]              (one serialized Event message)
//     uint32  masked CRC-32C of data
//   masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32)
//   CRC-32C is the Castagnoli polynomial 0x1EDC6F41, reflected, init and
//   final xor 0xFFFFFFFF (Boost.CRC computes it).
// The messages, in protocol-buffer wire format (field number, wire type):
//   Event    { double wall_time = 1; int64 step = 2; string file_version = 3;
//              Summary summary = 5; }
//   Summary  { repeated Value value = 1; }
//   Value    { string tag = 1; float simple_value = 2; }
// A file starts with an Event holding only wall_time and file_version
// "brain.Event:2"; each scalar then is an Event with its wall time, step and
// a Summary of one Value. These five fields are all timbre writes, so they
// are encoded here (varint, fixed64, fixed32 and length-delimited fields)
// rather than through generated protobuf code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace timbre::tools {

struct TensorBoardScalar {
  std::string tag;
  int64_t step = 0;
  float value = 0;
  double wall_time = 0;  // seconds since the Unix epoch
};

// The masked CRC-32C of the TFRecord framing.
uint32_t tfrecord_masked_crc(const void* data, size_t n);

// One framed record around `data`.
std::string tfrecord(const std::string& data);

// A whole event file: the file_version event at `start_time`, then one event
// per scalar, in order. The same scalars give the same bytes, and more
// scalars appended give a file that starts with the earlier one: rewriting
// the file after each epoch only appends (update_event_file).
std::string tensorboard_events(double start_time, const std::vector<TensorBoardScalar>& scalars);

// The file name TensorBoard looks for: "events.out.tfevents.<start>.timbre".
std::string tensorboard_file_name(double start_time);

// Makes the file at `path` hold `content`. When the file holds a prefix of
// it (the usual case: the events of earlier epochs), only the rest is
// appended and flushed to disk, which is what a reader that keeps the file
// open (TensorBoard does) expects; otherwise (no file, or a torn last
// record after a kill) the file is replaced atomically. Throws
// std::runtime_error naming the file on a failed write.
void update_event_file(const std::string& path, const std::string& content);

}  // namespace timbre::tools
