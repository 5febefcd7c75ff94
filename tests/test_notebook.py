"""The notebook runs top to bottom against a fresh store, and is committed without outputs."""

from pathlib import Path

import nbformat
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "inspect_fronts.ipynb"
KERNEL = "paretopress-test"


def test_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_inspect_fronts_runs(tiny_store, tmp_path, monkeypatch):
    # A kernel spec for this very interpreter, found first on JUPYTER_PATH: no `ipython kernel install` needed,
    # and a user-wide python3 kernel elsewhere cannot take its place.
    write_kernel_spec(tmp_path / "kernels" / KERNEL)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("PARETOPRESS_STORE", str(tiny_store))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's pictures land here, not in the system's /tmp
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, kernel_name=KERNEL, timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "paretopress export tiny-sub --candidate" in text and f"--db {tiny_store}" in text
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the front and the genome
