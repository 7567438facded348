"""notebooks/pareto_fronts.ipynb runs top to bottom on a synthetic sweep and is committed clean."""

from pathlib import Path

import nbformat
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from test_bench_conditioned import write_benchmark
from test_fronts import write_fake_sweep

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "pareto_fronts.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def execute(tmp_path: Path) -> tuple[str, int]:
    """Run the notebook; return its text outputs and its number of images (no cell may fail)."""
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
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    return text, len([o for o in outputs if "image/png" in o.get("data", {})])


def test_notebook_runs_on_a_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("PAMA_SWEEP_DIR", str(write_fake_sweep(tmp_path / "results")))
    monkeypatch.setenv("PAMA_BENCH_RUNS", str(tmp_path / "no_benchmark"))
    text, images = execute(tmp_path)
    assert "10 runs of morlhf, pama" in text
    assert "reference policy scores from" in text
    assert "pama [0.9, 0.1] response 0" in text
    assert images == 2  # the front and the hypervolume history; no conditioned benchmark to show
    assert (
        "0 evaluated preferences of a conditioned PAMA run, 0 sweep runs. Run `make bench-conditioned`"
        in text
    )


def test_notebook_shows_a_conditioned_run_beside_its_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("PAMA_SWEEP_DIR", str(write_fake_sweep(tmp_path / "results")))
    write_benchmark(tmp_path / "runs")
    monkeypatch.setenv("PAMA_BENCH_RUNS", str(tmp_path / "runs"))
    text, images = execute(tmp_path)
    assert images == 3
    # Nine preferences, off-grid ones included: the off-grid (0.8, 0.2) outscores (0.9, 0.1) on
    # sentiment, one adjacent swap: 1 - 6 * 2 / (9 * 80) = 0.983.
    assert "controllability (Spearman of weight and reward): {'sentiment': 0.983, 'length': 1.0}" in text
    assert "pama_prompt" in text and "reference point: mean reference policy scores of 5 files" in text
