#!/usr/bin/env python3
"""timbre's three networks in PyTorch, and a loader for `timbre export`.

    import timbre_torch
    model = timbre_torch.load("runs/parallel/model.safetensors")  # eval mode
    logits = model(x)            # x: (N, n_mels, frames) raw log-mel, float32
    model.labels[logits.argmax(1)]

    python3 python/timbre_torch.py runs/parallel/model.safetensors [--input x.npy]

The classes define each network exactly as models/*.h define it in timbre,
with the same parameter names (timbre's "cnn.block1.conv1.weight" is the
state_dict entry of that name), so a timbre export loads with
load_state_dict. `load` rebuilds the model from the export's metadata (its
name and JSON configuration, including the batch-norm convention, which
fixes epsilon: keras 1e-3, pytorch 1e-5) and puts the per-band
normalisation timbre applies before the network in front of it. Evaluation
mode computes what timbre computes (the tests compare logits within 1e-5);
training further in PyTorch uses PyTorch's running-statistics update
(unbiased variance) whatever the convention.

It needs torch (Debian: python3-torch) and numpy, nothing else: the
safetensors layout is read and written here (8-byte header length, a JSON
header, the raw tensors); the `safetensors` package reads the same files.
tests/fixtures/make_model_fixtures.py and make_export_fixtures.py use these
classes.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Batch-norm conventions (engine/nn.h): epsilon, and PyTorch's momentum (the
# share of the batch statistic in the running one).
BATCHNORM = {"keras": dict(eps=1e-3, momentum=0.01), "pytorch": dict(eps=1e-5, momentum=0.1)}


def _bn(cfg, channels):
    return nn.BatchNorm2d(channels, **BATCHNORM[cfg.get("batchnorm", "keras")])


class ResidualBlock(nn.Module):
    """y = relu(bn1(conv1(x))); y = bn2(conv2(y)); s = shortcut(x) or x;
    out = maxpool(relu(y + s))."""

    def __init__(self, cfg, cin, cout, pool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = _bn(cfg, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = _bn(cfg, cout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.pool = tuple(pool)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.max_pool2d(F.relu(y + s), self.pool)


class ResTrunk(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        cin = 1
        self.n = len(cfg["channels"])
        for i, (c, p) in enumerate(zip(cfg["channels"], cfg["pools"])):
            setattr(self, "block%d" % (i + 1), ResidualBlock(cfg, cin, c, p))
            cin = c

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, "block%d" % (i + 1))(x)
        return x


def trunk_features(cfg):
    h, w = cfg["input_height"], cfg["input_width"]
    for ph, pw in cfg["pools"]:
        h, w = h // ph, w // pw
    return cfg["channels"][-1] * h * w


class ResCNN(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cnn = ResTrunk(cfg)
        self.dense = nn.Linear(trunk_features(cfg), cfg["n_classes"])

    def forward(self, x):
        return self.dense(torch.flatten(self.cnn(x), 1))


class CRNNBlock(nn.Module):
    def __init__(self, cfg, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = _bn(cfg, cout)


class CRNN(nn.Module):
    """conv3x3 -> maxpool -> BN -> ReLU -> dropout per block; the map
    (N, C, H', W') read as W' steps of C*H' features; GRU; last state; dense."""

    def __init__(self, cfg):
        super().__init__()
        cin = 1
        self.pools = [tuple(p) for p in cfg["pools"]]
        for i, c in enumerate(cfg["channels"]):
            setattr(self, "block%d" % (i + 1), CRNNBlock(cfg, cin, c))
            cin = c
        h = cfg["input_height"]
        for ph, _ in cfg["pools"]:
            h //= ph
        self.dropout = nn.Dropout(cfg.get("dropout", 0.0))
        self.gru = nn.GRU(cin * h, cfg["gru_hidden"], batch_first=True)
        self.dense = nn.Linear(cfg["gru_hidden"], cfg["n_classes"])

    def forward(self, x):
        for i, p in enumerate(self.pools):
            b = getattr(self, "block%d" % (i + 1))
            x = self.dropout(F.relu(b.bn(F.max_pool2d(b.conv(x), p))))
        n, c, h, w = x.shape
        seq = x.reshape(n, c * h, w).transpose(1, 2)
        out, _ = self.gru(seq)
        return self.dense(out[:, -1])


class Attention(nn.Module):
    """u_t = tanh(W h_t + b), alpha = softmax_t(v . u_t), out = sum alpha_t h_t."""

    def __init__(self, dim, att):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(att, dim))
        self.bias = nn.Parameter(torch.empty(att))
        self.v = nn.Parameter(torch.empty(att))
        nn.init.xavier_uniform_(self.weight)
        nn.init.uniform_(self.bias, -0.1, 0.1)
        nn.init.uniform_(self.v, -0.5, 0.5)

    def forward(self, h):
        u = torch.tanh(h @ self.weight.T + self.bias)
        alpha = torch.softmax(u @ self.v, dim=1)
        return (alpha.unsqueeze(-1) * h).sum(1)


class Parallel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cnn = ResTrunk(cfg)
        self.branch_pool = tuple(cfg["branch_pool"])
        freq = cfg["input_height"] // cfg["branch_pool"][0]
        self.embed = nn.Linear(freq, cfg["embedding"])
        self.gru = nn.GRU(cfg["embedding"], cfg["gru_hidden"], batch_first=True, bidirectional=True)
        self.attention = Attention(2 * cfg["gru_hidden"], cfg["attention"])
        self.dense = nn.Linear(trunk_features(cfg) + 2 * cfg["gru_hidden"], cfg["n_classes"])

    def forward(self, x):
        cnn = torch.flatten(self.cnn(x), 1)
        s = F.max_pool2d(x, self.branch_pool)  # (N, 1, F, T)
        n, _, f, t = s.shape
        s = self.embed(s.reshape(n, f, t).transpose(1, 2))
        s, _ = self.gru(s)
        return self.dense(torch.cat([cnn, self.attention(s)], dim=1))


MODELS = {"rescnn": ResCNN, "crnn": CRNN, "parallel": Parallel}


def build(name, cfg):
    """A network by timbre's model name and JSON configuration."""
    return MODELS[name](cfg)


def state(model):
    """Parameters and batch-norm buffers by timbre's names (num_batches_tracked
    has no timbre counterpart)."""
    return {k: v.detach() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


class TimbreModel(nn.Module):
    """timbre's per-band normalisation, x' = (x - mean) / std (std^2 floored at
    1e-12, as in training), then the network. Input: raw log-mel segments
    (N, n_mels, frames) or (N, 1, n_mels, frames)."""

    def __init__(self, name, cfg, labels, features, band_mean, band_std):
        super().__init__()
        self.name, self.config, self.labels, self.features = name, cfg, labels, features
        self.net = build(name, cfg)
        self.register_buffer("band_mean", band_mean.reshape(-1, 1))
        self.register_buffer("band_std", torch.sqrt(torch.clamp(band_std.reshape(-1, 1) ** 2,
                                                                min=1e-12)))

    def forward(self, x):
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.net((x - self.band_mean) / self.band_std)


def read_safetensors(path):
    """(tensors by name, metadata) of a safetensors file of F32 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, e in header.items():
        if e["dtype"] != "F32":
            raise ValueError(f"{path}: {name} has dtype {e['dtype']}, expected F32")
        b, end = e["data_offsets"]
        a = np.frombuffer(body[b:end], dtype="<f4").reshape(e["shape"])
        tensors[name] = torch.from_numpy(a.copy())
    return tensors, meta


def write_safetensors(path, tensors, metadata):
    """The layout timbre writes: tensors in name order, the header compact with
    sorted keys, padded with spaces to a multiple of 8 bytes."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].detach().cpu().numpy().astype("<f4"))
        header[name] = {"data_offsets": [offset, offset + a.nbytes], "dtype": "F32",
                        "shape": list(a.shape)}
        offset += a.nbytes
        blobs.append(a.tobytes())
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load(path):
    """A timbre export as a TimbreModel in evaluation mode."""
    tensors, meta = read_safetensors(path)
    name, cfg = meta["timbre.model"], json.loads(meta["timbre.config"])
    model = TimbreModel(name, cfg, json.loads(meta["timbre.labels"]),
                        json.loads(meta.get("timbre.features", "{}")),
                        tensors.pop("timbre.band_mean"), tensors.pop("timbre.band_std"))
    model.net.load_state_dict(tensors, strict=False)  # strict apart from num_batches_tracked
    missing = set(state(model.net)) - set(tensors)
    unexpected = set(tensors) - set(state(model.net))
    if missing or unexpected:
        raise ValueError(f"{path}: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return model.eval()


def main():
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a file from timbre export")
    p.add_argument("--input", help=".npy of raw log-mel segments (N, n_mels, frames): "
                                   "print their logits and labels as JSON")
    a = p.parse_args()
    model = load(a.model)
    if not a.input:
        params = sum(t.numel() for t in model.net.parameters())
        print(f"{model.name}: {params} parameters, classes {model.labels}, "
              f"input {model.config['input_height']} x {model.config['input_width']}")
        return
    with torch.no_grad():
        logits = model(torch.from_numpy(np.load(a.input).astype(np.float32)))
    json.dump({"logits": logits.tolist(),
               "labels": [model.labels[i] for i in logits.argmax(1).tolist()]}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
