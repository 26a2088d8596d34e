"""Import pretrained StyleGAN2 generators into :class:`pipeline.models.stylegan2.Generator`.

Two formats are read, at any resolution and channel count:

* **rosinality/stylegan2-pytorch** checkpoints (``torch.save`` of a dict with ``g_ema``), loaded
  with ``torch.load(weights_only=True)`` (``argparse.Namespace``, which its training script stores
  as ``args``, is the only class allowed besides tensors and containers);
* **NVlabs/stylegan2-ada-pytorch** ``.pkl`` files, read by a restricted unpickler that never
  executes code from the pickle. Those pickles embed their networks' Python source and rebuild the
  modules by executing it (``torch_utils.persistence``); here every persistent object is instead
  rebuilt as an inert record of its state, tensors are rebuilt by torch's own safe loader, and any
  other callable the pickle names is refused.

Both reference implementations compute the same functions as our generator (same resampling
filter, paddings and order of noise, bias and activation), so conversion is a renaming of tensors
plus the configuration read off their shapes.
"""

from __future__ import annotations

import argparse
import collections
import io
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.models.stylegan2 import Generator, StyleGAN2Config

log = logging.getLogger(__name__)


class CheckpointImportError(PipelineError):
    """A pretrained checkpoint cannot be imported (format, contents or shapes)."""


class UnsafePickleError(CheckpointImportError):
    """The pickle asks to run code other than rebuilding tensors and plain containers."""


# ----------------------------------------------------------------------------------------------
# Config inference shared by both formats.

def _infer_channels(channels: dict[int, int], path: Path) -> tuple[int, int]:
    """(channel_base, channel_max) such that channels[r] == min(base // r, max) for every r."""
    channel_max = channels[4]
    below = [(r, c) for r, c in sorted(channels.items()) if c < channel_max]
    channel_base = below[0][0] * below[0][1] if below else channel_max * max(channels)
    for r, c in channels.items():
        if min(channel_base // r, channel_max) != c:
            raise CheckpointImportError(f"{path}: channel counts "
                                        f"{dict(sorted(channels.items()))} do not follow "
                                        "StyleGAN2's min(base / resolution, max) rule")
    return channel_base, channel_max


def _load_into(G: Generator, state: dict[str, torch.Tensor], path: Path) -> Generator:
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointImportError(f"{path}: converted weights do not match the generator "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointImportError(f"{path}: {name} has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(expected[name].shape)}")
    G.load_state_dict({k: v.float() for k, v in state.items()})
    return G.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch

def _guarded(convert):
    """Turn any failure while mapping a loaded checkpoint (a missing key, an odd shape, a value
    our config rejects) into a one-line CheckpointImportError naming the file."""

    def wrapper(path, *args, **kwargs):
        try:
            return convert(Path(path), *args, **kwargs)
        except CheckpointImportError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, RuntimeError) as e:
            raise CheckpointImportError(f"{path}: not a supported StyleGAN2 generator "
                                        f"({type(e).__name__}: {str(e).splitlines()[0]})") from None

    wrapper.__doc__, wrapper.__name__ = convert.__doc__, convert.__name__
    return wrapper


@_guarded
def load_rosinality(path: str | Path, mapping_lr_mul: float | None = None,
                    w_avg_samples: int = 4096) -> Generator:
    """Convert a rosinality checkpoint's ``g_ema`` into our generator.

    Args:
        path:           the ``.pt`` file (a dict with ``g_ema``, or a bare generator state dict).
        mapping_lr_mul: the mapping network's learning-rate multiplier (``--lr_mlp``), which the
                        weights alone do not reveal; default: the checkpoint's ``args.lr_mlp``,
                        else 0.01 (the default of rosinality's training script).
        w_avg_samples:  when the file has no ``latent_avg``, w_avg is the mean of this many
                        mapped random z (seeded, so the result is reproducible).
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointImportError(f"{path}: file not found") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointImportError(f"{path}: not a loadable rosinality checkpoint "
                                    f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    src = checkpoint.get("g_ema", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(src, dict) or "input.input" not in src:
        raise CheckpointImportError(f"{path}: no rosinality generator ('g_ema' with "
                                    "'input.input') found")

    args = checkpoint.get("args")
    if mapping_lr_mul is None:
        mapping_lr_mul = float(getattr(args, "lr_mlp", 0.01))
    style_layers = sorted(int(m.group(1)) for k in src
                          if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    num_blocks = len({k.split(".")[1] for k in src if k.startswith("to_rgbs.")})
    resolution = 4 * 2 ** num_blocks
    channels = {4: src["input.input"].shape[1]}
    for i in range(num_blocks):
        channels[8 * 2 ** i] = src[f"convs.{2 * i}.conv.weight"].shape[1]
    channel_base, channel_max = _infer_channels(channels, path)
    w_dim = src[f"style.{style_layers[-1]}.weight"].shape[0]
    config = StyleGAN2Config(
        resolution=resolution, z_dim=src[f"style.{style_layers[0]}.weight"].shape[1], w_dim=w_dim,
        mapping_layers=len(style_layers), mapping_lr_mul=mapping_lr_mul,
        channel_base=channel_base, channel_max=channel_max, conv_clamp=None, noise=True)

    state: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(style_layers):
        state[f"mapping.layers.{i}.weight"] = src[f"style.{layer}.weight"]
        state[f"mapping.layers.{i}.bias"] = src[f"style.{layer}.bias"]
    state["synthesis.const"] = src["input.input"]

    def styled(ours: str, theirs: str, noise: str) -> None:
        state[f"{ours}.conv.weight"] = src[f"{theirs}.conv.weight"][0]
        state[f"{ours}.conv.affine.weight"] = src[f"{theirs}.conv.modulation.weight"]
        state[f"{ours}.conv.affine.bias"] = src[f"{theirs}.conv.modulation.bias"]
        state[f"{ours}.noise.weight"] = src[f"{theirs}.noise.weight"]
        state[f"{ours}.bias"] = src[f"{theirs}.activate.bias"].view(1, -1, 1, 1)
        state[f"{ours}.noise_const"] = src[f"noises.{noise}"]

    def to_rgb(ours: str, theirs: str) -> None:
        state[f"{ours}.conv.weight"] = src[f"{theirs}.conv.weight"][0]
        state[f"{ours}.conv.affine.weight"] = src[f"{theirs}.conv.modulation.weight"]
        state[f"{ours}.conv.affine.bias"] = src[f"{theirs}.conv.modulation.bias"]
        state[f"{ours}.bias"] = src[f"{theirs}.bias"]

    styled("synthesis.conv1", "conv1", "noise_0")
    to_rgb("synthesis.to_rgb1", "to_rgb1")
    for i in range(2 * num_blocks):
        styled(f"synthesis.convs.{i}", f"convs.{i}", f"noise_{i + 1}")
    for i in range(num_blocks):
        to_rgb(f"synthesis.to_rgbs.{i}", f"to_rgbs.{i}")

    G = Generator(config)
    latent_avg = checkpoint.get("latent_avg")
    if latent_avg is None:
        # rosinality computes the mean latent at sampling time; fix it here, reproducibly.
        G_tmp = _load_into(Generator(config), {**state, "mapping.w_avg": torch.zeros(w_dim)}, path)
        z = torch.randn(w_avg_samples, config.z_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            latent_avg = G_tmp.mapping(z).mean(0)
    state["mapping.w_avg"] = latent_avg.reshape(w_dim)
    return _load_into(G, state, path)


# ----------------------------------------------------------------------------------------------
# NVlabs/stylegan2-ada-pytorch

class _Record:
    """An inert stand-in for any object the pickle rebuilds: it only keeps the object's state.

    Dict and list subclasses (e.g. ``dnnlib.util.EasyDict``) are rebuilt by pickle with item
    assignment or appends after creation; those land in ``entries``. Pickle may create instances
    with ``__new__`` alone, hence the class-level defaults.
    """

    name: str = ""
    state: Any = None

    def __init__(self, name: str = "", state: Any = None):
        self.name, self.state = name, state

    @property
    def entries(self) -> dict:
        return self.__dict__.setdefault("_entries", {})

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries[key] = value

    def append(self, value: Any) -> None:
        self.entries[len(self.entries)] = value

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)


def _record_class(name: str):
    # A class (so pickle's NEWOBJ/BUILD work on it) whose instances are inert records.
    return type(name.replace(".", "_"), (_Record,),
                {"__init__": lambda self, *a, **k: _Record.__init__(self, name)})


def _persistent_object(meta: dict) -> _Record:
    # torch_utils.persistence would exec meta["module_src"] here; we keep the state and nothing
    # else.
    return _Record(str(meta.get("class_name", "?")), meta.get("state"))


def _storage_from_bytes(data: bytes):
    # torch pickles storages (outside torch.save's zip format) as torch.save bytes: load them
    # safely.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError(f"refusing to load: object dtype {dtype} in the pickle")
    return dtype


def _numpy_scalar(dtype, data=None):
    # numpy's own scalar reconstructor, for non-object dtypes only (e.g. float32 gains).
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("refusing to load: a numpy scalar of an unsupported dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors, plain containers and inert records; refuses every other global."""

    # Each call returns a fresh wrapper, never the library object itself: pickle's BUILD opcode
    # sets attributes on whatever object it is given, and must not reach torch's own functions.
    SAFE = {
        ("collections", "OrderedDict"): lambda: collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"):
            lambda: lambda *a: torch._utils._rebuild_tensor_v2(*a),
        ("torch._utils", "_rebuild_parameter"):
            lambda: lambda *a: torch._utils._rebuild_parameter(*a),
        ("torch.storage", "_load_from_bytes"): lambda: lambda data: _storage_from_bytes(data),
        ("torch_utils.persistence", "_reconstruct_persistent_obj"):
            lambda: lambda meta: _persistent_object(meta),
        ("builtins", "set"): lambda: lambda *a: set(*a),
        ("builtins", "frozenset"): lambda: lambda *a: frozenset(*a),
        ("torch", "Size"): lambda: lambda *a: torch.Size(*a),
        ("torch", "device"): lambda: lambda *a: torch.device(*a),
        ("numpy", "dtype"): lambda: _numpy_dtype,
        ("numpy.core.multiarray", "scalar"): lambda: _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): lambda: _numpy_scalar,
    }
    # Classes that may be instantiated, as inert records only (their code never runs).
    RECORD_MODULES = ("torch.nn.modules.", "dnnlib.util", "torch_utils.")

    def find_class(self, module: str, name: str):
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]()
        if module.startswith(self.RECORD_MODULES) and name[:1].isupper():
            return _record_class(f"{module}.{name}")
        raise UnsafePickleError(f"refusing to load: the pickle asks for {module}.{name}, which "
                                "could run code (only tensors and network state are read)")


def _flatten_module(record: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Parameters, buffers and plain attributes of a recorded nn.Module tree, by dotted name."""
    if depth > 64:
        raise CheckpointImportError("module tree nested deeper than 64 levels")
    state = record.state if isinstance(record, _Record) else None
    if not isinstance(state, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("_parameters", "_buffers"):
        for name, tensor in (state.get(key) or {}).items():
            if tensor is not None:
                out[prefix + name] = tensor
    for name, value in state.items():
        if not name.startswith("_") and isinstance(value, (int, float)):
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        out.update(_flatten_module(child, f"{prefix}{name}.", depth + 1))
    return out


def read_nvlabs_pickle(path: str | Path) -> dict[str, Any]:
    """Unpickle an NVlabs network pickle without executing its code.

    Returns the top-level dict with each network (``G``, ``D``, ``G_ema``, ...) as a flat dict of
    its tensors and numeric attributes by dotted name.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
        if not isinstance(data, dict):
            raise CheckpointImportError(f"expected a dict of networks, got {type(data).__name__}")
        return {key: _flatten_module(value) if isinstance(value, _Record) else value
                for key, value in data.items()}
    except FileNotFoundError:
        raise CheckpointImportError(f"{path}: file not found") from None
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except CheckpointImportError as e:
        raise CheckpointImportError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - truncated, not a pickle, or a malformed one
        raise CheckpointImportError(f"{path}: not a readable network pickle "
                                    f"({type(e).__name__}: {e})") from None


@_guarded
def load_nvlabs(path: str | Path, network: str = "G_ema") -> Generator:
    """Convert the generator ``network`` of an NVlabs stylegan2-ada-pytorch pickle."""
    path = Path(path)
    nets = read_nvlabs_pickle(path)
    src = nets.get(network)
    if not isinstance(src, dict) or "synthesis.b4.const" not in src:
        raise CheckpointImportError(f"{path}: no StyleGAN2 generator '{network}' in the pickle")
    if any(k.startswith("mapping.embed.") for k in src):
        raise CheckpointImportError(f"{path}: conditional generators (c_dim > 0) are not supported")
    fc_layers = sorted(int(m.group(1)) for k in src
                       if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    block_res = sorted(int(m.group(1)) for k in src
                       if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if any(k.startswith("synthesis.b4.conv0") for k in src) or block_res[0] != 4:
        raise CheckpointImportError(f"{path}: not a StyleGAN2 synthesis network "
                                    "(unexpected block layout)")
    if any(re.fullmatch(r"synthesis\.b\d+\.skip\.weight", k) for k in src):
        raise CheckpointImportError(f"{path}: only the 'skip' generator architecture is supported")
    channels = {r: src[f"synthesis.b{r}.conv1.weight"].shape[0] for r in block_res}
    channel_base, channel_max = _infer_channels(channels, path)
    conv_clamp = src.get("synthesis.b4.conv1.conv_clamp")
    config = StyleGAN2Config(
        resolution=block_res[-1], z_dim=src["mapping.fc0.weight"].shape[1],
        w_dim=src[f"mapping.fc{fc_layers[-1]}.weight"].shape[0], mapping_layers=len(fc_layers),
        mapping_lr_mul=float(src.get("mapping.fc0.bias_gain", 0.01)),
        channel_base=channel_base, channel_max=channel_max,
        conv_clamp=float(conv_clamp) if conv_clamp is not None else None, noise=True)

    state: dict[str, torch.Tensor] = {"mapping.w_avg": src["mapping.w_avg"],
                                      "synthesis.const": src["synthesis.b4.const"][None]}
    for i, layer in enumerate(fc_layers):
        state[f"mapping.layers.{i}.weight"] = src[f"mapping.fc{layer}.weight"]
        state[f"mapping.layers.{i}.bias"] = src[f"mapping.fc{layer}.bias"]

    def styled(ours: str, theirs: str) -> None:
        state[f"{ours}.conv.weight"] = src[f"{theirs}.weight"]
        state[f"{ours}.conv.affine.weight"] = src[f"{theirs}.affine.weight"]
        state[f"{ours}.conv.affine.bias"] = src[f"{theirs}.affine.bias"]
        state[f"{ours}.noise.weight"] = src[f"{theirs}.noise_strength"].reshape(1)
        state[f"{ours}.bias"] = src[f"{theirs}.bias"].view(1, -1, 1, 1)
        state[f"{ours}.noise_const"] = src[f"{theirs}.noise_const"][None, None]

    def to_rgb(ours: str, theirs: str) -> None:
        state[f"{ours}.conv.weight"] = src[f"{theirs}.weight"]
        state[f"{ours}.conv.affine.weight"] = src[f"{theirs}.affine.weight"]
        state[f"{ours}.conv.affine.bias"] = src[f"{theirs}.affine.bias"]
        state[f"{ours}.bias"] = src[f"{theirs}.bias"].view(1, 3, 1, 1)

    styled("synthesis.conv1", "synthesis.b4.conv1")
    to_rgb("synthesis.to_rgb1", "synthesis.b4.torgb")
    for i, res in enumerate(block_res[1:]):
        styled(f"synthesis.convs.{2 * i}", f"synthesis.b{res}.conv0")
        styled(f"synthesis.convs.{2 * i + 1}", f"synthesis.b{res}.conv1")
        to_rgb(f"synthesis.to_rgbs.{i}", f"synthesis.b{res}.torgb")
    return _load_into(Generator(config), state, path)
