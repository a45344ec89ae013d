"""Speed-ups as named hooks in diffusers' HookRegistry: added and removed by name, never a forward set by reel.

    add_hook(module, hook, name)      # False if `module` already has a hook of that name
    remove_hook(module, name)         # True if it had one; with no hook left, the class's own forward again

The pattern of diffusers' own hooks (diffusers/hooks/first_block_cache.py): a `ModelHook` whose `new_forward`
computes the module's output, registered in the module's registry under a name, so it chains with diffusers'
hooks (First-Block-Cache, group offloading, layerwise casting) and comes off again (an empty registry stays).
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook


def add_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> bool:
    """Register `hook` on `module` as `name`; False (nothing changed) if a hook of that name is there already."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    if registry.get_hook(name) is not None:
        return False
    registry.register_hook(hook, name)
    return True


def has_hook(module: torch.nn.Module, name: str) -> bool:
    return HookRegistry.check_if_exists_or_initialize(module).get_hook(name) is not None


def remove_hook(module: torch.nn.Module, name: str) -> bool:
    """Take the hook `name` off `module` (and only it); True if it was there."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    if registry.get_hook(name) is None:
        return False
    registry.remove_hook(name, recurse=False)
    _drop_restored_forward(module, registry)
    return True


def _drop_restored_forward(module: torch.nn.Module, registry: HookRegistry) -> None:
    """diffusers' remove_hook puts the forward it wrapped back as an instance attribute: a bound method of the
    class's own forward. Once no hook is left, deleting that attribute returns the instance to its class's
    forward exactly (no `forward` in vars(module)), as before any hook was added."""
    restored = vars(module).get("forward")
    if registry.hooks or restored is None:
        return
    if getattr(restored, "__func__", None) is type(module).forward and getattr(restored, "__self__", None) is module:
        del module.forward
