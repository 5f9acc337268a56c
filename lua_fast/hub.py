"""Checkpoints from the Hugging Face Hub: ``hf://owner/repo[@revision]/path/in/repo``.

Downloads go through ``huggingface_hub.hf_hub_download`` (the optional ``hub`` extra:
``pip install "lua_fast[hub]"``), so its cache (``HF_HOME`` / ``HF_HUB_CACHE``), its token and
its offline mode (``HF_HUB_OFFLINE=1``: cache only) apply unchanged. The downloaded file is then
read and validated like any local checkpoint.
"""

from __future__ import annotations

from .errors import HubError

PREFIX = "hf://"
RELEASED = "hf://vaskers5/LUA-FLUX/lua_flux.pth"  # the released FLUX checkpoint


def is_hub_path(source) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str, str | None]:
    """``hf://owner/repo[@revision]/file`` -> (repo_id, filename, revision)."""
    parts = spec[len(PREFIX):].split("/")
    if len(parts) < 3 or not all(parts):
        raise HubError(f"{spec!r} is not a hub path: expected hf://owner/repo[@revision]/path/to/file")
    owner, repo, filename = parts[0], parts[1], "/".join(parts[2:])
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return f"{owner}/{repo}", filename, revision


def download(spec: str) -> str:
    """The local path of ``spec``, downloaded into (or found in) the Hugging Face cache."""
    repo_id, filename, revision = parse(spec)
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as exc:
        raise HubError(
            f"loading {spec} needs huggingface_hub ({exc}); install it with pip install \"lua_fast[hub]\", "
            "or download the file yourself and pass its local path"
        ) from None
    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, library_name="lua_fast")
    except Exception as exc:  # the hub's own error types differ across versions: classify by name
        name = type(exc).__name__
        if name == "LocalEntryNotFoundError" or constants.HF_HUB_OFFLINE:
            raise HubError(
                f"{spec} is not in the local Hugging Face cache and downloading is not possible "
                f"({'HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else 'no connection'}); download it "
                f"once online (huggingface-cli download {repo_id} {filename}) or pass a local path"
            ) from exc
        if name in ("RepositoryNotFoundError", "EntryNotFoundError", "RemoteEntryNotFoundError",
                    "RevisionNotFoundError", "GatedRepoError"):
            raise HubError(f"{spec}: {name} ({str(exc).splitlines()[0] if str(exc) else ''})") from exc
        raise HubError(f"downloading {spec} failed: {name}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
