#!/usr/bin/env python3
"""The three timbre networks in PyTorch, timed on this CPU or a GPU: the peer
figures for docs/benchmarks.md (bench_models measures timbre's side).

    /usr/bin/python3 bench/peers_models.py [--threads 2] [--steps 5] [--batch 32]
    python3 bench/peers_models.py --device cuda --steps 3 --json peers.json

Prints, per model: training samples/s (forward + backward + Adam step,
batch 32, train mode) and inference samples/s (eval mode, no grad), and the
peak memory: on the CPU the process's peak resident set, on CUDA
torch.cuda.max_memory_allocated (the counterpart of timbre's caching
allocator high-water mark). The layer definitions mirror docs/models.md
(Keras-convention batch norm does not change the cost). --json FILE also
writes the figures as JSON (scripts/gpu_check.sh reads it).
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.max_pool2d(F.relu(y + s), 2)


class ResTrunk(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128, 128)):
        super().__init__()
        blocks, cin = [], 1
        for w in widths:
            blocks.append(ResBlock(cin, w))
            cin = w
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return torch.flatten(self.blocks(x), 1)


class ResCNN(nn.Module):
    def __init__(self, classes=8):
        super().__init__()
        self.trunk = ResTrunk()
        self.dense = nn.Linear(2048, classes)

    def forward(self, x):
        return self.dense(self.trunk(x))


class CRNN(nn.Module):
    def __init__(self, classes=8):
        super().__init__()
        widths, pools = (64, 128, 128, 128), ((2, 2), (4, 2), (4, 2), (4, 1))
        layers, cin = [], 1
        for w, p in zip(widths, pools):
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.MaxPool2d(p), nn.BatchNorm2d(w),
                       nn.ReLU(), nn.Dropout(0.1)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.gru = nn.GRU(128, 32, batch_first=True)
        self.dense = nn.Linear(32, classes)

    def forward(self, x):
        f = self.features(x)                      # (N, 128, 1, 16)
        seq = f.flatten(1, 2).transpose(1, 2)     # (N, 16, 128)
        _, h = self.gru(seq)
        return self.dense(h[-1])


class Parallel(nn.Module):
    def __init__(self, classes=8):
        super().__init__()
        self.trunk = ResTrunk()
        self.embed = nn.Linear(32, 128)
        self.gru = nn.GRU(128, 64, batch_first=True, bidirectional=True)
        self.att_w = nn.Linear(128, 128)
        self.att_v = nn.Parameter(torch.randn(128) * 0.1)
        self.dense = nn.Linear(2048 + 128, classes)

    def forward(self, x):
        a = self.trunk(x)
        b = F.max_pool2d(x, (4, 2)).squeeze(1).transpose(1, 2)  # (N, 64, 32)
        h, _ = self.gru(self.embed(b))                          # (N, 64, 128)
        scores = torch.tanh(self.att_w(h)) @ self.att_v         # (N, 64)
        ctx = (torch.softmax(scores, dim=1).unsqueeze(2) * h).sum(1)
        return self.dense(torch.cat([a, ctx], 1))


def timed(fn, steps, sync=lambda: None):
    # Warm-up: allocations, oneDNN primitive creation; on CUDA also the
    # cuBLAS/cuDNN handles and the caching allocator's first blocks.
    fn()
    sync()  # kernels are asynchronous on CUDA: time finished work only
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    where = (f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version()}" if cuda else f"{args.threads} threads")
    print(f"torch {torch.__version__}, {where}, batch {args.batch}")
    results = []
    for name, cls in (("rescnn", ResCNN), ("crnn", CRNN), ("parallel", Parallel)):
        model = cls().to(device)
        x = torch.randn(args.batch, 1, 128, 128, device=device)
        y = torch.randint(0, 8, (args.batch,), device=device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train_step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        if cuda:
            sync()
            torch.cuda.reset_peak_memory_stats()
        model.train()
        t_train = timed(train_step, args.steps, sync)
        model.eval()
        with torch.no_grad():
            t_infer = timed(lambda: model(x), args.steps, sync)
        if cuda:
            peak, peak_kind = torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
        else:
            peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS"
        print(f"{name:9s} train {args.batch / t_train:8.1f} samples/s ({t_train * 1e3:7.1f} ms/step)"
              f"  infer {args.batch / t_infer:8.1f} samples/s  {peak_kind} {peak:.0f} MiB")
        results.append({"model": name,
                        "train_samples_per_s": args.batch / t_train,
                        "train_ms_per_step": t_train * 1e3,
                        "infer_samples_per_s": args.batch / t_infer,
                        "infer_ms_per_step": t_infer * 1e3,
                        "peak_mib": peak, "peak_kind": peak_kind})
        del model, opt, x, y
        if cuda:
            torch.cuda.empty_cache()  # each model's peak is its own
    if args.json:
        info = {"torch": torch.__version__, "device": args.device, "batch": args.batch,
                "steps": args.steps, "threads": args.threads,
                "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
                "cuda": torch.version.cuda if cuda else None,
                "cudnn": torch.backends.cudnn.version() if cuda else None,
                "models": results}
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
