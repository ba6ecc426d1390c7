#!/usr/bin/env python3
"""Peers of bench/bench_features.cpp: log-mel clips/s on the same 256 clips
of 65,024 samples (22,050 Hz), n_fft 2048, hop 512, 128 Slaney mels, dB
relative to each clip's maximum with an 80 dB floor, host memory in and out.

  librosa:  melspectrogram + power_to_db(ref=np.max, top_db=80), clip by
            clip (librosa has no batch axis for ref=np.max per clip)
  torch:    torch.stft (batched, center=True, constant padding, periodic
            Hann) -> |X|^2 -> matmul with librosa's mel basis -> per-clip dB

Run with the python3 that has librosa; the torch part runs under
/usr/bin/python3 (Debian's torch 1.13), which this script starts itself:
    python3 bench/peers_features.py [--repeats N]
"""
import argparse
import json
import os
import subprocess
import sys
import time

SR, N_FFT, HOP, N_MELS, FRAMES, CLIPS = 22050, 2048, 512, 128, 128, 256
SEG = (FRAMES - 1) * HOP


def make_clips(np):
    # The same stand-in as bench_features.cpp (tones in noise; the cost
    # does not depend on the values).
    rng = np.random.default_rng(7)
    i = np.arange(SEG, dtype=np.float32)
    c = np.arange(1, CLIPS + 1, dtype=np.float32)[:, None]
    x = 0.3 * np.sin(0.01 * c * i) + rng.normal(0, 0.05, (CLIPS, SEG))
    return x.astype(np.float32)


CPU_PER_RUN = []  # process CPU seconds (all threads, user + system) per run


def best_of(fn, repeats):
    times = []
    c0 = time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    CPU_PER_RUN.append((time.process_time() - c0) / repeats)
    return min(times)


def run_librosa(repeats):
    import numpy as np
    import librosa
    x = make_clips(np)

    def go():
        out = np.empty((CLIPS, N_MELS, FRAMES), np.float32)
        for c in range(CLIPS):
            S = librosa.feature.melspectrogram(y=x[c], sr=SR, n_fft=N_FFT, hop_length=HOP,
                                               n_mels=N_MELS, fmin=0.0, fmax=SR / 2,
                                               center=True, pad_mode="constant", power=2.0)
            out[c] = librosa.power_to_db(S, ref=np.max, top_db=80.0)
        return out

    go()  # warm-up (filterbank cache, FFT plans)
    t = best_of(go, repeats)
    return {"peer": f"librosa {librosa.__version__} (numpy {np.__version__})",
            "seconds": t, "clips_per_s": CLIPS / t, "cpu_s": CPU_PER_RUN[-1]}


def run_torch(repeats, mel_basis_path, threads):
    import numpy as np
    import torch
    if threads > 0:
        torch.set_num_threads(threads)
    x = torch.from_numpy(make_clips(np))
    mel = torch.from_numpy(np.load(mel_basis_path).astype(np.float32))  # (128, 1025)
    window = torch.hann_window(N_FFT)  # periodic, like librosa

    def go():
        X = torch.stft(x, n_fft=N_FFT, hop_length=HOP, window=window, center=True,
                       pad_mode="constant", return_complex=True)  # (clips, 1025, frames)
        P = X.real ** 2 + X.imag ** 2
        S = torch.matmul(mel, P)  # (clips, 128, frames)
        db = 10.0 * torch.log10(torch.clamp(S, min=1e-10))
        top = db.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(db, top - 80.0) - top).numpy()

    go()
    t = best_of(go, repeats)
    return {"peer": f"torch {torch.__version__} stft + mel matmul, {torch.get_num_threads()} threads",
            "seconds": t, "clips_per_s": CLIPS / t, "cpu_s": CPU_PER_RUN[-1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-only", metavar="MEL_BASIS_NPY", help=argparse.SUPPRESS)
    ap.add_argument("--torch-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_only:
        print(json.dumps(run_torch(args.repeats, args.torch_only, args.torch_threads)))
        return
    import numpy as np
    import librosa
    import tempfile
    results = [run_librosa(args.repeats)]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mel.npy")
        np.save(path, librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0,
                                          fmax=SR / 2, htk=False, norm="slaney"))
        # torch at its default thread count (1 here: Debian's build), and at 2
        # (this machine's cores; simcuda runs 2 workers).
        for threads in (0, 2):
            out = subprocess.check_output(["/usr/bin/python3", os.path.abspath(__file__),
                                           "--repeats", str(args.repeats), "--torch-only", path,
                                           "--torch-threads", str(threads)], text=True)
            results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{CLIPS} clips x {SEG} samples, n_fft {N_FFT}, hop {HOP}, {N_MELS} mels; "
          f"best of {args.repeats}")
    for r in results:
        print(f"  {r['peer']:60s} {r['seconds']*1e3:9.1f} ms  {r['clips_per_s']:8.1f} clips/s"
              f"  {r['cpu_s']:6.2f} CPU-s per {CLIPS} clips")


if __name__ == "__main__":
    main()
