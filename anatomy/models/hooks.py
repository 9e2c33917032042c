"""Hook points named the TransformerLens way, on any Hugging Face causal LM.

`blocks.L.hook_resid_pre` is the residual stream entering decoder layer L, `blocks.L.hook_resid_post`
the stream leaving it; `blocks.L.hook_attn_out` and `blocks.L.hook_mlp_out` are what the layer's
attention and MLP write into it (so resid_post = resid_pre + attn_out + mlp_out in a pre-norm
layer). The same named hooks read activations for the audit and edit them
during training, because they sit on the Hugging Face modules that TRL trains.

    with hooks(model, {"blocks.1.hook_resid_post": lambda act: act * 0}):
        model(input_ids)          # hooks are removed on exit, also if the forward raises
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from anatomy.errors import AnatomyError

HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|attn_out|mlp_out)$")
POINTS = "blocks.L.hook_resid_pre, blocks.L.hook_resid_post, blocks.L.hook_attn_out or blocks.L.hook_mlp_out"
# The attribute that holds a decoder layer's attention / MLP, across Hugging Face architectures.
SUBMODULES = {"attn_out": ("self_attn", "attn", "attention", "self_attention"),
              "mlp_out": ("mlp", "feed_forward", "ffn")}
# Layers that normalize each branch's output before adding it (Gemma 2 and 3, OLMo 2): the hook point,
# as TransformerLens defines it, is what is added to the stream, so the norm's output (in Llama the
# same `post_attention_layernorm` name is the MLP's *input* norm, and there is no feed-forward one).
POST_NORMS = {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm"}
# sae-lens names a hook on an AutoModelForCausalLM by module path: the layer's output.
HF_LAYER_RE = re.compile(r"^(?:model\.layers|transformer\.h|gpt_neox\.layers|model\.decoder\.layers)\.(\d+)$")

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def canonical_hook_name(name: str) -> str:
    """`model.layers.3` (a Hugging Face module path) -> `blocks.3.hook_resid_post`; TL names unchanged."""
    match = HF_LAYER_RE.match(name)
    return f"blocks.{match.group(1)}.hook_resid_post" if match else name


def parse_hook(name: str, n_layers: int) -> tuple[int, str]:
    """(layer, 'resid_pre' | 'resid_post' | 'attn_out' | 'mlp_out'), or an error naming the valid points."""
    match = HOOK_RE.match(canonical_hook_name(name))
    if not match:
        raise AnatomyError(f"unsupported hook point {name!r}: use {POINTS}")
    layer = int(match.group(1))
    if layer >= n_layers:
        raise AnatomyError(f"hook {name!r}: layer {layer} does not exist; the model has layers 0..{n_layers - 1}")
    return layer, match.group(2)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (the longest ModuleList of length num_hidden_layers)."""
    n = getattr(model.config, "num_hidden_layers", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and (n is None or len(m) == n)]
    if not candidates:
        raise AnatomyError(f"cannot find the decoder layers of {type(model).__name__}")
    return max(candidates, key=len)


def submodule(layer: nn.Module, point: str) -> nn.Module:
    """The module whose output is the layer's `attn_out` / `mlp_out`: its attention / MLP, or the norm
    applied to that output where the layer has one (POST_NORMS)."""
    if isinstance(getattr(layer, "post_feedforward_layernorm", None), nn.Module):
        return getattr(layer, POST_NORMS[point])
    for attr in SUBMODULES[point]:
        if isinstance(getattr(layer, attr, None), nn.Module):
            return getattr(layer, attr)
    raise AnatomyError(
        f"hook_{point}: {type(layer).__name__} has none of the attributes {', '.join(SUBMODULES[point])}; "
        "use blocks.L.hook_resid_pre or blocks.L.hook_resid_post on this model"
    )


def hook_module(layers: nn.ModuleList, name: str) -> tuple[nn.Module, str]:
    """The module a hook point sits on, and the point: `resid_pre` is the layer's input, `resid_post`
    its output, `attn_out` / `mlp_out` the output of its attention / MLP (`submodule`)."""
    layer, point = parse_hook(name, len(layers))
    return (submodule(layers[layer], point) if point in SUBMODULES else layers[layer]), point


def check_points(model: nn.Module, names: list[str]) -> None:
    """Each hook point exists on this model's modules (an attention / MLP output needs the module), so
    a model without one fails once it loads, not at the first forward pass that uses the point."""
    layers = decoder_layers(model)
    for name in names:
        hook_module(layers, name)


def _replace(output, new):
    if isinstance(output, tuple):
        return (new,) + tuple(output[1:])
    return new


@contextmanager
def hooks(model: nn.Module, fns: dict[str, HookFn]):
    """Apply `fn(activation) -> new activation | None` at each named hook point, then remove them."""
    layers = decoder_layers(model)
    handles = []
    try:
        for name, fn in fns.items():
            module, point = hook_module(layers, name)
            if point != "resid_pre":  # an output: the layer's, or its attention's / MLP's

                def post(module, args, output, fn=fn):
                    act = output[0] if isinstance(output, tuple) else output
                    new = fn(act)
                    return None if new is None else _replace(output, new)

                handles.append(module.register_forward_hook(post))
            else:

                def pre(module, args, kwargs, fn=fn):
                    act = args[0] if args else kwargs["hidden_states"]
                    new = fn(act)
                    if new is None:
                        return None
                    if args:
                        return (new,) + tuple(args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": new}

                handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Stop(Exception):
    pass


@torch.no_grad()
def capture(model: nn.Module, hook: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Activations at `hook` (batch, seq, d_model); the forward pass stops there (no wasted layers)."""
    store: dict[str, torch.Tensor] = {}

    def grab(act):
        store["act"] = act.detach()
        raise _Stop

    with hooks(model, {hook: grab}):
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _Stop:
            pass
    return store["act"]
