"""Kept answers on disk: how an xdist worker hands the controller what its checks compared.

A failing or ambiguous check keeps its feed and both answers (deploy_parity.check.
KeptAnswers) so that the report's picture costs no inference. In one process the
recorder holds them; under xdist they live in the worker, so at its end the worker
writes the ones it kept to <reports dir>/<worker id>/answers/ (one .npz of plain arrays
per case, no pickle, and an index naming the run and each case), and the controller
maps them onto the merged records and loads each only when its picture is drawn.

A case whose answers cannot be stored this way (an answer that is not arrays by name),
or a folder that cannot be written or read back, falls back to drawing the case by
running it again, which the terminal line counts ("N drawn by running the case again").
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np

INDEX_NAME = "index.json"
# Records that get a picture: failures first, then ambiguous cases.
PICTURE_VERDICTS = ("fail", "ambiguous")


def picture_key(record: dict) -> tuple:
    """What makes two records the same picture: one check of one model on one backend
    and precision, at one size, batch, dtypes and seed (Hypothesis replays a failing
    example, and a replay is not pictured twice)."""
    return (record["check"], record["model"], record["backend"], record["precision"], record["height"],
            record["width"], record["batch"], tuple(record["dtypes"]), record["seed"])


def pictured_records(records: list) -> dict:
    """picture key -> index of the record its picture is drawn for: the first record of
    that key with a picture verdict (a case Hypothesis replayed is pictured once)."""
    first: dict = {}
    for index, record in enumerate(records):
        if record.get("verdict") in PICTURE_VERDICTS:
            first.setdefault(picture_key(record), index)
    return first


def _flatten(value, arrays: dict) -> Optional[object]:
    """The layout of an answer (names -> array keys), its arrays added to `arrays`;
    None when it is not a dict of arrays or a list of those."""
    if isinstance(value, dict):
        layout = {}
        for name, array in value.items():
            if not isinstance(array, np.ndarray) or array.dtype.hasobject:  # savez would pickle those
                return None
            key = f"a{len(arrays)}"
            arrays[key] = array
            layout[str(name)] = key
        return layout
    if isinstance(value, list):
        parts = [_flatten(item, arrays) for item in value]
        return None if any(part is None for part in parts) else parts
    return None


def _unflatten(layout, arrays) -> object:
    if isinstance(layout, list):
        return [_unflatten(part, arrays) for part in layout]
    return {name: arrays[key] for name, key in layout.items()}


def save_answers(directory: Path, run_uid: str, kept: list) -> Optional[Path]:
    """Write `kept`, a list of (record, KeptAnswers), to `directory` (emptied first), one
    entry per picture key; returns the index, or None when nothing could be stored.
    On an error the folder is removed and the error raised."""
    directory = Path(directory)
    remove_answers(directory)  # an earlier run's answers are not this run's
    entries, keys = [], set()
    try:
        for record, answers in kept:
            key = picture_key(record)
            if key in keys:  # a replay of a case already stored
                continue
            arrays: dict = {}
            layout = {part: _flatten(getattr(answers, part), arrays) for part in ("feed", "first", "second")}
            if any(part is None for part in layout.values()):
                continue  # not arrays by name: drawn by running it again
            directory.mkdir(parents=True, exist_ok=True)
            name = f"{len(entries):04d}.npz"
            np.savez(directory / name, **arrays)
            keys.add(key)
            entries.append({"key": list(key), "check": answers.check, "file": name, "layout": layout})
        if not entries:
            return None
        index = directory / INDEX_NAME
        index.write_text(json.dumps({"run": run_uid, "answers": entries}))
        return index
    except BaseException:
        remove_answers(directory)
        raise


def remove_answers(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class StoredAnswers(Mapping):
    """record index -> KeptAnswers, read from the workers' answer files when asked for.

    Built from the merged records, so an index is the record's place in results.jsonl;
    a file of another run, or one that no longer reads, is simply not there (its case
    is then re-run for its picture)."""

    def __init__(self, index_paths: list, run_uid: str, records: list):
        self._where: dict = {}
        first_index = pictured_records(records)
        for index_path in index_paths:
            index_path = Path(index_path)
            try:
                content = json.loads(index_path.read_text())
                if content.get("run") != run_uid:
                    continue
                for entry in content["answers"]:
                    *head, dtypes, seed = entry["key"]  # JSON made the dtypes tuple a list
                    record_index = first_index.get((*head, tuple(dtypes), seed))
                    if record_index is not None:
                        self._where[record_index] = (index_path.parent / entry["file"], entry)
            except Exception:  # noqa: BLE001 - unreadable: its cases are re-run for their pictures, and counted
                continue

    def __getitem__(self, record_index: int):
        from deploy_parity.check import KeptAnswers

        path, entry = self._where[record_index]
        try:
            stored = np.load(path, allow_pickle=False)
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with stored:
                arrays = {key: stored[key] for key in stored.files}
            layout = entry["layout"]
            return KeptAnswers(entry["check"], _unflatten(layout["feed"], arrays),
                               _unflatten(layout["first"], arrays), _unflatten(layout["second"], arrays))
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
            raise KeyError(f"{path}: {type(error).__name__}: {error}") from error

    def get(self, record_index, default=None):
        try:
            return self[record_index]
        except KeyError:
            return default

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)
