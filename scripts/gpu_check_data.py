#!/usr/bin/env python3
"""Synthetic labelled clips for scripts/gpu_check.sh's end-to-end stage.

    python3 scripts/gpu_check_data.py OUTDIR [--classes 4] [--clips 24]
                                             [--seconds 4] [--rate 22050] [--seed 1]

Writes OUTDIR/<class>/<class>_NNN.wav: mono 16-bit WAV clips, one folder
per class, the layout `timbre extract --dataset folder` reads. Each class is
a different kind of sound, so that a network can tell them apart after a
few epochs; within a class pitch, tempo, level and noise vary from clip to
clip (seeded, so the same arguments give the same bytes):

    tones    a melody of single sine notes with an attack/decay envelope
    chords   triads of harmonic notes, one chord per beat
    noise    noise through a resonant band-pass filter whose band drifts
    pulses   decaying noise bursts on a beat over a low drone
    sweeps   sine sweeps (glissandi) up and down
    buzz     a sawtooth-like buzz with vibrato

Standard library only (the GPU machine it runs on has no extra packages and
no network). Clips are made in parallel processes: pure-Python synthesis
costs about a tenth of a second per second of audio.
"""
import argparse
import concurrent.futures
import math
import os
import random
import struct
import sys
import wave

KINDS = ("tones", "chords", "noise", "pulses", "sweeps", "buzz")


def midi_hz(note):
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def envelope(t, length, attack=0.01, release=0.05):
    """Linear attack, exponential decay, linear release over a note of `length` s."""
    if t < attack:
        return t / attack
    tail = length - t
    decay = math.exp(-3.0 * (t - attack) / max(length, 1e-3))
    return decay * (tail / release if tail < release else 1.0)


def synth_tones(rng, n, rate):
    out = [0.0] * n
    beat = rng.uniform(0.15, 0.4)
    base = rng.randint(60, 76)
    scale = (0, 2, 4, 5, 7, 9, 11, 12)
    step = int(beat * rate)
    for start in range(0, n, step):
        hz = midi_hz(base + rng.choice(scale))
        w = 2.0 * math.pi * hz / rate
        for i in range(start, min(n, start + step)):
            t = (i - start) / rate
            out[i] += math.sin(w * (i - start)) * envelope(t, beat)
    return out


def synth_chords(rng, n, rate):
    out = [0.0] * n
    beat = rng.uniform(0.4, 0.8)
    root = rng.randint(45, 60)
    step = int(beat * rate)
    for start in range(0, n, step):
        r = root + rng.choice((0, 3, 5, 7, -2))
        minor = rng.random() < 0.5
        notes = (r, r + (3 if minor else 4), r + 7)
        # Fundamental and two overtones per note: 9 partials.
        partials = [(2.0 * math.pi * midi_hz(m) * h / rate, 0.5 / h) for m in notes for h in (1, 2, 3)]
        for i in range(start, min(n, start + step)):
            k = i - start
            env = envelope(k / rate, beat, attack=0.03, release=0.1)
            s = 0.0
            for w, a in partials:
                s += a * math.sin(w * k)
            out[i] = s * env * 0.4
    return out


def synth_noise(rng, n, rate):
    # A two-pole resonator driven by white noise; its centre drifts slowly.
    out = [0.0] * n
    lo, hi = sorted((rng.uniform(200, 4000), rng.uniform(200, 4000)))
    r = 0.995 - rng.uniform(0, 0.01)
    y1 = y2 = 0.0
    for i in range(n):
        if i % 256 == 0:
            f = lo + (hi - lo) * (0.5 + 0.5 * math.sin(2 * math.pi * i / n))
            c = 2.0 * r * math.cos(2.0 * math.pi * f / rate)
        y = rng.gauss(0.0, 1.0) * (1 - r) + c * y1 - r * r * y2
        y2, y1 = y1, y
        out[i] = y
    return out


def synth_pulses(rng, n, rate):
    out = [0.0] * n
    beat = rng.uniform(0.2, 0.5)
    drone = 2.0 * math.pi * midi_hz(rng.randint(33, 45)) / rate
    step = int(beat * rate)
    decay = rng.uniform(20, 60)
    for i in range(n):
        k = i % step
        burst = rng.uniform(-1, 1) * math.exp(-decay * k / rate)
        out[i] = burst + 0.3 * math.sin(drone * i)
    return out


def synth_sweeps(rng, n, rate):
    out = [0.0] * n
    period = rng.uniform(0.5, 1.5)
    lo, hi = rng.uniform(150, 400), rng.uniform(800, 3000)
    phase = 0.0
    for i in range(n):
        x = (i / rate) / period
        tri = 2.0 * abs(x - math.floor(x + 0.5))  # 0..1..0
        hz = lo * (hi / lo) ** tri
        phase += 2.0 * math.pi * hz / rate
        out[i] = math.sin(phase)
    return out


def synth_buzz(rng, n, rate):
    out = [0.0] * n
    hz0 = midi_hz(rng.randint(40, 64))
    vib_hz, vib_depth = rng.uniform(4, 7), rng.uniform(0.005, 0.02)
    phase = 0.0
    for i in range(n):
        hz = hz0 * (1.0 + vib_depth * math.sin(2 * math.pi * vib_hz * i / rate))
        phase += hz / rate
        saw = 2.0 * (phase - math.floor(phase + 0.5))
        out[i] = saw * 0.6
    return out


SYNTHS = {"tones": synth_tones, "chords": synth_chords, "noise": synth_noise,
          "pulses": synth_pulses, "sweeps": synth_sweeps, "buzz": synth_buzz}


def write_wav(path, samples, rate):
    peak = max(1e-9, max(abs(s) for s in samples))
    scale = 32767 * 0.8 / peak
    frames = struct.pack("<%dh" % len(samples), *(int(s * scale) for s in samples))
    tmp = path + ".tmp"
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    os.replace(tmp, path)  # a half-written clip never looks like a clip


def make_clip(job):
    kind, index, path, seconds, rate, seed = job
    # One generator per clip, seeded from (seed, kind, index): the result
    # does not depend on how clips are spread over processes.
    rng = random.Random(f"{seed}/{kind}/{index}")
    n = int(seconds * rate)
    samples = SYNTHS[kind](rng, n, rate)
    # A little background noise and a random level, so no two clips of a
    # class are scaled copies of each other.
    level = rng.uniform(0.5, 1.0)
    samples = [level * s + rng.gauss(0.0, 0.01) for s in samples]
    write_wav(path, samples, rate)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--classes", type=int, default=4, help=f"number of classes, 2..{len(KINDS)}")
    ap.add_argument("--clips", type=int, default=24, help="clips per class")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    ap.add_argument("--rate", type=int, default=22050, help="sample rate (Hz)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not 2 <= args.classes <= len(KINDS):
        ap.error(f"--classes must be between 2 and {len(KINDS)}")
    if args.clips < 1 or args.seconds <= 0 or args.rate < 8000:
        ap.error("--clips >= 1, --seconds > 0 and --rate >= 8000 required")

    jobs = []
    for kind in KINDS[:args.classes]:
        os.makedirs(os.path.join(args.outdir, kind), exist_ok=True)
        for i in range(args.clips):
            path = os.path.join(args.outdir, kind, f"{kind}_{i:03d}.wav")
            jobs.append((kind, i, path, args.seconds, args.rate, args.seed))
    workers = max(1, min(args.jobs, len(jobs)))
    if workers == 1:
        for j in jobs:
            make_clip(j)
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(make_clip, jobs):
                pass
    print(f"gpu_check_data: {len(jobs)} clips ({args.classes} classes x {args.clips}, "
          f"{args.seconds:g} s at {args.rate} Hz) in {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
