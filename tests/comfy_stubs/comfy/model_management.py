"""Stand-in for comfy.model_management: devices, memory requests and cache clearing, recorded."""

import torch

OOM_EXCEPTION = torch.cuda.OutOfMemoryError
torch_device = torch.device("cpu")
intermediate = torch.device("cpu")
freed = []  # (memory_required, device) of each free_memory call
cache_clears = 0


def get_torch_device():
    return torch_device


def intermediate_device():
    return intermediate


def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006 (ComfyUI's signature)
    freed.append((memory_required, device))


def soft_empty_cache(force=False):
    global cache_clears
    cache_clears += 1
