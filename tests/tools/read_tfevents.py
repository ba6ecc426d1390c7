#!/usr/bin/env python3
"""Reads TensorBoard event files without timbre's code, for the tests.

    read_tfevents.py DIR      prints JSON: {"<file relative to DIR>": [
                                  {"wall_time": w, "step": s, "file_version": v,
                                   "values": [{"tag": t, "simple_value": x}]}, ...]}

An independent reader of what tools/tensorboard.cpp writes: the record
framing and its masked CRC-32C are checked with the crc32c package
(Debian: python3-crc32c), and the Event messages are decoded by the protobuf
runtime (Debian: python3-protobuf) from a schema declared here with the
field numbers of TensorFlow's event.proto and summary.proto. Exits 1 naming
the file and the offset of the first bad record.
"""
import json
import os
import struct
import sys

import crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def message_classes():
    f = descriptor_pb2.FileDescriptorProto(name="tfevents_subset.proto", package="subset",
                                           syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name

    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    message("Value", [("tag", 1, T.TYPE_STRING, opt, None),
                      ("simple_value", 2, T.TYPE_FLOAT, opt, None)])
    message("Summary", [("value", 1, T.TYPE_MESSAGE, rep, ".subset.Value")])
    message("Event", [("wall_time", 1, T.TYPE_DOUBLE, opt, None),
                      ("step", 2, T.TYPE_INT64, opt, None),
                      ("file_version", 3, T.TYPE_STRING, opt, None),
                      ("summary", 5, T.TYPE_MESSAGE, opt, ".subset.Summary")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    event = pool.FindMessageTypeByName("subset.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(event)
    return message_factory.MessageFactory(pool).GetPrototype(event)


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read(path, Event):
    data = open(path, "rb").read()
    events, at = [], 0
    while at < len(data):
        def bad(why):
            sys.exit(f"{path}: record at byte {at}: {why}")
        if len(data) - at < 12:
            bad("truncated header")
        header = data[at:at + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[at + 8:at + 12])
        if hcrc != masked(crc32c.crc32c(header)):
            bad("length CRC mismatch")
        body = data[at + 12:at + 12 + n]
        if len(body) != n or len(data) < at + 16 + n:
            bad("truncated data")
        (bcrc,) = struct.unpack("<I", data[at + 12 + n:at + 16 + n])
        if bcrc != masked(crc32c.crc32c(body)):
            bad("data CRC mismatch")
        e = Event()
        e.ParseFromString(body)
        if e.SerializeToString() != body:
            bad("not in canonical protobuf encoding (unknown fields?)")
        events.append({"wall_time": e.wall_time, "step": e.step, "file_version": e.file_version,
                       "values": [{"tag": v.tag, "simple_value": v.simple_value}
                                  for v in e.summary.value]})
        at += 16 + n
    return events


def main():
    root = sys.argv[1]
    Event = message_classes()
    out = {}
    for d, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if ".tfevents." in name:
                p = os.path.join(d, name)
                out[os.path.relpath(p, root)] = read(p, Event)
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
