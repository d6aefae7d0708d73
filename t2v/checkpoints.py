"""Checkpoints in the object store, in the released Step-Video-T2V layout.

A DiT checkpoint folder is a diffusers model folder, as the release's ``transformer/`` is, so the released
``StepVideoModel.from_pretrained(<folder>)`` serves a DiT trained here::

    <uri>/config.json        the release's keys (``_class_name: StepVideoModel``, num_layers, caption_channels
                             [llm, clip], ...) plus ``_t2v_config``: this project's full DiTConfig (diffusers
                             ignores keys that start with ``_``)
    <uri>/diffusion_pytorch_model.safetensors                        one file, or when larger than a shard:
    <uri>/diffusion_pytorch_model-00001-of-0000N.safetensors ...     shards and
    <uri>/diffusion_pytorch_model.safetensors.index.json             the index (``weight_map``: name -> file)
    <uri>/training_state.json                                        step, stage, lineage (optional)

A VAE checkpoint folder is the release's ``vae/`` folder: ``vae_v2.safetensors`` with the release's keys
(the file names the decoder's last conv ``decoder.conv_out.*``), plus ``config.json`` with the project's
VAEConfig (the release reads none; a folder without one gets the released configuration).

Both loaders also take the released folders as they are (``transformer/`` or ``vae/``, or the model root
holding them). Networks are built on the meta device and the checkpoint's tensors are assigned into them,
so a 30B DiT is never initialised at random first; :func:`verify` checks a checkpoint's names, shapes and
dtypes against a configuration from the safetensors headers alone, without reading any weights.

Saving writes into a local staging folder and publishes it (the weights before the small files) so a
reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2v import storage
from t2v.errors import UserError

log = logging.getLogger(__name__)

DIT_WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_WEIGHTS = "vae_v2.safetensors"
#: the file name project VAE checkpoints had before they took the release's (still read)
LEGACY_VAE_WEIGHTS = "vae.safetensors"
#: diffusers' default largest shard; a tiny checkpoint is one file, the 30B DiT about six
MAX_SHARD_SIZE = "10GB"

RELEASE_DIT_CLASS = "StepVideoModel"
#: the diffusers version stamped into config.json (informational; the release was published against it)
DIFFUSERS_VERSION = "0.31.0"


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit the network it is loaded into (names, shapes, files)."""


def index_name(weights_name: str) -> str:
    return f"{weights_name}.index.json"


# --------------------------------------------------------------------------------------------------------
# config.json in the release's keys


def release_dit_config(cfg) -> dict[str, Any]:
    """The diffusers ``config.json`` the release's ``StepVideoModel`` reads, with our DiTConfig beside it.

    The release hard-codes what its constructor does not take (FFN x4, RoPE split 64/32/32 over 128-d
    heads, block LayerNorm eps 1e-5, q/k RMSNorm eps 1e-6, timestep x1000); a DiT that differs there still
    saves and loads here, but only the released shapes can be served by the released code.
    """
    return {
        "_class_name": RELEASE_DIT_CLASS,
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_attention_heads": cfg.num_attention_heads,
        "attention_head_dim": cfg.attention_head_dim,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "num_layers": cfg.num_layers,
        "dropout": 0.0,
        "patch_size": cfg.patch_size,
        "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False,
        "norm_eps": cfg.norm_eps,
        "use_additional_conditions": False,
        "caption_channels": [cfg.caption_channels, cfg.clip_channels],
        "attention_type": "parallel",
        "_t2v_config": cfg.model_dump(mode="json"),
    }


#: how a DiT ran, which checkpoints written before the network config held the architecture alone carry
#: in their config; dropped when read (they are training or inference settings now)
LEGACY_RUNTIME_KEYS = ("attention_backend", "activation_checkpointing")


def _architecture(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in LEGACY_RUNTIME_KEYS}


def dit_config_from_json(config: dict[str, Any]):
    """DiTConfig from a checkpoint's config.json: ours (``_t2v_config``), the release's keys, or a project
    checkpoint written before this layout (the DiTConfig fields at the top level)."""
    from model.config import DiTConfig

    if "_t2v_config" in config:
        return DiTConfig.model_validate(_architecture(config["_t2v_config"]))
    if config.get("_class_name") != RELEASE_DIT_CLASS:
        return DiTConfig.model_validate(_architecture(config))
    if config.get("use_additional_conditions"):
        raise CheckpointError(
            "config.json: use_additional_conditions=true (size/fps embedders) is not supported"
        )
    channels = config.get("caption_channels", [6144, 1024])
    if isinstance(channels, int) or len(channels) != 2:
        raise CheckpointError(f"config.json: caption_channels={channels!r}; expected [llm width, clip width]")
    out_channels = config.get("out_channels") or config.get("in_channels", 64)
    return DiTConfig(
        num_layers=config.get("num_layers", 48),
        num_attention_heads=config.get("num_attention_heads", 48),
        attention_head_dim=config.get("attention_head_dim", 128),
        in_channels=config.get("in_channels", 64),
        out_channels=out_channels,
        patch_size=config.get("patch_size", 1),
        caption_channels=channels[0],
        clip_channels=channels[1],
        norm_eps=config.get("norm_eps", 1e-6),
    )


# --------------------------------------------------------------------------------------------------------
# saving


def shard_plan(sizes: dict[str, int], max_shard_size: int | str = MAX_SHARD_SIZE) -> list[list[str]]:
    """Names grouped into shards of at most ``max_shard_size`` bytes, in the given order (a tensor larger
    than the limit gets a shard of its own)."""
    from huggingface_hub.serialization._base import parse_size_to_int

    limit = parse_size_to_int(max_shard_size) if isinstance(max_shard_size, str) else int(max_shard_size)
    shards: list[list[str]] = [[]]
    filled = 0
    for name, size in sizes.items():
        if shards[-1] and filled + size > limit:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    return shards


def save_tensors(
    tensors: Iterable[tuple[str, Any]],
    sizes: dict[str, int],
    config: dict[str, Any],
    uri: str,
    weights_name: str,
    state: dict[str, Any] | None = None,
    max_shard_size: int | str = MAX_SHARD_SIZE,
) -> dict[str, Any]:
    """Write a checkpoint from a stream of ``(name, tensor)`` in the order of ``sizes`` (name -> bytes).

    Only one shard's tensors are held at a time: each shard is written and uploaded when its last tensor
    arrives, so a caller can gather a sharded model tensor by tensor. Layout as diffusers writes it: one
    ``weights_name`` file, or numbered shards ``<stem>-0000i-of-0000n.safetensors`` with an index; then
    ``config.json`` (and ``training_state.json``). Returns manifest file entries keyed by file name."""
    from safetensors.torch import save_file

    plan = shard_plan(sizes, max_shard_size)
    stem = weights_name.removesuffix(".safetensors")
    names = [weights_name] if len(plan) == 1 else [f"{stem}-{i:05d}-of-{len(plan):05d}.safetensors" for i in range(1, len(plan) + 1)]
    shard_of = {name: index for index, shard in enumerate(plan) for name in shard}
    entries: dict[str, Any] = {}
    weight_map: dict[str, str] = {}
    pending: dict[str, Any] = {}
    shard = 0
    with tempfile.TemporaryDirectory(prefix="t2v-ckpt-") as tmp:
        tmp = Path(tmp)

        def flush(index: int) -> None:
            save_file(pending, str(tmp / names[index]), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(pending, names[index]))
            entries.update(storage.upload_files(tmp, [names[index]], uri))
            (tmp / names[index]).unlink()
            pending.clear()

        for name, tensor in tensors:
            if name not in shard_of:
                raise ValueError(f"tensor {name!r} is not in the shard plan")
            while shard_of[name] != shard:
                flush(shard)
                shard += 1
            pending[name] = tensor.detach().contiguous().cpu()
        if len(weight_map) + len(pending) != len(sizes):
            missing = [n for n in sizes if n not in weight_map and n not in pending]
            raise ValueError(f"the tensor stream ended early: {missing[:5]} not written")
        flush(shard)
        small = []
        if len(plan) > 1:
            index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / index_name(weights_name)).write_text(json.dumps(index, indent=2, sort_keys=True))
            small.append(index_name(weights_name))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        small.append("config.json")
        if state is not None:
            (tmp / "training_state.json").write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
            small.append("training_state.json")
        entries.update(storage.upload_files(tmp, small, uri))
    return dict(sorted(entries.items()))


def save(
    model,
    config: dict[str, Any],
    uri: str,
    weights_name: str,
    state: dict[str, Any] | None = None,
    max_shard_size: int | str = MAX_SHARD_SIZE,
) -> dict[str, Any]:
    """Save ``model`` (a torch module) to ``uri``; returns manifest file entries keyed by file name.

    ``config`` is written as ``config.json`` as given (use :func:`release_dit_config` for a DiT). Weights
    larger than ``max_shard_size`` are split into numbered shards with an index, as diffusers does.
    """
    tensors = model.state_dict()
    sizes = {k: v.numel() * v.element_size() for k, v in tensors.items()}
    return save_tensors(tensors.items(), sizes, config, uri, weights_name, state, max_shard_size)


def save_dit(dit, uri: str, state: dict[str, Any] | None = None, **kwargs) -> dict[str, Any]:
    return save(dit, release_dit_config(dit.cfg), uri, DIT_WEIGHTS, state=state, **kwargs)


def save_vae(vae, uri: str, state: dict[str, Any] | None = None, **kwargs) -> dict[str, Any]:
    return save(vae, vae.cfg.model_dump(mode="json"), uri, VAE_WEIGHTS, state=state, **kwargs)


# --------------------------------------------------------------------------------------------------------
# reading


def weight_files(folder: Path, weights_name: str) -> list[Path]:
    """The safetensors files of ``weights_name`` in a local folder: the shards its index names, or the file."""
    index = folder / index_name(weights_name)
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise CheckpointError(f"{index}: names shards that are not there: {missing}")
        return files
    single = folder / weights_name
    if single.is_file():
        return [single]
    raise CheckpointError(f"{folder}: neither {weights_name} nor {index.name}")


DIT_CANDIDATES = [("", DIT_WEIGHTS), ("transformer", DIT_WEIGHTS)]
VAE_CANDIDATES = [("", VAE_WEIGHTS), ("", LEGACY_VAE_WEIGHTS), ("vae", VAE_WEIGHTS)]


@contextmanager
def checkpoint_folder(uri: str, candidates: list[tuple[str, str]]) -> Iterator[tuple[Path, str]]:
    """(local folder, weights name) of the first candidate (sub folder, weights name) under ``uri`` that
    holds weights, one file or an index. On S3 only that sub folder is downloaded, for the duration."""
    for sub, name in candidates:
        base = storage.join(uri, sub) if sub else uri
        if storage.exists(storage.join(base, name)) or storage.exists(storage.join(base, index_name(name))):
            with storage.local_dir_for(base) as folder:
                yield folder, name
            return
    looked = ", ".join(f"{sub + '/' if sub else ''}{name}" for sub, name in candidates)
    raise CheckpointError(f"{uri}: no checkpoint weights (looked for {looked}, also as sharded indexes)")


def read_weights_file(path: Path, device: str = "cpu") -> dict[str, Any]:
    """The tensors of one weights file: safetensors (recognised by its header, whatever the file's name) or
    a torch pickle read with ``weights_only`` (a ``{"state_dict": ...}`` wrapper is unwrapped)."""
    import torch
    from safetensors.torch import load_file

    with open(path, "rb") as handle:
        head = handle.read(9)
    try:
        if len(head) == 9 and head[8:9] == b"{":  # 8-byte little-endian header length, then the JSON header
            return load_file(str(path), device=device)
        state = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is "not a weights file"
        raise CheckpointError(
            f"{path}: not a safetensors or torch state dict ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def read_state_dict(files: list[Path], device: str = "cpu") -> dict[str, Any]:
    """The tensors of several weights files (shards), merged."""
    state: dict[str, Any] = {}
    for path in files:
        state.update(read_weights_file(path, device))
    return state


def load_state_dict(uri: str, weights_name: str) -> dict[str, Any]:
    """All tensors of a checkpoint (one file or shards), on CPU, keyed by the release's names. For the DiT
    and VAE weights names the released folders (``transformer/``, ``vae/``) are looked in too."""
    by_name = {DIT_WEIGHTS: DIT_CANDIDATES, VAE_WEIGHTS: VAE_CANDIDATES}
    candidates = by_name.get(weights_name, [("", weights_name)])
    with checkpoint_folder(uri, candidates) as (folder, name):
        return read_state_dict(weight_files(folder, name))


@contextmanager
def tensor_reader(uri: str, weights_name: str = DIT_WEIGHTS) -> Iterator[Any]:
    """``read(name) -> tensor`` over a checkpoint's safetensors files, one tensor at a time (memory-mapped),
    for a sharded load that never holds the whole state. ``read.names`` lists what the files hold."""
    from safetensors import safe_open

    if weights_name == DIT_WEIGHTS and is_adapter(uri):  # a LoRA adapter reads as its base, merged
        with merged_reader(read_adapter(uri)) as read:
            yield read
        return
    by_name = {DIT_WEIGHTS: DIT_CANDIDATES, VAE_WEIGHTS: VAE_CANDIDATES}
    with checkpoint_folder(uri, by_name.get(weights_name, [("", weights_name)])) as (folder, name):
        handles = [safe_open(str(path), framework="pt") for path in weight_files(folder, name)]
        where = {key: handle for handle in handles for key in handle.keys()}

        def read(key: str):
            if key not in where:
                raise CheckpointError(f"{uri}: no tensor {key!r}")
            return where[key].get_tensor(key)

        read.names = sorted(where)
        yield read


def assign_state(net, state: dict[str, Any], where: str, device="cpu", dtype=None):
    """Load ``state`` into a meta-built ``net`` by assignment (no second copy, no random init), after
    checking names and shapes (a :class:`CheckpointError` names what does not fit); then cast to ``dtype``
    (None keeps the stored dtype) and move to ``device``."""
    import torch

    report = compare(_shapes_of(net), {k: (list(v.shape), _dtype_name(v.dtype)) for k, v in state.items()})
    report.raise_if_bad(where)
    net.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if leftovers:
        raise CheckpointError(f"{where}: still unset after loading: {leftovers[:5]}")
    if dtype is not None:
        net = net.to(dtype=dtype)
    elif any(t.dtype != torch.float32 for t in state.values()):
        log.info("%s: weights kept in their stored dtype (%s)", where, {str(t.dtype) for t in state.values()})
    return net.to(device).eval()


def vae_config_at(folder: Path):
    """The VAEConfig a folder states; the released ``vae/`` folder has no config.json: the released one."""
    from model.config import VAEConfig

    config = folder / "config.json"
    return VAEConfig.model_validate(json.loads(config.read_text())) if config.is_file() else VAEConfig()


CANDIDATES = {"dit": DIT_CANDIDATES, "vae": VAE_CANDIDATES}


def meta_network(network: str, folder: Path, cfg=None):
    """The ``network`` ("dit" or "vae") built on the meta device from ``cfg`` (default: the configuration the
    checkpoint folder states), so nothing is allocated until weights are assigned."""
    import torch

    from model.dit import StepVideoDiT
    from model.vae import CausalVideoVAE

    if network not in CANDIDATES:
        raise ValueError(f"network must be 'dit' or 'vae', got {network!r}")
    if cfg is None:
        if network == "dit":
            cfg = dit_config_from_json(json.loads((folder / "config.json").read_text()))
        else:
            cfg = vae_config_at(folder)
    with torch.device("meta"):
        return StepVideoDiT(cfg) if network == "dit" else CausalVideoVAE(cfg)


def _load(uri: str, network: str, device, dtype):
    with checkpoint_folder(uri, CANDIDATES[network]) as (folder, name):
        net = meta_network(network, folder)
        return assign_state(
            net, read_state_dict(weight_files(folder, name)), f"{uri} ({network})", device, dtype
        )


def load_dit(uri: str, device: str = "cpu", dtype=None):
    """A :class:`~model.dit.StepVideoDiT` from a project checkpoint or a released ``transformer/`` folder
    (or the released model root), or a LoRA adapter folder (its base with the adapter merged in).
    ``dtype`` casts after loading (None keeps the stored dtype)."""
    if is_adapter(uri):
        return load_dit_with_adapter(read_adapter(uri), device, dtype)
    return _load(uri, "dit", device, dtype)


def load_vae(uri: str, device: str = "cpu", dtype=None):
    """A :class:`~model.vae.CausalVideoVAE` from a project checkpoint or the released ``vae/`` folder."""
    return _load(uri, "vae", device, dtype)


# --------------------------------------------------------------------------------------------------------
# checking a checkpoint against a configuration without reading weights


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shapes_of(net) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in net.state_dict().items()}


def header_shapes(files: list[Path]) -> dict[str, tuple[list[int], str]]:
    """{name: (shape, dtype)} from safetensors headers only (no tensor data is read)."""
    from safetensors import safe_open

    _names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
    found: dict[str, tuple[list[int], str]] = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                tensor = f.get_slice(key)
                dtype = tensor.get_dtype()
                found[key] = (list(tensor.get_shape()), _names.get(dtype, dtype.lower()))
    return found


@dataclass
class CheckpointReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[list[int], list[int]]] = field(
        default_factory=dict
    )  # name: (expected, found)
    dtypes: dict[str, int] = field(default_factory=dict)  # stored dtype: tensor count
    tensors: int = 0
    parameters: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> list[str]:
        out = [f"missing {len(self.missing)}: {self.missing[:5]}"] if self.missing else []
        if self.unexpected:
            out.append(f"unexpected {len(self.unexpected)}: {self.unexpected[:5]}")
        for name, (want, got) in list(self.mismatched.items())[:5]:
            out.append(f"{name}: shape {got} in the checkpoint, {want} in the configuration")
        return out

    def raise_if_bad(self, where: str) -> None:
        if not self.ok:
            raise CheckpointError(f"{where} does not fit the configuration: " + "; ".join(self.problems()))


def compare(expected: dict[str, list[int]], found: dict[str, tuple[list[int], str]]) -> CheckpointReport:
    import math

    report = CheckpointReport(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        tensors=len(found),
        parameters=sum(math.prod(shape) for shape, _ in found.values()),
    )
    for name in sorted(set(expected) & set(found)):
        if list(found[name][0]) != list(expected[name]):
            report.mismatched[name] = (list(expected[name]), list(found[name][0]))
    for _, dtype in found.values():
        report.dtypes[dtype] = report.dtypes.get(dtype, 0) + 1
    return report


def verify(uri: str, network: str, cfg=None) -> CheckpointReport:
    """Compare a checkpoint's tensor names/shapes with ``network`` ("dit" or "vae") built on the meta device
    from ``cfg`` (default: the configuration the checkpoint states). Reads headers only."""
    if network not in CANDIDATES:
        raise ValueError(f"network must be 'dit' or 'vae', got {network!r}")
    with checkpoint_folder(uri, CANDIDATES[network]) as (folder, name):
        net = meta_network(network, folder, cfg)
        return compare(_shapes_of(net), header_shapes(weight_files(folder, name)))


# --------------------------------------------------------------------------------------------------------
# LoRA adapters, in peft's format
#
# An adapter folder is what peft's ``PeftModel.save_pretrained`` writes, plus one file of ours:
#
#     <uri>/adapter_config.json        peft's LoraConfig; base_model_name_or_path is the base checkpoint URI
#     <uri>/adapter_model.safetensors  base_model.model.<module>.lora_A.weight / .lora_B.weight
#     <uri>/t2v_adapter.json           the base checkpoint URI and, when known, its registered model version
#
# so ``PeftModel.from_pretrained(dit, <folder>)`` reads it. Everywhere a DiT checkpoint is read here
# (:func:`load_dit`, :func:`tensor_reader`) an adapter folder reads as its base with the adapter merged in,
# one tensor at a time (``W + scale * B @ A``, what peft's ``merge_and_unload`` computes; a test holds the
# two equal), so a 30B base is never held whole to apply an adapter.

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_LINEAGE = "t2v_adapter.json"
#: the prefix peft's PeftModel puts before a module's name in an adapter's weights
PEFT_PREFIX = "base_model.model."


def is_adapter(uri: str) -> bool:
    """Whether ``uri`` is a LoRA adapter folder (rather than a whole DiT checkpoint)."""
    return bool(uri) and storage.exists(storage.join(uri, ADAPTER_CONFIG))


@dataclass
class Adapter:
    """A LoRA adapter as read from its folder: ``pairs`` maps a module's name (the release's) to its
    (lora_A, lora_B) weights; ``scale`` is lora_alpha / r (or / sqrt(r) with rsLoRA)."""

    uri: str
    base_uri: str
    config: dict[str, Any]
    pairs: dict[str, tuple[Any, Any]]
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        rank, alpha = int(self.config["r"]), float(self.config["lora_alpha"])
        return alpha / rank**0.5 if self.config.get("use_rslora") else alpha / rank

    def delta(self, module: str):
        """``scale * B @ A``: what the adapter adds to ``module``'s weight."""
        a, b = self.pairs[module]
        return (b.float() @ a.float()) * self.scale


def read_adapter(uri: str) -> Adapter:
    """The adapter at ``uri``; a :class:`CheckpointError` when it is not a plain LoRA adapter of the DiT
    this project reads (DoRA, per-module ranks and other peft methods are refused by name)."""
    from safetensors.torch import load_file

    config = storage.read_json(storage.join(uri, ADAPTER_CONFIG))
    if config.get("peft_type") != "LORA":
        raise CheckpointError(f"{uri}: a {config.get('peft_type')} adapter; only LoRA adapters are read")
    for key in ("use_dora", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise CheckpointError(f"{uri}: adapter_config.json sets {key}, which this loader does not apply")
    lineage = storage.read_json(storage.join(uri, ADAPTER_LINEAGE)) if storage.exists(storage.join(uri, ADAPTER_LINEAGE)) else {}
    base_uri = lineage.get("base_checkpoint_uri") or config.get("base_model_name_or_path")
    if not base_uri:
        raise CheckpointError(f"{uri}: the adapter names no base checkpoint (base_model_name_or_path)")
    with storage.local_file_for(storage.join(uri, ADAPTER_WEIGHTS)) as path:
        tensors = load_file(str(path))
    halves: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix(PEFT_PREFIX)
        for half in ("lora_A", "lora_B"):
            marker = f".{half}."
            if marker in name:
                halves.setdefault(name.split(marker)[0], {})[half] = tensor
    broken = sorted(m for m, h in halves.items() if set(h) != {"lora_A", "lora_B"})
    if broken or not halves:
        raise CheckpointError(f"{uri}: {ADAPTER_WEIGHTS} holds no complete lora_A/lora_B pairs {broken[:3]}")
    pairs = {m: (h["lora_A"], h["lora_B"]) for m, h in sorted(halves.items())}
    return Adapter(uri, base_uri, config, pairs, lineage)


def write_adapter(
    uri: str, config: dict[str, Any], pairs: dict[str, tuple[Any, Any]], lineage: dict[str, Any]
) -> dict[str, Any]:
    """Write an adapter folder (peft's two files and ours); returns manifest file entries by file name.
    ``config`` is a peft ``LoraConfig.to_dict()``; ``pairs`` maps module names to (lora_A, lora_B)."""
    from safetensors.torch import save_file

    tensors = {}
    for module, (a, b) in pairs.items():
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a.detach().contiguous().cpu()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b.detach().contiguous().cpu()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    with tempfile.TemporaryDirectory(prefix="t2v-adapter-") as tmp:
        tmp = Path(tmp)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        (tmp / ADAPTER_LINEAGE).write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str))
        return dict(sorted(storage.upload_files(tmp, [ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_LINEAGE], uri).items()))


def _base_of(adapter: Adapter) -> str:
    if is_adapter(adapter.base_uri):
        raise CheckpointError(f"{adapter.uri}: its base {adapter.base_uri} is itself an adapter; merge that one first")
    return adapter.base_uri


@contextmanager
def merged_reader(adapter: Adapter) -> Iterator[Any]:
    """``read(name)`` over the adapter's base with the adapter merged into the weights it adapts."""
    with tensor_reader(_base_of(adapter)) as base:
        unknown = sorted(m for m in adapter.pairs if f"{m}.weight" not in base.names)
        if unknown:
            raise CheckpointError(f"{adapter.uri}: adapts modules its base {adapter.base_uri} lacks: {unknown[:5]}")
        targets = {f"{m}.weight": m for m in adapter.pairs}

        def read(key: str):
            tensor = base(key)
            if key in targets:
                tensor = (tensor.float() + adapter.delta(targets[key])).to(tensor.dtype)
            return tensor

        read.names = base.names
        yield read


def load_dit_with_adapter(adapter: Adapter, device: str = "cpu", dtype=None):
    """The adapter's base DiT with the adapter merged in (a plain :class:`~model.dit.StepVideoDiT`)."""
    with checkpoint_folder(_base_of(adapter), DIT_CANDIDATES) as (folder, _name):
        net = meta_network("dit", folder)
    with merged_reader(adapter) as read:
        state = {name: read(name) for name in read.names}
    return assign_state(net, state, f"{adapter.uri} (dit + adapter)", device, dtype)


def export_merged(adapter_uri: str, out_uri: str, max_shard_size: int | str = MAX_SHARD_SIZE) -> dict[str, Any]:
    """Write the adapter's base with the adapter merged in as a plain DiT checkpoint in the released layout
    (what ``StepVideoModel.from_pretrained`` reads), streaming one tensor at a time and one shard at a
    time, so a 30B base is never held whole. Returns the manifest file entries."""
    adapter = read_adapter(adapter_uri)
    base = _base_of(adapter)
    with checkpoint_folder(base, DIT_CANDIDATES) as (folder, name):
        config = json.loads((folder / "config.json").read_text())
        found = header_shapes(weight_files(folder, name))
    import math

    width = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
    sizes = {n: math.prod(shape) * width.get(dtype, 4) for n, (shape, dtype) in sorted(found.items())}
    state = {"merged_adapter": adapter_uri, "base_checkpoint_uri": base, **{k: v for k, v in adapter.lineage.items() if k != "base_checkpoint_uri"}}
    with merged_reader(adapter) as read:
        return save_tensors(((n, read(n)) for n in sizes), sizes, config, out_uri, DIT_WEIGHTS, state, max_shard_size)
