"""Bare state_dicts read as checkpoints: a user's own module and the reference TAAN code.

``torch.save(model.state_dict(), path)`` is the first thing a user of a custom training loop
writes, and the reference TAAN code writes nothing else. ``load_checkpoint`` reads both:

- taan's own key names, ``<layer>.alpha`` (T, M) with ``<layer>.hinges`` (M,) and, when present,
  the running statistics ``<layer>.preact_mean``, ``preact_var`` (T,), ``preact_mean_overall``,
  ``preact_var_overall`` (the data measure), where ``<layer>`` is the activation's qualified name
  (``l1.act`` for a ``TALinear`` named ``l1``);
- the reference code's, ``<layer>.alpha`` (T, M) with ``<layer>.basis`` (1, M) (``<layer>.b`` in
  its Omniglot network, whose layers are otherwise not in the repository: read for analysis).

When the whole file is a reference model (:func:`_reference_model`) it is also rebuilt as a
:class:`~taan_core.models.TAAN` or :class:`~taan_core.models.TAANConv` with its weights, so that
``model_from_checkpoint`` and ``taan-core eval`` work on it. Layouts recognised, as the
reference code's ``TAL_Linear`` and ``TAL_Conv2d`` store them:

- task-adaptive layers ``<p>.weight`` ((out, in) dense or (out, in, k, k) conv), ``<p>.bias``,
  ``<p>.alpha``, ``<p>.basis`` and optionally ``<p>.bn.*`` (BatchNorm before the activation);
  conv layers come first, each layer family in the numeric order of its name (``conv1``,
  ``conv2``, ...; ``layer1``, ``layer2``, ..., or ``fc1``);
- per-task linear heads ``net_<t>.0.*`` or ``net_<t>.*`` (YouTube-8M: tasks ``task_<t>``), or
  ``Output_<name>.*`` / ``TOutput_<name>.*`` (Omniglot: one head per alphabet, the task names).

Assumptions where the reference code leaves the layout open (stated in the checkpoint docs):
convolutions have stride 1 and no padding, each is followed by a 2x2 max-pool, images are
square (105 pixels when that fits the first dense layer, else the smallest size that does),
and named heads are ordered by name, as ``taan_core.data`` orders Omniglot's alphabets.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

from taan_core.checkpoint._history import history_value
from taan_core.checkpoint._schema import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    _fail,
    _parse,
    _Parsed,
    _shape,
    _tensor,
)

__all__: list[str] = []

_STATS = ("preact_mean", "preact_var", "preact_mean_overall", "preact_var_overall")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_NET_HEAD = re.compile(r"^net_(\d+)\.(?:0\.)?(weight|bias)$")
_NAMED_HEAD = re.compile(r"^T?Output_(.+)\.(weight|bias)$")


def _describe(state: Mapping[str, Any], limit: int = 6) -> str:
    keys = [k for k in state if isinstance(k, str)]
    shown = ", ".join(f"{k} {_shape(state[k]) if isinstance(state[k], Tensor) else type(state[k]).__name__}"
                      for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''}: {shown}{more}" if keys else "no keys"


def _hinges(state: Mapping[str, Any], name: str, m: int, path: Path) -> Tensor:
    if f"{name}.hinges" in state:
        hinges = _tensor(state[f"{name}.hinges"], path, f"{name}.hinges", 1, "(M,)")
        if hinges.shape[0] != m:
            raise _fail(path, f"{name}.hinges", f"expected shape (M,) with M = alpha.shape[1] = {m}, got {_shape(hinges)}")
        return hinges
    # The reference Omniglot code names its hinges '<layer>.b' (its TAAN.py passes them as the basis).
    key = f"{name}.basis" if f"{name}.basis" in state or f"{name}.b" not in state else f"{name}.b"
    if key not in state:
        raise _fail(path, f"{name}.basis", "missing key (every '<layer>.alpha' needs the reference code's "
                    "'<layer>.basis' (1, M) or taan's '<layer>.hinges' (M,))")
    basis = state[key]
    if isinstance(basis, Tensor) and basis.ndim == 2 and basis.shape[0] == 1:
        basis = basis[0]
    hinges = _tensor(basis, path, key, 1, "(1, M)")
    if hinges.shape[0] != m:
        raise _fail(path, key, f"expected shape (1, M) with M = alpha.shape[1] = {m}, got {_shape(state[key])}")
    return hinges


def _layer_entry(state: Mapping[str, Any], name: str, num_tasks: int | None, path: Path) -> dict:
    alpha = _tensor(state[f"{name}.alpha"], path, f"{name}.alpha", 2, "(T, M)")
    if num_tasks is not None and alpha.shape[0] != num_tasks:
        raise _fail(path, f"{name}.alpha", f"expected shape (T, M) with T = {num_tasks} like the first layer, "
                    f"got {_shape(alpha)}")
    entry: dict[str, Any] = {"name": name, "alpha": alpha, "hinges": _hinges(state, name, alpha.shape[1], path),
                             "preact_mean": None, "preact_std": None,
                             "preact_mean_overall": None, "preact_std_overall": None}
    if all(f"{name}.{key}" in state for key in _STATS):
        mean, var, mean_all, var_all = (state[f"{name}.{key}"] for key in _STATS)
        entry["preact_mean"] = mean.detach().double()
        entry["preact_std"] = var.detach().double().clamp_min(0).sqrt()
        entry["preact_mean_overall"] = float(mean_all)
        entry["preact_std_overall"] = float(var_all.clamp_min(0).sqrt())
    return entry


def import_state_dict(state: Mapping[str, Any], path: Path) -> tuple[_Parsed, dict | None]:
    """Read a bare state_dict: the checked layers and, for a whole reference model, a schema-v1
    dictionary with the rebuilt model (else None)."""
    if "alpha" in state and ("basis" in state or "hinges" in state):
        alpha, other = state["alpha"], "basis" if "basis" in state else "hinges"
        got = _shape(alpha) if isinstance(alpha, Tensor) else type(alpha).__name__
        raise _fail(path, "", f"found the state_dict of a single task-adaptive layer ('alpha' {got} and "
                    f"'{other}'), which names no layer; save the state_dict of the network that holds it, or "
                    "put the layer's name in front of its keys ('layer1.alpha', 'layer1.basis')")
    names = [k[: -len(".alpha")] for k in state if isinstance(k, str) and k.endswith(".alpha")]
    if not names:
        raise _fail(path, "", "expected a taan checkpoint (key 'format') or a state_dict with task-adaptive layers "
                    f"('<layer>.alpha' keys with '<layer>.hinges' or '<layer>.basis'), found neither: {_describe(state)}")
    layers: list[dict] = []
    for name in names:
        layers.append(_layer_entry(state, name, layers[0]["alpha"].shape[0] if layers else None, path))
    num_tasks = int(layers[0]["alpha"].shape[0])
    raw = _reference_model(state, names, num_tasks)
    not_rebuilt = raw if isinstance(raw, str) else None
    if not_rebuilt is not None:
        raw = {"task_names": [f"task_{t}" for t in range(num_tasks)], "model": {"class": "", "config": {},
                                                                              "state_dict": {}},
               "data": {"name": "unknown", "config": {}, "groups": None}}
    else:
        # The rebuilt model's order: its layers in depth order, its tasks as its heads.
        order = raw.pop("order")
        by_name = {entry["name"]: entry for entry in layers}
        names = raw.pop("layer_order")
        layers = [by_name[name] for name in names]
        for entry in layers:
            for key in ("alpha", "preact_mean", "preact_std"):
                if entry[key] is not None:
                    entry[key] = entry[key][order]
    raw.update(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, layer_names=names, layers=layers,
               history=history_value([], [tuple(entry["alpha"].shape) for entry in layers]), metrics=[],
               epoch=0, step=0)
    parsed = _parse(raw, path)._replace(format_version=0, not_rebuilt=not_rebuilt)
    return parsed, (raw if raw["model"]["class"] else None)


# ----------------------------------------------------------------------------------------------
# whole reference models


def _natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _heads(state: Mapping[str, Any], used: set[str]) -> tuple[list[str], list[tuple[Tensor, Tensor]], list[int]] | None:
    """Task names, (weight, bias) of every head and the order that sorts them, or None."""
    numbered: dict[int, dict[str, Tensor]] = {}
    named: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if (m := _NET_HEAD.match(key)) is not None:
            numbered.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif (m := _NAMED_HEAD.match(key)) is not None:
            named.setdefault(m.group(1), {})[m.group(2)] = value
        else:
            continue
        used.add(key)
    if bool(numbered) == bool(named):
        return None
    if numbered:
        if sorted(numbered) != list(range(len(numbered))):
            return None
        names = [f"task_{t}" for t in range(len(numbered))]
        params = [numbered[t] for t in range(len(numbered))]
        order = list(range(len(names)))
    else:
        names, params = list(named), list(named.values())
        order = sorted(range(len(names)), key=lambda i: names[i])
    if not all(set(p) == {"weight", "bias"} and p["weight"].ndim == 2 for p in params):
        return None
    return [names[i] for i in order], [(params[i]["weight"], params[i]["bias"]) for i in order], order


def _image_size(flat: int, channels: int, stages: int, kernel: int) -> int | None:
    """The square image side that leaves ``flat`` features after the conv stack, 105 first."""
    def features(side: int) -> int:
        for _ in range(stages):
            side = (side - kernel + 1) // 2
        return channels * side * side if side > 0 else 0

    if features(105) == flat:
        return 105
    return next((side for side in range(1, 4097) if features(side) == flat), None)


class _NotAModel(Exception):
    """The state_dict's layout is not a whole reference model; the message says why."""


def _reference_model(state: Mapping[str, Any], names: list[str], num_tasks: int) -> dict | str:
    """A checkpoint dictionary (task names, model, data) when ``state`` is a whole reference
    TAAN, with ``"order"``: the task permutation applied to the heads (and to alpha by the
    caller). For any other layout, why not (the layers are then read for analysis only)."""
    used: set[str] = set()
    try:
        heads = _heads(state, used)
        if heads is None:
            raise _NotAModel("no task heads named net.<t>.weight or Output_<name>.weight, or both kinds")
        task_names, head_params, order = heads
        if len(task_names) != num_tasks:
            raise _NotAModel(f"{len(task_names)} heads for {num_tasks} tasks")
        convs, dense, m = _reference_layers(state, names, used)
        model, config = _reference_network(convs, dense, [int(w.shape[0]) for w, _ in head_params], m,
                                           head_inputs=int(head_params[0][0].shape[1]))
        _load_reference_weights(model, state, convs, dense, head_params, order)
    except _NotAModel as why:
        return str(why)
    # The paper's two networks name their data sets; any other shape leaves it to the user.
    data_name = "unknown"
    if convs and config.input_shape[0] == 1 and not task_names[0].startswith("task_"):
        data_name = "omniglot"
    elif not convs and config.input_dim == 1152:
        data_name = "youtube8m"
    return {"task_names": task_names, "order": order, "layer_order": [layer[0] for layer in convs + dense],
            "model": {"class": type(model).__name__, "module": type(model).__module__,
                      "config": dataclasses.asdict(config),
                      "state_dict": {k: v.detach().to("cpu", copy=True).contiguous()
                                     for k, v in model.state_dict().items()}},
            "data": {"name": data_name, "config": {}, "groups": None}}


def _reference_layers(state: Mapping[str, Any], names: list[str], used: set[str]) -> tuple[list, list, int]:
    """The conv and dense layers ``(name, weight, bias, batch-norm state)`` in depth order, and
    the hinge count M; every key of ``state`` must belong to a layer or a head."""
    convs, dense = [], []
    for name in names:
        weight, bias, basis = (state.get(f"{name}.{k}") for k in ("weight", "bias", "basis"))
        if not all(isinstance(t, Tensor) for t in (weight, bias, basis)) or weight.ndim not in (2, 4):
            raise _NotAModel(f"layer {name} lacks a 2-D or 4-D weight, a bias or a basis")
        bn = {k: state[f"{name}.bn.{k}"] for k in _BN_KEYS if f"{name}.bn.{k}" in state}
        used.update({f"{name}.{k}" for k in ("weight", "bias", "alpha", "basis")} | {f"{name}.bn.{k}" for k in bn})
        (convs if weight.ndim == 4 else dense).append((name, weight, bias, bn))
    extra = sorted(k for k in state if k not in used)
    if extra:
        raise _NotAModel(f"keys of no layer or head ({', '.join(map(str, extra[:3]))}{', ...' if len(extra) > 3 else ''})")
    convs.sort(key=lambda layer: _natural(layer[0]))
    dense.sort(key=lambda layer: _natural(layer[0]))
    num_hinges = {int(state[f"{n}.alpha"].shape[1]) for n in names}
    if len(num_hinges) != 1:
        raise _NotAModel(f"the layers have different hinge counts {sorted(num_hinges)}")
    # Every layer needs a full BatchNorm or none; num_batches_tracked may be missing in old files.
    for name, _, _, bn in convs + dense:
        if bn and not {"weight", "bias", "running_mean", "running_var"} <= set(bn):
            raise _NotAModel(f"layer {name} has a partial batch norm ({', '.join(sorted(bn))})")
    return convs, dense, num_hinges.pop()


def _reference_network(convs: list, dense: list, output_dims: list[int], m: int, *, head_inputs: int):
    """The TAAN or TAANConv (and its config) with the layers' shapes (``head_inputs``: the
    heads' input width, the conv stack's flat output when there is no dense layer)."""
    from taan_core.models import TAAN, TAANConv, TAANConfig, TAANConvConfig

    try:
        if convs:
            kernels = {tuple(w.shape[2:]) for _, w, _, _ in convs}
            batch_norm = {bool(bn) for *_, bn in convs}
            if len(kernels) != 1 or len(batch_norm) != 1 or any(bn for *_, bn in dense):
                raise _NotAModel("the conv layers differ in kernel or batch norm, or a dense layer has batch norm")
            (k, k2), = kernels
            if k != k2:
                raise _NotAModel(f"the conv kernels are not square ({k}x{k2})")
            channels = [int(w.shape[0]) for _, w, _, _ in convs]
            flat = int(dense[0][1].shape[1]) if dense else head_inputs
            side = _image_size(flat, channels[-1], len(convs), k)
            if side is None:
                raise _NotAModel(f"no square image gives the {flat} features after the conv layers")
            config = TAANConvConfig(output_dims=output_dims, input_shape=[int(convs[0][1].shape[1]), side, side],
                                    channels=channels, kernel_size=k, padding=0,
                                    hidden=[int(w.shape[0]) for _, w, _, _ in dense], num_hinges=m,
                                    batch_norm=batch_norm.pop())
            return TAANConv(config), config
        batch_norm = {bool(bn) for *_, bn in dense}
        if len(batch_norm) != 1:
            raise _NotAModel("some dense layers have batch norm and some do not")
        config = TAANConfig(input_dim=int(dense[0][1].shape[1]), output_dims=output_dims,
                            hidden=[int(w.shape[0]) for _, w, _, _ in dense], num_hinges=m,
                            batch_norm=batch_norm.pop())
        return TAAN(config), config
    except (TypeError, ValueError) as err:
        raise _NotAModel(f"its shapes make no TAAN ({' '.join(str(err).split())[:120]})") from err


def _load_reference_weights(model, state: Mapping[str, Any], convs: list, dense: list, head_params: list,
                            order: list[int]) -> None:
    """Copy the reference weights into ``model`` under taan's names, tasks in head order."""
    target = model.state_dict()
    for prefix, layers in (("convs", convs), ("blocks", dense)):
        affine = "conv" if prefix == "convs" else "linear"
        for i, (name, weight, bias, bn) in enumerate(layers):
            target[f"{prefix}.{i}.{affine}.weight"] = weight
            target[f"{prefix}.{i}.{affine}.bias"] = bias
            target[f"{prefix}.{i}.act.alpha"] = state[f"{name}.alpha"][order]
            target[f"{prefix}.{i}.act.hinges"] = state[f"{name}.basis"].reshape(-1)
            for key, value in bn.items():
                target[f"{prefix}.{i}.bn.{key}"] = value
    for t, (weight, bias) in enumerate(head_params):
        target[f"heads.{t}.weight"], target[f"heads.{t}.bias"] = weight, bias
    try:
        model.load_state_dict(target)
    except RuntimeError as err:
        raise _NotAModel(f"its weights do not fit {type(model).__name__} ({' '.join(str(err).split())[:120]})") from err
