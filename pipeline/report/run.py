"""The run as the report reads it: every artifact that exists, checked for shape, and the
dataset reloaded with the run's split (for the figures drawn from raw data), or why not."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pipeline.core.artifacts import read_json
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.core.ledger import read_ledger
from pipeline.data.load import dataset_from_config
from pipeline.data.splits import split_from_manifest
from pipeline.device.scoring import RESULTS, read_results
from pipeline.report.blocks import g, gd, gl

SOURCES = {  # artifact -> the command that writes it
    "splits.json": "make train (or tinyml audit)",
    "audit.json": "make train (or tinyml audit)",
    "train_report.json": "make train",
    "quantize_report.json": "make quantize",
    "device_report.json": "make flash",
}


# --------------------------------------------------------------------------- the run


@dataclass
class Data:
    """The dataset reloaded with the run's split: what the figures of section 1 are drawn from."""

    dataset: object
    plan: object
    windows: dict


@dataclass
class Run:
    dir: Path
    splits: dict
    audit: dict | None
    train: dict | None
    quantize: dict | None
    device: dict | None
    device_lines: list[dict]
    device_torn: int
    ledger: list[dict]
    config: object | None
    data: Data | None
    data_why: str

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in (gl(self.splits, "dataset", "label_names") or gl(self.train, "labels")
                                 or gl(self.quantize, "labels"))]

    @cached_property
    def check(self) -> dict:
        return {c.get("id"): c for c in gl(self.audit, "checks") if isinstance(c, dict)}

    @cached_property
    def test_looks(self) -> tuple[list[dict], dict[str, int]]:
        """The whole ledger entries, and the purposes the test split was scored for more than once."""
        looks = [e for e in self.ledger if not e.get("corrupt")]
        purposes = Counter(str(e.get("purpose")) for e in looks)
        return looks, {p: n for p, n in purposes.items() if n > 1}


# Top-level keys each report must hold as an object when present: a list or a string there is
# a damaged or foreign file, said as such rather than rendered as a page of n/a.
SHAPES = {
    "splits.json": ("dataset", "splits", "window", "windows"),
    "audit.json": ("summary", "dataset", "split"),
    "train_report.json": ("metrics", "baselines", "sanity", "search", "history", "model", "split"),
    "quantize_report.json": ("calibration", "conversion", "validation", "test", "memory", "board", "macs"),
    "device_report.json": ("metrics", "agreement_with_host_int8", "timing_reported_by_device", "device"),
}
LISTS = {"audit.json": ("checks",)}


def _read(run_dir: Path, name: str, required: bool = False) -> dict | None:
    path = run_dir / name
    if not path.exists():
        if required:
            raise PipelineError(f"{path}: not found", hint=f"run {SOURCES[name]} first")
        return None
    doc = read_json(path, name)
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: expected a JSON object, got a {type(doc).__name__}",
                            hint=f"the file is damaged or from another tool; rerun {SOURCES[name]}")
    for key in SHAPES.get(name, ()):
        if key in doc and doc[key] is not None and not isinstance(doc[key], dict):
            raise PipelineError(f"{path}: '{key}' is a {type(doc[key]).__name__}, expected an object",
                                hint=f"the file is damaged or from another version; rerun {SOURCES[name]}")
    for key in LISTS.get(name, ()):
        if key in doc and not isinstance(doc[key], list):
            raise PipelineError(f"{path}: '{key}' is a {type(doc[key]).__name__}, expected a list",
                                hint=f"the file is damaged or from another version; rerun {SOURCES[name]}")
    return doc


def load_run(run_dir: str | Path) -> Run:
    """Every artifact of the run that exists; ``splits.json`` must."""
    run_dir = Path(run_dir)
    splits = _read(run_dir, "splits.json", required=True)
    audit = _read(run_dir, "audit.json")
    train = _read(run_dir, "train_report.json")
    if train is not None and "trials" in gd(train, "search") and not isinstance(train["search"]["trials"], list):
        raise PipelineError(f"{run_dir / 'train_report.json'}: 'search.trials' is not a list",
                            hint="the file is damaged or from another version; rerun make train")
    quantize = _read(run_dir, "quantize_report.json")
    device = _read(run_dir, "device_report.json")
    lines, torn = read_results(run_dir / RESULTS)
    ledger = [e if isinstance(e, dict) else {"corrupt": True} for e in read_ledger(run_dir)]
    config = None
    if (run_dir / "config.toml").exists():
        config = load_config(run_dir / "config.toml")  # a malformed file raises, naming it
    data, why = _load_data(splits, config)
    return Run(run_dir, splits, audit, train, quantize, device, lines, torn, ledger, config, data, why)


def _load_data(splits: dict, config) -> tuple[Data | None, str]:
    """The dataset named by the run's config, split as ``splits.json`` says; or why not."""
    if config is None:
        return None, "config.toml not found (make train writes it), so the dataset is not reloaded"
    spec = config.data.dataset
    try:
        dataset = dataset_from_config(config)
    except Exception as exc:  # any loader error: the page is drawn without the raw data
        return None, f"the dataset {spec!r} could not be loaded ({one_line(exc)})"
    if dataset.source != g(splits, "dataset", "source"):
        return None, (f"the dataset {spec!r} is now {dataset.source!r}, but splits.json was made from "
                      f"{g(splits, 'dataset', 'source')!r}")
    try:
        plan, windows = split_from_manifest(dataset, splits, "splits.json")
    except Exception as exc:  # a changed dataset: the page is drawn without the raw data
        return None, f"the dataset {spec!r} no longer matches splits.json ({one_line(exc)})"
    return Data(dataset, plan, windows), ""


def one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
