"""Builds llamabridge._core (Cython + the C++ shim) against the llama.cpp libraries.

The libraries come from `make libs` (CMake build of vendor/llama.cpp, or of
$LLAMA_CPP_DIR) into build/llama.cpp; they are copied next to the extension, which
finds them through an $ORIGIN rpath, so the installed package imports from anywhere
without LD_LIBRARY_PATH.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
LLAMA_CPP_DIR = os.path.abspath(os.environ.get("LLAMA_CPP_DIR") or os.path.join(ROOT, "vendor", "llama.cpp"))
LLAMA_BUILD_DIR = os.path.abspath(os.environ.get("LLAMA_BUILD_DIR") or os.path.join(ROOT, "build", "llama.cpp"))
LIB_DIR = os.path.join(LLAMA_BUILD_DIR, "bin")
LIBRARIES = ["llama-common", "llama", "ggml", "ggml-base"]


def llama_cpp_commit() -> str:
    """The llama.cpp commit being built: the vendored source's stamp, else the checkout's git HEAD."""
    stamp = os.path.join(LLAMA_CPP_DIR, ".llamabridge-source")
    if os.path.exists(stamp):
        match = re.search(r"llama\.cpp=(\w+)", open(stamp).read())
        if match:
            return match.group(1)
    try:
        return subprocess.run(["git", "-C", LLAMA_CPP_DIR, "rev-parse", "--short=9", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def shared_libraries():
    """The llama.cpp/ggml shared objects the extension loads at run time, by their soname."""
    if sys.platform == "darwin":
        names = glob.glob(os.path.join(LIB_DIR, "lib*.dylib"))
    else:  # libllama.so.0 and the like: what the dynamic loader asks for
        names = [p for p in glob.glob(os.path.join(LIB_DIR, "lib*.so.*")) if re.search(r"\.so\.\d+$", p)]
    return sorted(p for p in names if os.path.basename(p).startswith(("libllama", "libggml")) and "bench" not in p)


def rpc_server():
    """llama.cpp's RPC server from the same build (`llamabridge rpc-server` starts it): beside the libraries,
    which its $ORIGIN rpath finds there too."""
    path = os.path.join(LIB_DIR, "ggml-rpc-server")
    return [path] if os.path.exists(path) else []


class BuildExt(build_ext):
    def run(self):
        if not os.path.exists(os.path.join(LIB_DIR, "libllama.so" if sys.platform != "darwin" else "libllama.dylib")):
            sys.exit(f"llama.cpp libraries not found in {LIB_DIR}: run `make libs` first")
        super().run()

        # copy the libraries beside the extension (every place it was put), found via $ORIGIN
        targets = {os.path.dirname(self.get_ext_fullpath(ext.name)) for ext in self.extensions}
        if self.inplace or getattr(self, "editable_mode", False):
            targets.add(os.path.join(ROOT, "llamabridge"))
        for target in targets:
            os.makedirs(target, exist_ok=True)
            # those of an earlier build of another GPU kind (libggml-vulkan.so.0, ...) go first
            for stale in glob.glob(os.path.join(target, "lib*.so.*")) + glob.glob(os.path.join(target, "lib*.dylib")):
                if os.path.basename(stale).startswith(("libllama", "libggml")):
                    os.remove(stale)
            for lib in shared_libraries() + rpc_server():
                dest = os.path.join(target, os.path.basename(lib))
                if os.path.lexists(dest):
                    os.remove(dest)
                shutil.copy2(lib, dest, follow_symlinks=True)


rpath = "@loader_path" if sys.platform == "darwin" else "$ORIGIN"
extension = Extension(
    "llamabridge._core",
    sources=["llamabridge/_core.pyx", "llamabridge/shim/bridge.cpp", "llamabridge/shim/placement.cpp",
             "llamabridge/shim/threads.cpp",
             "llamabridge/shim/speculation.cpp"],
    include_dirs=[
        "llamabridge/shim",
        os.path.join(LLAMA_CPP_DIR, "include"),
        os.path.join(LLAMA_CPP_DIR, "ggml", "include"),
        os.path.join(LLAMA_CPP_DIR, "common"),
        os.path.join(LLAMA_CPP_DIR, "vendor"),
    ],
    library_dirs=[LIB_DIR],
    libraries=LIBRARIES,
    runtime_library_dirs=[] if sys.platform == "darwin" else [rpath],
    extra_link_args=[f"-Wl,-rpath,{rpath}"] if sys.platform == "darwin" else [],
    define_macros=[("LLAMABRIDGE_LLAMA_CPP_COMMIT", f'"{llama_cpp_commit()}"')],
    extra_compile_args=["-std=c++17", "-O2"],
    language="c++",
)

setup(
    ext_modules=cythonize([extension], compiler_directives={"language_level": "3"}, quiet=True),
    cmdclass={"build_ext": BuildExt},
)
