import json
import subprocess
import sys

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
