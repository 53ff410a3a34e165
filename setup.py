"""Build glue only: every build setting lives in CMakeLists.txt; this build_ext runs CMake.

Metadata is in pyproject.toml. Install with ``pip install --no-build-isolation .`` (or ``-e .``)
into an environment that already has torch. ``NEURALGROK_SANITIZE=1`` builds with ASan/UBSan.
"""
import os
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
        # A persistent build tree keeps rebuilds incremental across pip installs.
        build_dir = ROOT / "build" / f"cmake-py{sys.version_info[0]}{sys.version_info[1]}{'-sanitize' if sanitize else ''}"
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
        generator = ["-G", "Ninja"] if _has_ninja() and not (build_dir / "CMakeCache.txt").exists() else []
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *generator, *args], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--parallel", str(os.cpu_count() or 1)], check=True)
        self.build_info_file = out_dir / "_build_info.json"

    def copy_extensions_to_source(self):
        # Editable installs copy the module into the source tree; its build record goes with it.
        super().copy_extensions_to_source()
        if self.build_info_file is not None:
            self.copy_file(str(self.build_info_file), str(ROOT / "neuralgrok" / self.build_info_file.name))


def _has_ninja():
    from shutil import which

    return which("ninja") is not None


setup(ext_modules=[CMakeExtension("neuralgrok._C")], cmdclass={"build_ext": CMakeBuild})
