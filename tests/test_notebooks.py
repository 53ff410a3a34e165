"""The notebooks execute headless in quick mode (NEURALGROK_QUICK=1) and are committed without outputs."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (Debian: python3-nbformat)")


def load_nbtool():
    spec = importlib.util.spec_from_file_location("nbtool", NOTEBOOK_DIR / "nbtool.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nbtool = load_nbtool()


def needs_kernel():
    pytest.importorskip("nbclient", reason="executing notebooks needs nbclient (Debian: python3-nbclient)")
    pytest.importorskip("ipykernel", reason="executing notebooks needs ipykernel (Debian: python3-ipykernel)")


def write_notebook(path, *sources):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    nbformat.write(notebook, path)
    return path


def test_there_are_notebooks():
    assert [path.name for path in NOTEBOOKS][:1] == ["01_quickstart.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_committed_notebook_has_no_outputs(path):
    assert nbtool.is_stripped(nbformat.read(path, as_version=4)), "run: make strip-notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_executes_in_quick_mode_and_draws_its_figures(path):
    needs_kernel()
    notebook = nbtool.execute(path, quick=True, timeout=600)  # a failing cell raises
    figures = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
               if "image/png" in output.get("data", {})]
    assert figures, f"{path.name} drew no figure"
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors


def test_run_executes_in_this_interpreter_in_quick_mode_and_fails_on_a_cell_error(tmp_path, capsys):
    needs_kernel()
    path = write_notebook(tmp_path / "probe.ipynb", "import os, sys\nprint(sys.executable, os.environ['NEURALGROK_QUICK'])")
    executed = nbtool.execute(path, quick=True)
    interpreter, quick = executed.cells[0].outputs[0]["text"].split()
    # normpath: pytest run as ../../.venv/bin/python gives a sys.executable with "..", the kernel a clean one
    assert (os.path.normpath(interpreter), quick) == (os.path.normpath(os.path.abspath(sys.executable)), "1")
    write_notebook(path, "x = 1", "1 / 0", "print('never')")
    assert nbtool.main(["run", str(path)]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_execute_removes_the_temporary_files_the_kernel_leaves(tmp_path):
    needs_kernel()
    path = write_notebook(tmp_path / "probe.ipynb", "import tempfile\nprint(tempfile.mkdtemp(prefix='probe-'))")
    left = Path(nbtool.execute(path).cells[0].outputs[0]["text"].strip())
    assert left.name.startswith("probe-") and not left.exists()


def test_strip_removes_outputs_counts_and_editor_metadata(tmp_path):
    path = write_notebook(tmp_path / "n.ipynb", "print(1)")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    notebook.cells[0].execution_count = 3
    notebook.cells[0].metadata.update(tags=["keep"], execution={"iopub.status.busy": "2026-01-01"})
    notebook.metadata["language_info"] = {"version": "3.11.2"}
    nbformat.write(notebook, path)
    assert nbtool.main(["check", str(path)]) == 1
    assert nbtool.main(["strip", str(path)]) == 0
    assert nbtool.main(["check", str(path)]) == 0
    cell = nbformat.read(path, as_version=4).cells[0]
    assert (cell.outputs, cell.execution_count, dict(cell.metadata), cell.source) == ([], None, {"tags": ["keep"]}, "print(1)")
