"""Fill vendor/llama.cpp from the pinned, hash-checked llama-cpp-python sdist on PyPI.

llama-cpp-python 0.3.36 vendors llama.cpp at commit 0c1e57098; taking the source from
that sdist gives every machine the same tree, checked against the sha256 pinned below.
With LLAMA_CPP_DIR set to another checkout, the Makefile builds from there instead and
this script is not run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098"

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "sdist"
DEST = ROOT / "vendor" / "llama.cpp"
STAMP = DEST / ".llamabridge-source"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_with_pip(dest: Path) -> bool:
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
           "--no-build-isolation", "-d", str(dest), f"{PACKAGE}=={VERSION}"]
    # --no-build-isolation is not enough to skip metadata preparation, which needs the
    # sdist's build backend; plain `pip download` fetches it, so fall back to that.
    for attempt in (cmd, [c for c in cmd if c != "--no-build-isolation"]):
        if subprocess.run(attempt, stdout=subprocess.DEVNULL).returncode == 0:
            return True
    return False


def download_from_index(dest: Path) -> None:
    # For machines whose Python has no pip: the same file, located through PyPI's JSON API.
    with urllib.request.urlopen(f"https://pypi.org/pypi/{PACKAGE}/{VERSION}/json") as r:
        info = json.load(r)
    url = next(u["url"] for u in info["urls"] if u["filename"] == SDIST)
    with urllib.request.urlopen(url) as r, (dest / SDIST).open("wb") as out:
        shutil.copyfileobj(r, out)


def fetch_sdist() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / SDIST
    if path.exists() and sha256_of(path) == SHA256:
        return path
    path.unlink(missing_ok=True)
    print(f"downloading {PACKAGE}=={VERSION} (source distribution) ...", file=sys.stderr)
    if not (download_with_pip(CACHE) and path.exists()):
        download_from_index(CACHE)
    actual = sha256_of(path)
    if actual != SHA256:
        path.unlink()
        sys.exit(f"error: {SDIST} sha256 is {actual}, expected {SHA256}; refusing to build from it")
    return path


def extract(sdist: Path) -> None:
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp, tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(tmp, members=members, filter="data") if sys.version_info >= (3, 12) \
            else tar.extractall(tmp, members=members)
        if DEST.exists():
            shutil.rmtree(DEST)
        DEST.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / prefix), DEST)
    STAMP.write_text(f"{PACKAGE}=={VERSION} sha256={SHA256} llama.cpp={LLAMA_CPP_COMMIT}\n")


def main() -> None:
    if STAMP.exists() and SHA256 in STAMP.read_text():
        return
    extract(fetch_sdist())
    print(f"vendor/llama.cpp ready (llama.cpp {LLAMA_CPP_COMMIT})", file=sys.stderr)


if __name__ == "__main__":
    main()
