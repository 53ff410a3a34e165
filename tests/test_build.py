import os

import pytest
import torch

import neuralgrok
from neuralgrok import _extension


def test_ops_are_registered():
    assert hasattr(torch.ops.neuralgrok, "age")


def test_build_info_matches_running_torch():
    assert neuralgrok.BUILD_INFO["torch_version"] == torch.__version__
    assert neuralgrok.BUILD_INFO["cxx11_abi"] == bool(torch._C._GLIBCXX_USE_CXX11_ABI)


def test_mismatched_torch_is_a_clear_import_error():
    info = dict(neuralgrok.BUILD_INFO, torch_version="0.0.1")
    with pytest.raises(ImportError, match=r"built for torch 0\.0\.1 .*you have .*reinstall with"):
        _extension._check_torch(info)


def _mapped_libraries(prefix):
    with open("/proc/self/maps") as maps:
        paths = {line.split(maxsplit=5)[5].strip() for line in maps if line.count(" ") >= 5 and "/" in line}
    return {os.path.realpath(path) for path in paths if os.path.basename(path).startswith(prefix)}


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_extension_loads_the_running_torchs_libraries_only():
    # A build for a pip torch on a machine that also has a system libtorch (Debian's libtorch-dev) once linked
    # /usr/lib's libc10 1.13: two c10s in one process, and the ops lost autograd or crashed.
    for prefix in ("libc10.so", "libtorch.so", "libtorch_cpu.so"):
        assert len(_mapped_libraries(prefix)) == 1, _mapped_libraries(prefix)
