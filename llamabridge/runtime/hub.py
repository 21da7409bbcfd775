"""Downloading models from the Hugging Face Hub (or a mirror at $HF_ENDPOINT) into models/<repo_id>."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

from ..errors import BridgeError, NotFoundError
from .model_files import MODELS_DIR


class HubError(BridgeError):
    """A download that cannot go ahead: unknown repo, nothing to download, no network."""


def default_local_dir(repo_id: str) -> Path:
    return MODELS_DIR / repo_id


def select_files(files: list[str], include: list[str], exclude: list[str]) -> list[str]:
    """The files --include (any pattern; all files when none) and --exclude (none of them) leave."""
    chosen = [f for f in files if not include or any(fnmatch.fnmatch(f, p) for p in include)]
    return [f for f in chosen if not any(fnmatch.fnmatch(f, p) for p in exclude)]


def download(repo_id: str, *, include: Sequence[str] = (), exclude: Sequence[str] = (), local_dir: Path | None = None,
             revision: str | None = None, token: str | None = None) -> tuple[Path, list[str]]:
    """Download the selected files of a model repo; returns the folder and the files.

    Resumable: files already complete are skipped, interrupted ones continue where they
    stopped. $HF_TOKEN and $HF_ENDPOINT are honoured (through huggingface_hub).
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    include, exclude = list(include), list(exclude)
    local_dir = Path(local_dir) if local_dir else default_local_dir(repo_id)
    endpoint = constants.ENDPOINT
    api = HfApi(token=token)
    try:
        files = api.list_repo_files(repo_id, revision=revision)
        selected = select_files(files, include, exclude)
        if not selected:
            shown = ", ".join(files[:12]) + (" ..." if len(files) > 12 else "")
            raise NotFoundError(f"no file in {repo_id} matches the --include/--exclude patterns "
                                f"(include {include or ['*']}, exclude {exclude}); the repo holds: {shown}")
        snapshot_download(repo_id, revision=revision, local_dir=local_dir, token=token,
                          allow_patterns=selected)
    except GatedRepoError:
        raise HubError(f"{repo_id} is gated: accept its terms on the Hub, then set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise NotFoundError(f"repository {repo_id!r} not found on {endpoint} (a private repo needs HF_TOKEN)") \
            from None
    except RevisionNotFoundError:
        raise NotFoundError(f"revision {revision!r} not found in {repo_id}") from None
    except _network_errors() as exc:
        raise HubError(f"cannot reach {endpoint} ({exc.__class__.__name__}): check the network, or set "
                       "HF_ENDPOINT to a mirror") from None
    except HfHubHTTPError as exc:
        raise HubError(f"the Hub at {endpoint} refused the download: {str(exc).splitlines()[0]}") from None
    return local_dir, selected


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures of whichever HTTP client this huggingface_hub version uses."""
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx", ("ConnectError", "TimeoutException")),
                          ("httpx2", ("ConnectError", "TimeoutException")),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(mod, name) for name in names if hasattr(mod, name)]
    return tuple(errors)
