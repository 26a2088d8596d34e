"""Pretrained-teacher import: checkpoints in rosinality's and NVlabs' formats, built here.

The expected images come from ``reference_forward``, a deliberately plain StyleGAN2 forward pass
(a loop over samples, explicit zero insertion and padding) written for this test over a neutral
set of weights; each format's file is then built from those weights with that format's names,
shapes and conventions.
"""

import argparse
import collections
import math
import pickle
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.convert import (
    CheckpointImportError,
    UnsafePickleError,
    load_nvlabs,
    load_rosinality,
)

RES, Z, W_DIM, LAYERS, LR_MUL = 16, 8, 8, 2, 0.01
CH = {4: 8, 8: 8, 16: 4}  # channel_base 64, channel_max 8
BLUR = torch.tensor([1.0, 3.0, 3.0, 1.0])
BLUR2D = (BLUR[:, None] * BLUR[None]) / 64


def neutral_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    p = {"fc": [(r(W_DIM, Z if i == 0 else W_DIM) / LR_MUL, r(W_DIM) * 0.1) for i in range(LAYERS)],
         "const": r(1, CH[4], 4, 4), "w_avg": r(W_DIM) * 0.1, "layers": [], "rgbs": []}

    def layer(cin, cout, res, k=3):
        return {"weight": r(cout, cin, k, k), "affine_w": r(cin, W_DIM),
                "affine_b": 1 + 0.1 * r(cin),
                "noise_strength": 0.1 * r(1), "bias": 0.1 * r(cout), "noise": r(res, res)}

    p["layers"].append(layer(CH[4], CH[4], 4))
    p["rgbs"].append({**layer(CH[4], 3, 4, k=1)})
    for res in (8, 16):
        p["layers"].append(layer(CH[res // 2], CH[res], res))
        p["layers"].append(layer(CH[res], CH[res], res))
        p["rgbs"].append(layer(CH[res], 3, res, k=1))
    return p


def blur(x, pad, gain=1.0):
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, (BLUR2D * gain)[None, None].repeat(c, 1, 1, 1), groups=c)


def reference_forward(p, z):
    """StyleGAN2 config-F generator, one sample at a time, noise from the fixed buffers."""
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    for weight, bias in p["fc"]:
        x = F.leaky_relu(x @ (weight * LR_MUL / math.sqrt(weight.shape[1])).t() + bias * LR_MUL,
                         0.2) * math.sqrt(2)
    images = []
    for w in x:
        def modconv(h, layer, demod, up=False):
            style = w @ (layer["affine_w"] / math.sqrt(W_DIM)).t() + layer["affine_b"]
            cout, cin, k, _ = layer["weight"].shape
            weight = layer["weight"] / math.sqrt(cin * k * k) * style[None, :, None, None]
            if demod:
                weight = weight / torch.sqrt(weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
            if up:
                return blur(F.conv_transpose2d(h, weight.transpose(0, 1), stride=2), (1, 1), 4.0)
            return F.conv2d(h, weight, padding=k // 2)

        def synth_layer(h, layer, up=False):
            h = modconv(h, layer, True, up) + layer["noise_strength"] * layer["noise"]
            return F.leaky_relu(h + layer["bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)

        def upsample(img):
            big = torch.zeros(1, 3, img.shape[2] * 2, img.shape[3] * 2)
            big[:, :, ::2, ::2] = img
            return blur(big, (2, 1), 4.0)

        h = synth_layer(p["const"], p["layers"][0])
        img = modconv(h, p["rgbs"][0], False) + p["rgbs"][0]["bias"].view(1, 3, 1, 1)
        for b in range(2):
            h = synth_layer(h, p["layers"][1 + 2 * b], up=True)
            h = synth_layer(h, p["layers"][2 + 2 * b])
            rgb = p["rgbs"][1 + b]
            img = upsample(img) + modconv(h, rgb, False) + rgb["bias"].view(1, 3, 1, 1)
        images.append(img)
    return torch.cat(images)


def rosinality_state(p):
    s = {}
    for i, (weight, bias) in enumerate(p["fc"]):
        s[f"style.{i + 1}.weight"], s[f"style.{i + 1}.bias"] = weight, bias
    s["input.input"] = p["const"]
    names = ["conv1"] + [f"convs.{i}" for i in range(4)]
    for i, (name, layer) in enumerate(zip(names, p["layers"])):
        s[f"{name}.conv.weight"] = layer["weight"][None]
        (s[f"{name}.conv.modulation.weight"],
         s[f"{name}.conv.modulation.bias"]) = layer["affine_w"], layer["affine_b"]
        s[f"{name}.noise.weight"] = layer["noise_strength"]
        s[f"{name}.activate.bias"] = layer["bias"]
        s[f"noises.noise_{i}"] = layer["noise"][None, None]
        if name.startswith("convs"):
            s[f"{name}.conv.blur.kernel"] = BLUR2D * 4
    for name, layer in zip(["to_rgb1", "to_rgbs.0", "to_rgbs.1"], p["rgbs"]):
        s[f"{name}.conv.weight"] = layer["weight"][None]
        (s[f"{name}.conv.modulation.weight"],
         s[f"{name}.conv.modulation.bias"]) = layer["affine_w"], layer["affine_b"]
        s[f"{name}.bias"] = layer["bias"].view(1, 3, 1, 1)
        if name != "to_rgb1":
            s[f"{name}.upsample.kernel"] = BLUR2D * 4
    return s


def test_rosinality_checkpoint_reproduces_reference(tmp_path):
    p = neutral_weights()
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": rosinality_state(p), "args": argparse.Namespace(lr_mlp=LR_MUL, size=RES),
                "latent_avg": p["w_avg"]}, path)
    G = load_rosinality(path)
    assert (G.config.resolution, G.config.channel_base, G.config.channel_max) == (RES, 64, 8)
    z = torch.randn(3, Z)
    expected = reference_forward(p, z)
    for fused in (True, False):
        got = G.set_fused(fused)(z, noise_mode="const")
        assert (got - expected).abs().max() < 1e-4
    assert torch.equal(G.mapping.w_avg, p["w_avg"])


def test_rosinality_without_latent_avg_computes_one(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({"g_ema": rosinality_state(neutral_weights())}, path)
    G = load_rosinality(path)
    assert G.mapping.w_avg.abs().sum() > 0 and torch.equal(G.mapping.w_avg,
                                                           load_rosinality(path).mapping.w_avg)


# -- NVlabs: persistent objects whose embedded source would run code if executed. -------------

PWNED_SRC = "import pathlib\npathlib.Path({path!r}).write_text('code from the pickle ran')\n"


def fake_persistence(monkeypatch):
    """Modules named like NVlabs' so that pickle records references to them."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # the real one execs meta["module_src"]
        raise AssertionError("never called while building the pickle")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    monkeypatch.setitem(sys.modules, "dnnlib", types.ModuleType("dnnlib"))
    monkeypatch.setitem(sys.modules, "dnnlib.util", util)
    return _reconstruct_persistent_obj


class Persistent:
    """Pickles like a torch_utils.persistence object: (reconstruct, (meta,))."""

    def __init__(self, reconstruct, class_name, src, params=(), buffers=(), modules=(), **attrs):
        self.reconstruct, self.meta = reconstruct, dict(
            type="class", version=4, module_src=src, class_name=class_name,
            state={"training": False, "_parameters": collections.OrderedDict(params),
                   "_buffers": collections.OrderedDict(buffers),
                   "_modules": collections.OrderedDict(modules), **attrs})

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def nvlabs_pickle(p, path, reconstruct, src):
    import numpy as np

    EasyDict = sys.modules["dnnlib.util"].EasyDict
    P = lambda name, **kw: Persistent(reconstruct, name, src, **kw)  # noqa: E731
    # As in real pickles: gains are numpy scalars, init kwargs are EasyDicts.
    fcs = [(f"fc{i}", P("FullyConnectedLayer", params=[("weight", torch.nn.Parameter(w)),
                                                        ("bias", torch.nn.Parameter(b))],
                         weight_gain=np.float64(LR_MUL / np.sqrt(w.shape[1])), bias_gain=LR_MUL,
                         act_gain=np.sqrt(2), _init_kwargs=EasyDict(lr_multiplier=LR_MUL)))
           for i, (w, b) in enumerate(p["fc"])]
    mapping = P("MappingNetwork", modules=fcs, buffers=[("w_avg", p["w_avg"])], z_dim=Z,
                w_dim=W_DIM)

    def layer(weights, res, up):
        affine = P("FullyConnectedLayer", params=[("weight", weights["affine_w"]),
                                                  ("bias", weights["affine_b"])], bias_gain=1.0)
        return P("SynthesisLayer", modules=[("affine", affine)],
                 params=[("weight", weights["weight"]),
                         ("noise_strength", weights["noise_strength"][0]),
                         ("bias", weights["bias"])],
                 buffers=[("resample_filter", BLUR2D), ("noise_const", weights["noise"])],
                 up=2 if up else 1, resolution=res, conv_clamp=None)

    def torgb(weights):
        affine = P("FullyConnectedLayer", params=[("weight", weights["affine_w"]),
                                                  ("bias", weights["affine_b"])], bias_gain=1.0)
        return P("ToRGBLayer", modules=[("affine", affine)],
                 params=[("weight", weights["weight"]), ("bias", weights["bias"])])

    blocks = [("b4", P("SynthesisBlock", params=[("const", p["const"][0])],
                       modules=[("conv1", layer(p["layers"][0], 4, False)),
                                ("torgb", torgb(p["rgbs"][0]))]))]
    for b, res in enumerate((8, 16)):
        blocks.append((f"b{res}", P("SynthesisBlock", buffers=[("resample_filter", BLUR2D)],
                                    modules=[("conv0", layer(p["layers"][1 + 2 * b], res, True)),
                                             ("conv1", layer(p["layers"][2 + 2 * b], res, False)),
                                             ("torgb", torgb(p["rgbs"][1 + b]))])))
    G = P("Generator", modules=[("synthesis", P("SynthesisNetwork", modules=blocks)),
                                ("mapping", mapping)],
          _init_kwargs=EasyDict(mapping_kwargs=EasyDict(num_layers=LAYERS),
                                synthesis_kwargs=EasyDict()))
    D = P("Discriminator", params=[("w", torch.randn(3))], _init_kwargs=EasyDict(c_dim=0))
    augment = P("AugmentPipe", buffers=[("p", torch.tensor(0.1))], xflip=np.float32(1.0))
    with open(path, "wb") as f:
        pickle.dump({"G_ema": G, "G": G, "D": D, "augment_pipe": augment,
                     "training_set_kwargs": EasyDict(resolution=RES, xflip=True)}, f)


def test_nvlabs_pickle_reproduces_reference_without_running_its_code(tmp_path, monkeypatch):
    reconstruct = fake_persistence(monkeypatch)
    marker = tmp_path / "pwned.txt"
    p = neutral_weights(1)
    nvlabs_pickle(p, tmp_path / "network.pkl", reconstruct, PWNED_SRC.format(path=str(marker)))
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")  # as on a user's machine
    G = load_nvlabs(tmp_path / "network.pkl")
    z = torch.randn(3, Z)
    assert (G(z, noise_mode="const") - reference_forward(p, z)).abs().max() < 1e-4
    assert torch.equal(G.mapping.w_avg, p["w_avg"]) and G.config.mapping_lr_mul == LR_MUL
    assert not marker.exists()


def test_pickle_cannot_modify_torch_objects(tmp_path):
    import torch._utils

    # GLOBAL torch._utils._rebuild_tensor_v2, then BUILD with {"pwned": 1}: pickle sets the
    # attribute on whatever find_class returned, which must not be torch's own function.
    data = (b"\x80\x04ctorch._utils\n_rebuild_tensor_v2\n}\x8c\x05pwned\x4b\x01sb.")
    path = tmp_path / "build.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointImportError):
        load_nvlabs(path)
    assert "pwned" not in torch._utils._rebuild_tensor_v2.__dict__


@pytest.mark.parametrize("global_name", [b"torch\nFloatStorage", b"numpy\nndarray",
                                         b"builtins\neval"])
def test_other_globals_are_refused(tmp_path, global_name):
    path = tmp_path / "g.pkl"
    path.write_bytes(b"\x80\x04c" + global_name + b"\n.")
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_nvlabs(path)


class Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Malicious(marker)}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to load.*(posix|os)\.system"):
        load_nvlabs(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, words", [
    (b"not a pickle", "not a readable network pickle"),
    (pickle.dumps({"D": 1}), "no StyleGAN2 generator 'G_ema'"),
    (pickle.dumps([1, 2]), "expected a dict of networks"),
])
def test_bad_nvlabs_files(tmp_path, content, words):
    path = tmp_path / "x.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointImportError, match=words):
        load_nvlabs(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")  # the malicious file
def test_bad_rosinality_files(tmp_path):
    with pytest.raises(CheckpointImportError, match="file not found"):
        load_rosinality(tmp_path / "missing.pt")
    torch.save({"g": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointImportError, match="no rosinality generator"):
        load_rosinality(tmp_path / "other.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Malicious(tmp_path / "m")))
    with pytest.raises(CheckpointImportError, match="not a loadable rosinality checkpoint"):
        load_rosinality(tmp_path / "evil.pt")
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def dataset16(tmp_path_factory):
    from conftest import prepared_16

    return prepared_16(tmp_path_factory)


def teacher_stage(tmp_path, dataset, source, **teacher):
    """Run the teacher stage with ``teacher.source`` = ``source`` (under tmp_path/pretrained)."""
    import subprocess

    import yaml

    from conftest import ROOT, write_params
    from test_train_teacher import TINY_TEACHER

    params = write_params(tmp_path / "params.yaml", train_teacher=TINY_TEACHER,
                          teacher={"source": source, "mapping_lr_mul": None, **teacher})
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "stages.teacher", "--params", str(params), "--dataset",
         str(dataset), "--pretrained", str(tmp_path / "pretrained"), "--snapshot",
         str(out / "teacher.pt"), "--state", str(out / "state" / "state.pt"), "--live",
         str(out / "live"), "--samples", str(out / "samples.png"), "--metrics",
         str(out / "teacher.json")], cwd=ROOT, capture_output=True, text=True)
    metrics = (yaml.safe_load((out / "teacher.json").read_text())
               if (out / "teacher.json").is_file() else None)
    return result, out, metrics


def test_teacher_stage_imports_a_checkpoint_named_in_params(tmp_path, dataset16):
    from pipeline.io import sha256_file
    from pipeline.models.stylegan2 import load_teacher

    p = neutral_weights()
    (tmp_path / "pretrained").mkdir()
    torch.save({"g_ema": rosinality_state(p), "latent_avg": p["w_avg"]},
               tmp_path / "pretrained" / "g.pt")
    result, out, metrics = teacher_stage(tmp_path, dataset16, "g.pt")
    assert result.returncode == 0, result.stderr
    z = torch.randn(2, Z)
    assert (load_teacher(out / "teacher.pt")(z, noise_mode="const")
            - reference_forward(p, z)).abs().max() < 1e-4
    assert (out / "samples.png").is_file() and (out / "live").is_dir()
    assert metrics["format"] == "rosinality" and metrics["model"]["resolution"] == RES
    assert metrics["source_sha256"] == sha256_file(tmp_path / "pretrained" / "g.pt")


@pytest.mark.parametrize("source, message", [
    ("missing.pt", "teacher.source is 'missing.pt' but {pretrained}/missing.pt is not a file"),
    ("../g.pt", "teacher.source is '../g.pt': name a file under {pretrained}"),
    ("g.ckpt", "teacher.source is 'g.ckpt': expected 'train', a rosinality .pt"),
    ("/abs/g.pt", "teacher.source is '/abs/g.pt': name a file under {pretrained}"),
    ("a/../../g.pt", "teacher.source is 'a/../../g.pt': name a file under {pretrained}"),
    ("g.pkl", "teacher.source 'g.pkl': {pretrained}/g.pkl: not a readable network pickle"),
    ("small.pt", "teacher.source {pretrained}/small.pt is a 8 px generator but the dataset"),
])
def test_teacher_stage_refuses_a_bad_source_in_one_line(tmp_path, dataset16, source, message):
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    torch.save({"g_ema": rosinality_state(neutral_weights())}, tmp_path / "g.pt")
    (pretrained / "g.ckpt").write_bytes(b"")
    torch.save({"g_ema": rosinality_state(neutral_weights())}, pretrained / "g.pkl")
    p = neutral_weights()  # an 8 px generator: the 16 px block's tensors left out
    state = {k: v for k, v in rosinality_state(p).items()
             if not k.startswith(("convs.2", "convs.3", "to_rgbs.1", "noises.noise_3",
                                  "noises.noise_4"))}
    torch.save({"g_ema": state, "latent_avg": p["w_avg"]}, pretrained / "small.pt")
    result, out, _ = teacher_stage(tmp_path, dataset16, source)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error and message.format(pretrained=pretrained) in error[0], result.stderr
    assert not (out / "teacher.pt").exists() and not (out / "teacher.json").exists()


def test_switching_to_an_import_and_back_resumes_the_training_it_left(tmp_path, dataset16):
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    torch.save({"g_ema": rosinality_state(neutral_weights())}, pretrained / "g.pt")
    trained, out, _ = teacher_stage(tmp_path, dataset16, "train")
    assert trained.returncode == 0, trained.stderr
    state = (out / "state" / "state.pt").read_bytes()
    imported, out, metrics = teacher_stage(tmp_path, dataset16, "g.pt")
    assert imported.returncode == 0 and metrics["format"] == "rosinality"
    assert (out / "state" / "state.pt").read_bytes() == state  # left in place
    again, out, metrics = teacher_stage(tmp_path, dataset16, "train")
    assert again.returncode == 0 and "resuming from" in again.stderr, again.stderr
    assert metrics["source"] == "train" and "loss/g" in metrics["final"]
