"""What the pipeline repaired in the data instead of refusing it, in one record shape.

A repair is data the pipeline could mend without guessing (cuts of a test recording in
training, a label spelled two ways, a listed file that is missing...): it is mended, said
loudly, and the run goes on; ``[split] strict = true`` (``--strict``) refuses instead.

Every repair is one dict, the same for every kind::

    {"kind": str,        # what was repaired, a short id: "quarantined_cuts", "merged_labels", ...
     "what": str,        # one line a person reads: what was found, what was done
     "count": int,       # how many samples (or files, labels) it touched
     "items": [...]}     # the touched things: strings, or dicts with a one-line "text"

Loaders put theirs in ``Dataset.notes["repairs"]``; the splitter adds its own; both land in
``splits.json`` under ``"repairs"``, a list, and the audit, the train summary and the report
show every entry at the top, whatever its kind. This module knows no kind in particular.
"""

from __future__ import annotations

REPAIR_KEYS = ("kind", "what", "count", "items")
SHOWN_ITEMS = 8  # items shown per repair in terminal lines; splits.json holds them all


def repair(kind: str, what: str, items: list) -> dict:
    """One repair record (see the module doc)."""
    return {"kind": kind, "what": " ".join(what.split()), "count": len(items), "items": list(items)}


def item_text(item) -> str:
    """One line for an item: its ``text``, else its fields as ``key value``."""
    if isinstance(item, dict):
        if isinstance(item.get("text"), str):
            return item["text"]
        return ", ".join(f"{k} {v}" for k, v in item.items())
    return str(item)


def repair_lines(repairs, shown: int = SHOWN_ITEMS, indent: str = "  ") -> list[str]:
    """The lines that put every repair at the top of a report: a heading, then per repair its
    ``what`` and its first items. Empty when nothing was repaired."""
    repairs = [r for r in (repairs or []) if isinstance(r, dict)]
    if not repairs:
        return []
    lines = [f"WARNING: {len(repairs)} repair(s) to the data; the run went on ([split] strict = true "
             "or --strict refuses instead):"]
    for r in repairs:
        items = r.get("items") or []
        lines.append(f"{indent}repaired ({r.get('kind', '?')}, {r.get('count', len(items))}): {r.get('what', '')}")
        lines.extend(f"{indent}  - {item_text(x)}" for x in items[:shown])
        if len(items) > shown:
            lines.append(f"{indent}  - ... {len(items) - shown} more (splits.json: repairs)")
    return lines
