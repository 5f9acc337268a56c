"""Checkpoints from the Hugging Face Hub: ``hf://owner/repo[@revision]/path/in/repo`` (huggingface_hub's
own ``hf://`` syntax: ``datasets/`` or ``spaces/`` first for those repository types, ``@refs/pr/3``).

Downloads go through ``huggingface_hub.hf_hub_download`` (the optional ``hub`` extra:
``pip install "lua_fast[hub]"``), so its cache (``HF_HOME`` / ``HF_HUB_CACHE``), its token and
its offline mode (``HF_HUB_OFFLINE=1``: cache only) apply unchanged. The downloaded file is then
read and validated like any local checkpoint. A Hub file's https link (its ``/resolve/`` download
link or its ``/blob/`` page, as copied from the browser) is read as the ``hf://`` path it names;
other URLs are refused with what to pass instead.
"""

from __future__ import annotations

import re
import shlex
from typing import NamedTuple, TypeGuard
from urllib.parse import unquote

from .errors import HubError

PREFIX = "hf://"
RELEASED = "hf://vaskers5/LUA-FLUX/lua_flux.pth"  # the released FLUX checkpoint


def is_hub_path(source: object) -> TypeGuard[str]:
    return isinstance(source, str) and source.startswith(PREFIX)


# A file's page or download link on the Hub, as its "copy link" and download buttons give them:
# https://huggingface.co/[datasets/|spaces/]owner/repo/(resolve|blob)/revision/path[?download=true]
_HUB_URL = re.compile(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/((?:datasets/|spaces/)?[^/?#]+/[^/?#]+)"
                      r"/(?:resolve|blob)/([^/?#]+)/([^?#]+)")
_HUB_REPO_URL = re.compile(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/((?:datasets/|spaces/)?[^/?#]+/[^/?#]+)"
                           r"(?:/tree/[^?#]*)?/?(?:[?#].*)?$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def from_url(source: object) -> str | None:
    """The ``hf://`` path of a Hub file's URL (its ``/resolve/`` download link or its ``/blob/`` page),
    or None for anything else. A revision holding a slash is URL-encoded in such links
    (``refs%2Fpr%2F3``), as ``hf://`` paths take it."""
    match = _HUB_URL.match(source) if isinstance(source, str) else None
    if not match:
        return None
    repo, revision, path = match.groups()
    return f"{PREFIX}{repo}{'' if revision == 'main' else '@' + revision}/{path}"


def refuse_url(source: object) -> None:
    """Raise :class:`HubError` for a URL that is not a Hub file's (``https://...``, ``s3://...``): a
    path that cannot exist locally (before 2026-11-29: "checkpoint not found: https:/example.com/...")."""
    if not (isinstance(source, str) and _URL.match(source)) or is_hub_path(source):
        return
    repo = _HUB_REPO_URL.match(source)
    if repo:
        raise HubError(f"{source} names a Hub repository, not a file in it: pass hf://{repo.group(1)}/<file> "
                       f"(the released checkpoint: {RELEASED})")
    raise HubError(f"{source} is a URL: lua_fast reads local files, bytes or file objects, and Hub files as "
                   "hf://owner/repo/file (or their https://huggingface.co/.../resolve/... links); download "
                   "this one first, e.g. curl -L -o lua.pth URL, or pass its bytes")


class HubFile(NamedTuple):
    repo_id: str
    filename: str
    revision: str | None
    repo_type: str  # "model", "dataset" or "space"


# huggingface_hub's own hf:// syntax (HfFileSystem): a leading repo-type folder, and a revision
# that may be URL-encoded or one of the special three-segment refs.
_REPO_TYPES = {"datasets": "dataset", "spaces": "space"}
_SPECIAL_REFS = ("pr", "convert")  # refs/pr/N (a pull request's head), refs/convert/NAME


def parse(spec: str) -> HubFile:
    """``hf://[datasets/|spaces/]owner/repo[@revision]/file`` -> (repo_id, filename, revision, repo_type).

    The revision is a branch, tag or commit, URL-encoded if it holds a slash (``@refs%2Fpr%2F3``), or
    a pull request's or conversion's ref written out (``@refs/pr/3``)."""
    parts = spec[len(PREFIX):].split("/")  # (never empty)
    repo_type = _REPO_TYPES[parts.pop(0)] if parts[0] in _REPO_TYPES else "model"
    if len(parts) < 3 or not all(parts):
        raise HubError(f"{spec!r} is not a hub path: expected hf://owner/repo[@revision]/path/to/file")
    owner, repo, rest = parts[0], parts[1], parts[2:]
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
        revision = unquote(revision)
        if revision == "refs" and len(rest) >= 3 and rest[0] in _SPECIAL_REFS:
            revision, rest = f"refs/{rest[0]}/{rest[1]}", rest[2:]
        if not repo or not revision:
            raise HubError(f"{spec!r} is not a hub path: an empty repository or revision around '@'")
    return HubFile(f"{owner}/{repo}", "/".join(rest), revision, repo_type)


def download_command(hub_file: HubFile) -> str:
    """The shell command that puts ``hub_file`` into the cache: ``hf download`` (huggingface_hub >= 0.34;
    1.0 removed ``huggingface-cli``), with the repository type and revision the path names."""
    try:
        from huggingface_hub import __version__ as version
        modern = tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= (0, 34)
    except (ImportError, ValueError):
        modern = True
    words = ["hf" if modern else "huggingface-cli", "download", hub_file.repo_id, hub_file.filename]
    if hub_file.repo_type != "model":
        words += ["--repo-type", hub_file.repo_type]
    if hub_file.revision is not None:
        words += ["--revision", hub_file.revision]
    return " ".join(shlex.quote(w) for w in words)


def download(spec: str) -> str:
    """The local path of ``spec``, downloaded into (or found in) the Hugging Face cache."""
    repo_id, filename, revision, repo_type = parse(spec)
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as exc:
        raise HubError(
            f"loading {spec} needs huggingface_hub ({exc}); install it with pip install \"lua_fast[hub]\", "
            "or download the file yourself and pass its local path"
        ) from None
    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, repo_type=repo_type,
                                               library_name="lua_fast")
    except Exception as exc:  # the hub's own error types differ across versions: classify by name
        name = type(exc).__name__
        if name == "LocalEntryNotFoundError" or constants.HF_HUB_OFFLINE:
            raise HubError(
                f"{spec} is not in the local Hugging Face cache and downloading is not possible "
                f"({'HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else 'no connection'}); download it "
                f"once online ({download_command(parse(spec))}) or pass a local path"
            ) from exc
        if name in ("RepositoryNotFoundError", "EntryNotFoundError", "RemoteEntryNotFoundError",
                    "RevisionNotFoundError", "GatedRepoError"):
            raise HubError(f"{spec}: {name} ({str(exc).splitlines()[0] if str(exc) else ''})") from exc
        raise HubError(f"downloading {spec} failed: {name}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
