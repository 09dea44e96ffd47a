"""Loading official checkpoints safely: unwrap, remap, resize, drop a mismatched head.

Training checkpoints are written by :func:`save_checkpoint` (atomic, sealed with a SHA-256). Files are read with
``torch.load(..., weights_only=True)``: tensors and plain containers only. The official
training scripts also pickle their run configuration (``argparse.Namespace`` in VOLO's timm-style files, a yacs
``CfgNode`` in LITv2's Swin-style files); those two are admitted as inert data (a namespace, a dict) so that the
files load, and anything else that would need code to run is refused with the list of offending objects.
``.safetensors`` files are read by a small reader here (no extra dependency).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


class _ConfigNode(dict):
    """Inert stand-in for ``yacs.config.CfgNode``: a dict, no code from the checkpoint runs."""

    def __setstate__(self, state):
        self.update(state if isinstance(state, dict) else {})


_METADATA_GLOBALS = [argparse.Namespace, (_ConfigNode, "yacs.config.CfgNode")]

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (8-byte header length, JSON header, raw little-endian data)."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file (too short)")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a safetensors file: bad header ({err})") from None
    body = memoryview(data)[8 + n:]
    out, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        count = 1
        for d in info["shape"]:
            count *= d
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(body)):
            raise ValueError(f"{path}: tensor {name} lies outside the file (offsets {start}..{end} of {len(body)} "
                             f"bytes); the file is truncated or damaged")
        if end - start != count * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name} has {end - start} bytes for shape {info['shape']} "
                             f"({count * dtype.itemsize} expected); the file is damaged")
        spans.append((start, end, name))
        raw = bytearray(body[start:end])
        tensor = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        out[name] = tensor.reshape(info["shape"])
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise ValueError(f"{path}: tensors {a} and {b} overlap in the file; it is damaged or crafted")
    return out


_SEAL = "visattn_sealed_checkpoint"


def save_checkpoint(obj, path, what: str = "the checkpoint") -> None:
    """Write ``obj`` atomically and sealed: the ``torch.save`` bytes go into a container with their SHA-256 (the
    digest covers the payload and the seal's own fields), in a temporary file beside ``path`` that is fsynced and
    renamed over it. A reader sees the old file or the new one, never a torn one, and :func:`load_file` detects any
    byte changed later. A failed write (disk full, file-size limit) raises ``OSError`` saying that the file at
    ``path`` is unchanged; ``what`` names the data in that message."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()
    sealed = {_SEAL: 1, "sha256": _digest(data), "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(sealed, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError (inline_container)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _write_failure(err, tmp)
        kept = "the previous file there is intact" if path.exists() else "nothing was written there"
        raise OSError(f"could not write {what} to {path} ({reason}); {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_failure(err: BaseException, tmp: Path) -> str:
    """Why a write failed, where torch's own message does not say (it reports positions, not the errno)."""
    text = str(err)
    for code in ("No space left on device", "File too large", "Disk quota exceeded"):
        if code.lower() in text.lower():
            return code
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and tmp.exists() and tmp.stat().st_size >= limit - 4096:
            return f"File too large: the file-size limit of this process (ulimit -f) is {limit} bytes"
    except (ImportError, OSError, ValueError):
        pass
    try:
        fs = os.statvfs(tmp.parent)
        if fs.f_bavail * fs.f_frsize < 1 << 20:
            return "No space left on device"
    except (AttributeError, OSError):
        pass
    return "the write failed: " + _first_line(err)


def _digest(data) -> str:
    """SHA-256 of the payload together with the seal's name and version, so that the seal's own fields are covered
    (a changed key fails the check instead of turning the file into an unknown dict)."""
    return hashlib.sha256(f"{_SEAL}:1:".encode() + bytes(data)).hexdigest()


def _looks_sealed(obj) -> bool:
    """A sealed container, even with one of its three fields damaged."""
    return isinstance(obj, dict) and len(obj) <= 3 and sum(k in obj for k in (_SEAL, "sha256", "payload")) >= 2


def _unseal(obj, path: Path, require: bool = False):
    if not _looks_sealed(obj):
        if require:
            raise ValueError(f"{path} is not a sealed visattn training checkpoint (not written by visattn train, or "
                             f"replaced since); move it away, or start a new run with --overwrite")
        return obj
    payload = obj.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or obj.get(_SEAL) != 1:
        raise ValueError(f"{path} is a damaged visattn checkpoint (its seal is broken); it is left in place, restore "
                         f"it from a copy or start without it")
    data = payload.numpy().tobytes()
    if obj.get("sha256") not in (_digest(data), hashlib.sha256(data).hexdigest()):  # the second: older files
        raise ValueError(f"{path} is corrupted: its contents do not match the SHA-256 recorded when it was written "
                         f"(the file was changed or damaged on disk); it is left in place, restore it from a copy "
                         f"or start without it")
    return _torch_load(io.BytesIO(data), path)


def load_file(path, sealed: bool = False) -> dict:
    """Read a checkpoint file without executing code from it (a sealed one is checked against its digest; with
    ``sealed`` an unsealed file is refused: a training run's own checkpoint).

    Any file that cannot be read as a checkpoint (empty, truncated, corrupted, not a checkpoint at all) raises one
    ``ValueError`` naming the file and the problem; a file whose pickle needs code raises ``ValueError`` too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a checkpoint")
    if path.suffix == ".safetensors":
        try:
            return read_safetensors(path)
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    return _unseal(_torch_load(path, path), path, require=sealed)


def _torch_load(source, path: Path):
    """``torch.load(source, weights_only=True)`` with the metadata globals, every failure one ``ValueError``."""
    try:
        with torch.serialization.safe_globals(_METADATA_GLOBALS):
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            offenders = torch.serialization.get_unsafe_globals_in_checkpoint(source)
        except Exception:  # noqa: BLE001  (not a zip checkpoint: report the loader's own message)
            offenders = []
        if not offenders and "global" not in str(err).lower():
            raise ValueError(f"{path} is not a readable checkpoint ({_first_line(err)})") from None
        raise ValueError(
            f"{path} needs code execution to unpickle ({', '.join(offenders) or _first_line(err)}); visattn only "
            f"loads weights. "
            f"If you trust the file, load it yourself with torch.load(path, weights_only=False) and pass the "
            f"state dict to load_official."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable checkpoint: it is truncated, corrupted or not a PyTorch "
                         f"file ({type(err).__name__}: {_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def unwrap(obj, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Find the state dict inside the official wrappers (``model``, ``state_dict``, ``state_dict_ema``...)."""
    if not isinstance(obj, dict):
        raise TypeError(f"a checkpoint must be a dict, got {type(obj).__name__}")
    order = ("state_dict_ema", "model_ema", "model", "state_dict") if use_ema else \
        ("model", "state_dict", "state_dict_ema", "model_ema")
    for key in order:
        if isinstance(obj.get(key), dict):
            return unwrap(obj[key], use_ema) if not _is_state_dict(obj[key]) else dict(obj[key])
    if _is_state_dict(obj):
        return dict(obj)
    raise ValueError(f"no state dict found in the checkpoint; its top-level keys are {sorted(obj)[:20]}")


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) for k in d) and any(isinstance(v, torch.Tensor) for v in d.values())


def strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DDP ``module.`` prefix; keep only ``backbone.*`` of detection / segmentation checkpoints."""
    if all(k.startswith("module.") for k in sd):  # DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):  # mmdet / mmseg: keep the backbone
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


@dataclass
class LoadReport:
    """What :func:`load_official` did."""

    loaded: int = 0
    dropped: list[str] = field(default_factory=list)  # checkpoint keys left out (head of another class count)
    adopted: list[str] = field(default_factory=list)  # model tensors that took the checkpoint's shape (VOLO grid)
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks (strict=False only)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model lacks (strict=False only)
    new: list[str] = field(default_factory=list)  # model keys of layers no official checkpoint has (VOLO's pyramid)


def load_official(model: nn.Module, source, strict: bool = True, use_ema: bool = False) -> LoadReport:
    """Load an official checkpoint (path or already-loaded object) into a visattn model.

    * unwraps ``model`` / ``state_dict`` / ``state_dict_ema`` (``use_ema`` prefers the EMA weights), strips a
      ``module.`` prefix and keeps only ``backbone.*`` of detection/segmentation checkpoints;
    * adopts the checkpoint's position-embedding grid (VOLO: a 384-px fine-tune makes the model a 384-px model);
    * drops the classifier (``head``, ``aux_head``) when its class count differs from the model's or the model
      has none (``num_classes=0``, ``features_only``);
    * layers the model adds to the official architecture (``model._new_modules``: VOLO's feature pyramid) keep
      their initialisation when the checkpoint lacks them and are listed in ``LoadReport.new``;
    * with ``strict`` (default) any other missing or unexpected key, and any shape mismatch, raises ``ValueError``.
    """
    if isinstance(getattr(model, "backbone", None), nn.Module) and hasattr(model, "feature_info"):
        model = model.backbone  # a feature extractor: the weights are its backbone's
    obj = load_file(source) if isinstance(source, (str, Path)) else source
    sd = strip_prefixes(unwrap(obj, use_ema))
    not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"the state dict holds entries that are not tensors: {not_tensors[:10]}; not a checkpoint "
                         f"of weights")
    report = LoadReport()
    planned = model.official_shapes(sd) if hasattr(model, "official_shapes") else {}  # checked, nothing changed yet
    own = {k: (torch.empty(planned[k], device="meta") if k in planned else v) for k, v in model.state_dict().items()}
    pruned = tuple(f"{p}." for p in getattr(model, "pruned", ()))
    for key in list(sd):
        top = key.split(".")[0]
        if top in ("head", "aux_head") and (key not in own or own[key].shape != sd[key].shape):
            report.dropped.append(key)
            del sd[key]
        elif key not in own and (key.startswith(pruned) or f"{key}." in pruned):
            report.dropped.append(key)  # removed for feature extraction
            del sd[key]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError("shape mismatch between checkpoint and model (is this the right variant?):\n  "
                         + "\n  ".join(mismatched[:20]))
    new_prefixes = tuple(f"{m}." for m in getattr(model, "_new_modules", ()))
    report.new = sorted(k for k in own if k not in sd and k.startswith(new_prefixes)) if new_prefixes else []
    missing = sorted(k for k in own if k not in sd and not k.startswith(("head.", "aux_head.")) and k not in report.new)
    unexpected = sorted(k for k in sd if k not in own)
    if strict and (missing or unexpected):
        raise ValueError(f"checkpoint does not fit the model: {len(missing)} missing keys {missing[:10]}, "
                         f"{len(unexpected)} unexpected keys {unexpected[:10]}; check the variant or pass strict=False")
    bad_dtype = [f"{k}: {v.dtype} for a {own[k].dtype} tensor" for k, v in sd.items()
                 if k in own and isinstance(v, torch.Tensor) and own[k].is_floating_point() != v.is_floating_point()]
    if bad_dtype:
        raise ValueError("the checkpoint holds integer / bool tensors where the model has floating-point weights (or "
                         "the reverse); it is not a checkpoint of this model:\n  " + "\n  ".join(bad_dtype[:10]))
    if hasattr(model, "adopt_shapes"):  # every check passed: only now is the model changed
        report.adopted = model.adopt_shapes(planned)
    result = model.load_state_dict(sd, strict=False)
    report.missing = sorted(k for k in result.missing_keys if k not in report.new)
    report.unexpected = sorted(result.unexpected_keys)
    report.loaded = len(sd) - len(report.unexpected)
    return report
