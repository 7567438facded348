"""notebooks/pareto_fronts.ipynb runs top to bottom on a synthetic sweep and is committed clean."""

from pathlib import Path

import nbformat
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from test_fronts import write_fake_sweep

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "pareto_fronts.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs_on_a_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("PAMA_SWEEP_DIR", str(write_fake_sweep(tmp_path / "results")))
    # A kernel spec written for this interpreter, so the kernel runs the test's Python and sees the
    # installed package, whatever python3 kernel a user or system Jupyter has registered.
    kernels = tmp_path / "kernels"
    write_kernel_spec(kernels / "python3")
    km = KernelManager(
        kernel_name="python3",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False),
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for o in outputs
        if o.output_type != "error"
    )
    assert "10 runs of morlhf, pama" in text
    assert "reference policy scores from" in text
    assert "pama [0.9, 0.1] response 0" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the front and the hypervolume history
