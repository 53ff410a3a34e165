"""Execute the notebooks headless, and keep the committed ones free of outputs.

    python notebooks/nbtool.py run notebooks/*.ipynb [--quick] [--out runs/notebooks]   # make notebooks
    python notebooks/nbtool.py strip notebooks/*.ipynb                                  # make strip-notebooks
    python notebooks/nbtool.py check notebooks/*.ipynb    # exit 1 naming any notebook with outputs

``run`` executes each notebook with nbclient in a kernel running *this* Python interpreter (so a
venv's ``neuralgrok`` is the one imported, whatever kernels Jupyter has installed), from the
notebook's own directory, and fails on the first cell error. ``--quick`` sets NEURALGROK_QUICK=1:
each notebook then regenerates tiny versions of its runs live instead of reading ``results/``.
With ``--out`` the executed copies (with their figures) are written there; the sources are never
modified by ``run``.
"""
import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

KERNEL_NAME = "neuralgrok-python"
KEPT_CELL_METADATA = ("tags",)  # everything else (execution times, collapsed, scrolled) is editor noise
KEPT_NOTEBOOK_METADATA = ("kernelspec",)  # language_info carries the Python version of the last run


@contextlib.contextmanager
def current_python_kernel():
    """A KernelManager whose kernel is ``sys.executable -m ipykernel_launcher``, from a kernel spec
    in a temporary directory (nothing is installed into Jupyter's own paths)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory() as kernels:
        spec = Path(kernels) / KERNEL_NAME
        spec.mkdir()
        # -Xfrozen_modules=off: the debugger ipykernel loads warns about frozen modules otherwise.
        argv = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps(
            {"argv": argv, "display_name": f"Python ({sys.executable})", "language": "python"}))
        yield KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))


def execute(path, quick=False, timeout=1800):
    """Execute the notebook at ``path`` and return it with its outputs; a failing cell raises
    ``nbclient.exceptions.CellExecutionError`` with the cell's traceback.

    The kernel's temporary files (a quick notebook's live runs) go to a directory of their own
    (``TMPDIR``), removed afterwards: the client shuts the kernel down before the kernel's own
    ``tempfile.TemporaryDirectory`` finalizers run, so they would otherwise stay behind."""
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    with current_python_kernel() as kernel_manager, tempfile.TemporaryDirectory(prefix="nbtool-") as scratch:
        env = {**os.environ, "NEURALGROK_QUICK": "1" if quick else "0", "TMPDIR": scratch}
        client = NotebookClient(notebook, km=kernel_manager, kernel_name=KERNEL_NAME, timeout=timeout,
                                resources={"metadata": {"path": str(path.parent.resolve())}})
        client.execute(env=env)
    return notebook


def stripped(notebook):
    """A copy of ``notebook`` without outputs, execution counts or editor metadata."""
    notebook = copy.deepcopy(notebook)
    notebook.metadata = nbformat.from_dict({k: v for k, v in notebook.metadata.items() if k in KEPT_NOTEBOOK_METADATA})
    for cell in notebook.cells:
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k in KEPT_CELL_METADATA})
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return notebook


def is_stripped(notebook):
    return stripped(notebook) == notebook


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "strip", "check"))
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--quick", action="store_true", help="NEURALGROK_QUICK=1: tiny runs, live")
    parser.add_argument("--out", type=Path, help="run: write the executed notebooks into this directory")
    arguments = parser.parse_args(argv)
    failed = []
    for path in arguments.notebooks:
        if arguments.command == "run":
            start = time.perf_counter()
            try:
                notebook = execute(path, quick=arguments.quick)
            except Exception as error:  # nbclient's CellExecutionError carries the cell's traceback
                print(f"{path}: FAILED\n{error}", file=sys.stderr)
                return 1
            print(f"{path}: ran in {time.perf_counter() - start:.0f} s")
            if arguments.out:
                arguments.out.mkdir(parents=True, exist_ok=True)
                nbformat.write(notebook, arguments.out / path.name)
        elif arguments.command == "strip":
            notebook = nbformat.read(path, as_version=4)
            if not is_stripped(notebook):
                nbformat.write(stripped(notebook), path)
                print(f"{path}: stripped")
        elif not is_stripped(nbformat.read(path, as_version=4)):
            failed.append(path)
            print(f"{path} has outputs or editor metadata; run: make strip-notebooks", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
