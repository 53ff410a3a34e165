"""Build glue only: every build setting lives in CMakeLists.txt; this build_ext runs CMake.

Metadata is in pyproject.toml. Install with ``pip install --no-build-isolation .`` (or ``-e .``)
into an environment that already has torch. ``NEURALGROK_SANITIZE=1`` builds with ASan/UBSan.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    build_info_file = None  # written by CMake beside the module; see neuralgrok/_extension.py

    def build_extension(self, ext):
        import torch  # the torch this extension will be loaded by

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        sanitize = os.environ.get("NEURALGROK_SANITIZE", "0") not in ("", "0")
        # A persistent build tree keeps rebuilds incremental across pip installs; one per Python and torch, so
        # that environments with different torches (Makefile: .venv and .venv-debian) never share objects.
        torch_tag = re.sub(r"[^A-Za-z0-9.]+", "-", torch.__version__)
        py_tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
        build_dir = ROOT / "build" / f"cmake-{py_tag}-torch{torch_tag}{'-sanitize' if sanitize else ''}"
        prefix = getattr(torch.utils, "cmake_prefix_path", None)
        args = [
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DNEURALGROK_OUTPUT_DIR={out_dir}",
            f"-DNEURALGROK_SANITIZE={'ON' if sanitize else 'OFF'}",
        ]
        if prefix:
            args.append(f"-DCMAKE_PREFIX_PATH={prefix}")
        try:
            import pybind11

            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass  # Debian's pybind11-dev is found by CMake's default search
        cmake = _tool("cmake")
        ninja = _tool("ninja")
        if cmake is None:
            raise RuntimeError("building neuralgrok needs CMake >= 3.18: install it (pip install cmake, or your system's)")
        generator = []
        if ninja is not None and not (build_dir / "CMakeCache.txt").exists():
            generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), *generator, *args], check=True)
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", str(os.cpu_count() or 1)], check=True)
        self.build_info_file = out_dir / "_build_info.json"

    def copy_extensions_to_source(self):
        # Editable installs copy the module into the source tree; its build record goes with it.
        super().copy_extensions_to_source()
        if self.build_info_file is not None:
            self.copy_file(str(self.build_info_file), str(ROOT / "neuralgrok" / self.build_info_file.name))


def _tool(name):
    """``name`` beside this Python first (a venv's ``pip install cmake ninja``, active or not), else on PATH."""
    from shutil import which

    return which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


setup(ext_modules=[CMakeExtension("neuralgrok._C")], cmdclass={"build_ext": CMakeBuild})
