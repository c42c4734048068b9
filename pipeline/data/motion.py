"""The embedded `motion` dataset: synthetic, deterministic, no download.

3-axis accelerometer (m/s^2, gravity included) at 62.5 Hz, four gestures like Edge
Impulse's continuous-motion tutorial: idle, wave, circle, updown. Each subject has their
own amplitude, tempo and sensor orientation; each records several sessions; each session
holds one recording of about 10 s per gesture, and more idle than anything else.

It carries defects a real collection has, for the audit to find:
- class imbalance (idle has three recordings a session, the others one);
- sensor noise on every sample and a few single-sample spikes;
- a few mislabeled recordings (performed one gesture, labelled another);
- a few duplicated recordings (the same file uploaded twice under a new id).
Which recordings carry a defect is written in ``Dataset.notes`` so tests can check the
audit finds them.
"""

from __future__ import annotations

import numpy as np

RATE_HZ = 62.5
LABELS = ("idle", "wave", "circle", "updown")
CHANNELS = ("accX", "accY", "accZ")
G = 9.80665


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation of up to ``max_deg`` about each axis: how the sensor sits."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _gesture(label: str, t: np.ndarray, amp: float, tempo: float, rng: np.random.Generator) -> np.ndarray:
    """Linear acceleration (n, 3) of one gesture in the hand's frame, without gravity."""
    phase = rng.uniform(0, 2 * np.pi)
    # Tempo drifts slowly within a recording, as a person's does.
    drift = 1.0 + 0.05 * np.sin(2 * np.pi * t / rng.uniform(6, 12) + rng.uniform(0, 6))
    w = 2 * np.pi * tempo * drift
    out = np.zeros((t.size, 3))
    if label == "idle":
        out += 0.15 * np.sin(2 * np.pi * 0.2 * t + phase)[:, None] * rng.normal(size=3)
    elif label == "wave":
        out[:, 0] = amp * 6.0 * np.sin(w * 1.6 * t + phase)
        out[:, 2] = amp * 1.0 * np.sin(2 * w * 1.6 * t + phase)
    elif label == "circle":
        out[:, 0] = amp * 4.5 * np.sin(w * 1.0 * t + phase)
        out[:, 1] = amp * 4.5 * np.cos(w * 1.0 * t + phase)
    elif label == "updown":
        out[:, 2] = amp * 5.5 * np.sin(w * 1.2 * t + phase)
        out[:, 0] = amp * 0.6 * np.sin(w * 1.2 * t + phase + 1.0)
    else:  # pragma: no cover
        raise ValueError(label)
    return out


def generate(seed: int = 0, subjects: int = 12, sessions: int = 3) -> dict:
    """Recordings as plain arrays and metadata; ``pipeline.data.load.load_motion`` wraps them."""
    rng = np.random.default_rng(seed)
    recordings, labels, rec_ids, groups, starts = [], [], [], [], []
    base_time = 1_767_600_000.0  # 2026-01-05, a Monday
    for s in range(subjects):
        subject = f"subject{s + 1:02d}"
        amp = rng.uniform(0.7, 1.3)
        tempo = rng.uniform(0.8, 1.25)
        orientation = _rotation(rng, 25.0)
        noise = rng.uniform(0.2, 0.45)
        for session in range(sessions):
            t0 = base_time + s * 86_400 * 2 + session * 86_400 * 9 + rng.uniform(0, 3600)
            plan = ["idle", "idle", "idle", "wave", "circle", "updown"]
            rng.shuffle(plan)
            for k, label in enumerate(plan):
                n = int(round(RATE_HZ * rng.uniform(9.0, 11.0)))
                t = np.arange(n) / RATE_HZ
                session_orient = orientation @ _rotation(rng, 5.0)
                gravity = session_orient.T @ np.array([0.0, 0.0, G])
                lin = _gesture(label, t, amp * rng.uniform(0.9, 1.1), tempo, rng)
                x = lin @ session_orient + gravity + rng.normal(0, noise, size=(n, 3))
                recordings.append(x.astype(np.float32))
                labels.append(LABELS.index(label))
                rec_ids.append(f"{subject}.s{session + 1}.r{k + 1}")
                groups.append(subject)
                starts.append(t0 + k * 15.0)

    n_rec = len(recordings)
    notes: dict[str, list[str]] = {"spikes": [], "mislabeled": [], "duplicates": []}
    # A few single-sample spikes: a loose connector, a knock on the table.
    for i in rng.choice(n_rec, size=4, replace=False):
        j = rng.integers(0, recordings[i].shape[0])
        recordings[i][j] = rng.choice([-1, 1], size=3) * rng.uniform(60, 80, size=3)
        notes["spikes"].append(rec_ids[i])
    # A few mislabeled recordings: a gesture labelled as another.
    moving = [i for i in range(n_rec) if LABELS[labels[i]] != "idle"]
    for i in rng.choice(moving, size=3, replace=False):
        wrong = [c for c in range(len(LABELS)) if c != labels[i] and LABELS[c] != "idle"]
        labels[i] = int(rng.choice(wrong))
        notes["mislabeled"].append(rec_ids[i])
    # A few duplicated recordings: the same file uploaded twice by its subject.
    for i in rng.choice(n_rec, size=3, replace=False):
        recordings.append(recordings[i].copy())
        labels.append(labels[i])
        rec_ids.append(rec_ids[i] + ".dup")
        groups.append(groups[i])
        starts.append(starts[i] + 3 * 3600.0)
        notes["duplicates"].append(rec_ids[i] + ".dup")
    return {
        "recordings": recordings,
        "labels": np.asarray(labels, dtype=np.int64),
        "recording_ids": np.asarray(rec_ids),
        "groups": np.asarray(groups),
        "starts": np.asarray(starts, dtype=np.float64),
        "notes": notes,
    }
