"""Generated Edge Impulse exports, one generator per real-world variant met in real projects.

Each generator writes an export under ``root`` and returns its path (a folder, or a .zip).
The data imitates a 3-axis accelerometer (m/s2, gravity on z) on boards with sensor noise,
or 16 kHz audio: small enough to train in seconds, real enough for the loaders and the audit.
Nothing here reads real data; tests and hand runs alike use these.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np

LABELS = ("idle", "updown", "wave")
RATE_HZ = 62.5
NOISE = 0.05  # m/s2 per sample: an LSM9DS1-class accelerometer at 62.5-100 Hz


def motion_values(label: str, seconds: float, rate: float, rng, gain: float = 1.0) -> np.ndarray:
    """(T, 3) accelerometer values of one gesture; ``idle`` is a board lying still."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    tilt = rng.normal(0, 0.3, 3)  # how the board lies: differs per recording
    base = np.array([0.0, 0.0, 9.81]) + tilt
    x = np.tile(base, (n, 1))
    phase = rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(0.8, 1.2)
    if label == "wave":
        x[:, 0] += gain * 4.0 * np.sin(2 * np.pi * 2.0 * freq * t + phase)
        x[:, 1] += gain * 1.5 * np.cos(2 * np.pi * 2.0 * freq * t + phase)
    elif label == "updown":
        x[:, 2] += gain * 5.0 * np.sin(2 * np.pi * 1.0 * freq * t + phase)
    return x + rng.normal(0, NOISE, x.shape)


def acquisition(values, device: str | None = "dev-1", interval_ms: float = 1000.0 / RATE_HZ,
                sensors=("accX", "accY", "accZ"), units="m/s2", device_type="ARDUINO_NANO33BLE",
                iat: int | None = None) -> dict:
    payload = {"device_type": device_type, "interval_ms": interval_ms,
               "sensors": [{"name": s, "units": units} for s in sensors],
               "values": np.asarray(values).tolist()}
    if device is not None:
        payload["device_name"] = device
    doc = {"protected": {"ver": "v1", "alg": "none"}, "signature": "0" * 64, "payload": payload}
    if iat is not None:
        doc["protected"]["iat"] = iat
    return doc


def write_files(root: Path, files: list[dict], info: str | None = "root", fmt: str = "json",
                new_keys: bool = False) -> Path:
    """files: dicts with category, label, name, doc. ``info``: "root", "per-folder" or None."""
    root.mkdir(parents=True, exist_ok=True)
    entries = {"training": [], "testing": []}
    for f in files:
        sub = root / f["category"]
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{f['label']}.{f['name']}.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps(f["doc"]))
        else:
            path.write_bytes(f.get("cbor") or cbor_indefinite(f["doc"]))
        entry = {"path": f"{f['category']}/{path.name}", "category": f["category"],
                 "label": {"type": "label", "label": f["label"]}}
        if new_keys:  # Edge Impulse's newer exports: name and metadata, no boundingBoxes
            entry.update(name=f["name"], metadata={"session": f["name"].split(".")[0]})
        else:
            entry["boundingBoxes"] = []
        entries[f["category"]].append(entry)
    if info == "root":
        doc = {"version": 1, "files": entries["training"] + entries["testing"]}
        (root / "info.labels").write_text(json.dumps(doc))
    elif info == "per-folder":
        for cat, es in entries.items():
            (root / cat / "info.labels").write_text(json.dumps({"version": 1, "files": es}))
    return root


def motion_files(devices=("dev-a", "dev-b", "dev-c", "dev-d", "dev-e"), per_class: int = 6,
                 seconds: float = 1.0, seed: int = 0, rate_of=None, test_devices=1) -> list[dict]:
    """Fixed-length 1 s samples (the common Edge Impulse case), a few boards; the last
    ``test_devices`` boards are the testing category."""
    rng = np.random.default_rng(seed)
    files = []
    for d, dev in enumerate(devices):
        gain = rng.uniform(0.8, 1.2)
        for label in LABELS:
            for r in range(per_class):
                rate = rate_of(dev, label) if rate_of else RATE_HZ
                v = motion_values(label, seconds, rate, rng, gain)
                files.append({"category": "testing" if d >= len(devices) - test_devices else "training",
                              "label": label, "name": f"{dev}.{label}{r:02d}",
                              "doc": acquisition(v, dev, 1000.0 / rate)})
    return files


# --------------------------------------------------------------------------- the variants


def export_basic(root: Path, fmt: str = "json") -> Path:
    """Five boards, three gestures, 1 s samples, info.labels at the root, testing/ kept."""
    return write_files(root, motion_files(), fmt=fmt)


def export_two_rates(root: Path, confounded: bool = False) -> Path:
    """Recorded on two boards at 100 Hz and 62.5 Hz. ``confounded``: the 100 Hz board
    recorded only waves (a rate that goes with one class)."""
    if confounded:
        def rate_of(dev, label):
            return 100.0 if label == "wave" else RATE_HZ
    else:
        def rate_of(dev, label):
            return 100.0 if dev in ("dev-a", "dev-c") else RATE_HZ
    return write_files(root, motion_files(rate_of=rate_of))


def cbor_indefinite(obj) -> bytes:
    """CBOR as some encoders write it: arrays of indefinite length, floats as float16 when
    exact, else float32 (RFC 8949: 0x9f ... 0xff, 0xf9 half, 0xfa single)."""
    out = bytearray()

    def head(major: int, n: int) -> None:
        if n < 24:
            out.append(major << 5 | n)
        elif n < 256:
            out.extend([major << 5 | 24, n])
        elif n < 65536:
            out.append(major << 5 | 25)
            out.extend(struct.pack(">H", n))
        else:
            out.append(major << 5 | 26)
            out.extend(struct.pack(">I", n))

    def enc(v) -> None:
        if isinstance(v, bool):
            out.append(0xF5 if v else 0xF4)
        elif isinstance(v, int):
            head(0, v) if v >= 0 else head(1, -1 - v)
        elif isinstance(v, float):
            half = np.float16(v)
            if float(half) == v or abs(v) < 1e4:
                out.append(0xF9)
                out.extend(struct.pack(">e", float(half)))
            else:
                out.append(0xFA)
                out.extend(struct.pack(">f", v))
        elif isinstance(v, str):
            b = v.encode()
            head(3, len(b))
            out.extend(b)
        elif isinstance(v, list):
            out.append(0x9F)
            for x in v:
                enc(x)
            out.append(0xFF)
        elif isinstance(v, dict):
            head(5, len(v))
            for k, x in v.items():
                enc(k)
                enc(x)
        else:
            raise TypeError(type(v))

    enc(obj)
    return bytes(out)


def export_cbor_float16(root: Path) -> Path:
    """CBOR acquisition files with indefinite-length arrays and float16 values."""
    return write_files(root, motion_files(), fmt="cbor")


def export_trailing_spaces(root: Path) -> Path:
    """Units, device names, device types and sensor names padded with spaces ("uT   ")."""
    files = motion_files()
    for f in files:
        p = f["doc"]["payload"]
        p["device_name"] += "  "
        p["device_type"] += "   "
        for s in p["sensors"]:
            s["units"] += "   "
        p["sensors"][-1]["name"] += " "
    return write_files(root, files)


def export_no_device_name(root: Path) -> Path:
    """Acquisition files without device_name."""
    files = motion_files()
    for f in files:
        del f["doc"]["payload"]["device_name"]
    return write_files(root, files)


def export_new_keys_per_folder(root: Path) -> Path:
    """Newer info.labels keys (name, metadata, no boundingBoxes), one info.labels per folder."""
    return write_files(root, motion_files(), info="per-folder", new_keys=True)


def export_moved_files(root: Path, missing: int = 0) -> Path:
    """The author moved every file into one folder per label after exporting; ``missing``
    files are deleted altogether."""
    write_files(root, motion_files())
    moved = 0
    for cat in ("training", "testing"):
        for p in sorted((root / cat).glob("*.json")):
            label = p.name.split(".")[0]
            dest = root / "by-label" / label
            dest.mkdir(parents=True, exist_ok=True)
            if moved < missing:
                p.unlink()
            else:
                p.rename(dest / p.name)
            moved += 1
    return root


def export_zip(root: Path) -> Path:
    """The basic export, zipped inside one top folder, as a browser download saves it."""
    folder = export_basic(root / "unzipped" / "my-project-export")
    path = root / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder.parent))
    return path


def export_test_folder(root: Path) -> Path:
    """``test/`` instead of ``testing/`` (info.labels still says testing/...)."""
    write_files(root, motion_files())
    (root / "testing").rename(root / "test")
    return root


def export_too_few(root: Path) -> Path:
    """Two samples per class: too few for three splits."""
    files = [f for f in motion_files(devices=("dev-a",), per_class=2, test_devices=0)]
    return write_files(root, files)


def export_audio(root: Path, per_class: int = 8, devices=("mic-a", "mic-b", "mic-c", "mic-d")) -> Path:
    """16 kHz, 1 s, one channel, ``values`` a flat list of int16 samples: keyword-spotting-like
    classes (noise, a low hum, a high whistle)."""
    rng = np.random.default_rng(3)
    rate, n = 16000.0, 16000
    t = np.arange(n) / rate
    files = []
    for d, dev in enumerate(devices):
        for label in ("hum", "noise", "whistle"):
            for r in range(per_class):
                x = rng.normal(0, 300, n)
                if label == "hum":
                    x += 3000 * np.sin(2 * np.pi * rng.uniform(180, 260) * t + rng.uniform(0, 6.3))
                elif label == "whistle":
                    x += 3000 * np.sin(2 * np.pi * rng.uniform(2500, 3500) * t + rng.uniform(0, 6.3))
                v = np.clip(np.round(x), -32768, 32767).astype(int).tolist()
                files.append({"category": "testing" if d == len(devices) - 1 else "training", "label": label,
                              "name": f"{dev}.{label}{r:02d}",
                              "doc": acquisition(v, dev, 1000.0 / rate, sensors=("audio",), units="wav",
                                                 device_type="ARDUINO_NANO33BLE")})
    return write_files(root, files)


# --------------------------------------------------------------------------- copies and look-alikes


def _test_file(root: Path) -> Path:
    return sorted((root / "testing").glob("wave.*.json"))[0]


def add_to_info(root: Path, path: Path, label: str, category: str = "training") -> None:
    info = json.loads((root / "info.labels").read_text())
    info["files"].append({"path": str(path.relative_to(root)), "category": category,
                          "label": {"type": "label", "label": label}})
    (root / "info.labels").write_text(json.dumps(info))


def export_reupload(root: Path) -> Path:
    """A test file uploaded again, under another name, into training."""
    write_files(root, motion_files())
    src = _test_file(root)
    dst = root / "training" / "wave.reupload.json"
    dst.write_bytes(src.read_bytes())
    add_to_info(root, dst, "wave")
    return root


def export_rescaled_copy(root: Path, factor: float = 1.002, noise: float = NOISE) -> Path:
    """A test file re-recorded: the same samples times 1.002 plus sensor-level noise, in training."""
    write_files(root, motion_files())
    src = _test_file(root)
    doc = json.loads(src.read_text())
    v = np.asarray(doc["payload"]["values"]) * factor
    v += np.random.default_rng(7).normal(0, noise, v.shape)
    doc["payload"]["values"] = v.tolist()
    dst = root / "training" / "wave.rerecorded.json"
    dst.write_text(json.dumps(doc))
    add_to_info(root, dst, "wave")
    return root


def export_overlapping_cuts(root: Path) -> Path:
    """One 3 s recording cut into 1 s samples that overlap by 0.25 s, cuts in training and
    testing (Edge Impulse's "split sample" then a random train/test assignment)."""
    write_files(root, motion_files())
    rng = np.random.default_rng(11)
    long = motion_values("wave", 3.0, RATE_HZ, rng)
    n, step = int(RATE_HZ), int(0.75 * RATE_HZ)
    for k, start in enumerate(range(0, long.shape[0] - n + 1, step)):
        category = "testing" if k % 2 else "training"
        path = root / category / f"wave.cut{k}.json"
        path.write_text(json.dumps(acquisition(long[start:start + n], "dev-a")))
        add_to_info(root, path, "wave", category)
    return root


def export_idle_lookalikes(root: Path, sessions: int = 12) -> Path:
    """Many short recordings of a board lying still, in different sessions on every board:
    near-constant windows that look alike across splits and are not copies."""
    rng = np.random.default_rng(5)
    files = motion_files()
    devices = sorted({f["doc"]["payload"]["device_name"] for f in files})
    for d, dev in enumerate(devices):
        for s in range(sessions):
            v = motion_values("idle", 1.0, RATE_HZ, rng)
            files.append({"category": "testing" if d == len(devices) - 1 else "training", "label": "idle",
                          "name": f"{dev}.still{s:02d}", "doc": acquisition(v, dev)})
    return write_files(root, files)


def _add_named(root: Path, category: str, label: str, stem: str, name: str, values, device: str) -> Path:
    """One acquisition file named as Edge Impulse names it (``<label>.<stem>.json``), listed in
    info.labels with the sample ``name`` Edge Impulse shows."""
    path = root / category / f"{label}.{stem}.json"
    path.write_text(json.dumps(acquisition(values, device)))
    info = json.loads((root / "info.labels").read_text())
    info["files"].append({"path": f"{category}/{path.name}", "name": name, "category": category,
                          "label": {"type": "label", "label": label}})
    (root / "info.labels").write_text(json.dumps(info))
    return path


def export_split_sample_cuts(root: Path) -> Path:
    """Edge Impulse's "split sample" across training and testing, as in ei-nano33-fall's
    ``Fall.3b4m1pql.s2``: one 6 s recording cut into six 1 s cuts named ``NAME.s1``..``NAME.s6``
    (files ``wave.NAME.<id>.ingestion-<host>.s<k>.json``), cuts 1-4 in training and 5-6 in
    testing. Cut 5 starts 18 rows before cut 4 ends (they share 18 identical rows, the real
    pair's count); the others only abut: they are one recording by name alone."""
    write_files(root, motion_files())
    long = motion_values("wave", 6.0, RATE_HZ, np.random.default_rng(13))
    n = int(RATE_HZ)  # 62 rows a cut
    starts = [0, n, 2 * n, 3 * n, 4 * n - 18, 5 * n]
    for k, start in enumerate(starts, 1):
        category = "testing" if k >= 5 else "training"
        _add_named(root, category, "wave", f"Wave.3b4m1pql.s2.cbor.5n3ba6je.ingestion-5dc7597686-fqvwl.s{k}",
                   f"Wave.3b4m1pql.s2.s{k}", long[start:start + n], "dev-b")
    return root


def export_two_uploads(root: Path) -> Path:
    """One recording uploaded twice under two ingestion ids (the same sample name, other ids),
    the two uploads covering overlapping stretches of it: 16 of their 125 rows (12.8%, as in the
    real phone export) are the same. One upload is in testing, the other in training, where
    the split would put it in validation or training."""
    write_files(root, motion_files())
    long = motion_values("updown", 4.0, RATE_HZ, np.random.default_rng(17))
    n = int(2 * RATE_HZ)
    for category, start, ident, host in (("testing", 0, "5p669cj9", "54c4c64498-pc7gv"),
                                         ("training", n - 16, "5p48ltra", "54c4c64498-nkn7w")):
        _add_named(root, category, "updown", f"phone.7a.{ident}.ingestion-{host}.s1", "phone.7a.s1",
                   long[start:start + n], "phone-1")
    return root


CLEAN = {
    "basic": export_basic,
    "two_rates": export_two_rates,
    "cbor_float16": export_cbor_float16,
    "trailing_spaces": export_trailing_spaces,
    "no_device_name": export_no_device_name,
    "new_keys_per_folder": export_new_keys_per_folder,
    "moved_files": export_moved_files,
    "zip": export_zip,
    "test_folder": export_test_folder,
    "idle_lookalikes": export_idle_lookalikes,
    "audio": export_audio,
}
LEAKY = {
    "reupload": export_reupload,
    "rescaled_copy": export_rescaled_copy,
    "overlapping_cuts": export_overlapping_cuts,
}
REPAIRED = {  # leaky as exported; repaired by default (quarantined), refused with [split] strict
    "split_sample_cuts": export_split_sample_cuts,
    "two_uploads": export_two_uploads,
}


# --------------------------------------------------------------------------- exports as they come (issue 21)


def export_two_spellings(root: Path) -> Path:
    """A label spelled two ways, as in a real drone-gesture export: ``x-circle left`` in
    training, and both ``x-circle left`` and ``xcircle left`` in testing (the last 3 of the
    test board's 6 waves carry the second spelling)."""
    files = motion_files()
    for f in files:
        if f["label"] == "wave":
            f["label"] = "x-circle left"
    tests = [f for f in files if f["category"] == "testing" and f["label"] == "x-circle left"]
    for f in tests[-3:]:
        f["label"] = "xcircle left"
    return write_files(root, files)


def export_test_only_class(root: Path, label: str = "testing", count: int = 1) -> Path:
    """The basic export plus ``count`` test sample(s) of a class no training sample has
    (a real gesture export: one test sample labelled ``testing``)."""
    files = motion_files()
    rng = np.random.default_rng(13)
    for k in range(count):
        files.append({"category": "testing", "label": label, "name": f"dev-e.extra{k:02d}",
                      "doc": acquisition(motion_values("updown", 1.0, RATE_HZ, rng), "dev-e")})
    return write_files(root, files)


def export_zip_test_only_class(root: Path) -> Path:
    """``export_test_only_class`` zipped inside one top folder, as a browser saves it."""
    folder = export_test_only_class(root / "unzipped" / "gesture-export")
    path = root / "gesture-export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder.parent))
    return path


def export_listed_missing(root: Path, missing: int = 2) -> Path:
    """info.labels lists every file, and ``missing`` of them (one training, one testing
    first) are not in the export (a real TI LaunchPad export: 2 of 101)."""
    write_files(root, motion_files())
    gone = [sorted((root / "training").glob("*.json"))[0], sorted((root / "testing").glob("*.json"))[0]]
    gone += sorted((root / "training").glob("*.json"))[1:missing - 1]
    for p in gone[:missing]:
        p.unlink()
    return root


REPAIRED = {
    "two_spellings": export_two_spellings,
    "test_only_class": export_test_only_class,
    "zip_test_only_class": export_zip_test_only_class,
    "listed_missing": export_listed_missing,
}


if __name__ == "__main__":  # write every variant, for trying by hand: python tests/ei_fixtures.py DIR
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "ei-fixtures")
    for name, gen in {**CLEAN, **LEAKY, **REPAIRED}.items():
        print(name, gen(out / name))
