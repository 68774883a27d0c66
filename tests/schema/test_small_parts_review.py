"""Small schema parts: `write_atomic`'s clean-up, classifier class names, LIVESCOPE_DATA."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from livescope.schema import (
    EngineCard,
    EngineCardError,
    LivescopeError,
    data_root,
    require_data_root,
    write_atomic,
)

ENGINES = Path(__file__).resolve().parents[2] / "engines"
CELL_STATE_CARD = ENGINES / "classification" / "cell-state" / "card.yaml"


def test_a_text_that_cannot_be_written_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, '{"old": true}')
    with pytest.raises(UnicodeEncodeError):  # (a lone surrogate: e.g. a non-UTF-8 file name)
        write_atomic(target, '{"new": "state \ud800"}')
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_replace_that_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "results"
    (target / "inside").mkdir(parents=True)  # (a folder, not empty, where the file should go)
    with pytest.raises(OSError, match="results"):  # (the target is named)
        write_atomic(target, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def _card_with_classes(tmp_path: Path, classes: list[str]) -> Path:
    data = yaml.safe_load(CELL_STATE_CARD.read_text(encoding="utf-8"))
    data["outputs"][0]["channels"] = classes
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _viewers_accept_state(state: str) -> bool:
    from livescope.bus import decode_overlay
    from livescope.schema import HeaderError

    cell = {"label": 1, "track": 1, "y": 1.0, "x": 1.0, "state": state, "p_mitosis": None}
    header = {"v": 1, "run_id": "r", "seq": 0, "position": "p0", "t": 0, "arrays": [],
              "cells": [cell]}  # fmt: skip
    try:
        decode_overlay(json.dumps(header).encode(), [])
    except HeaderError:
        return False
    return True


def test_a_class_name_every_viewer_would_refuse_is_refused_in_the_card(tmp_path: Path) -> None:
    longest = "m" * 64
    assert _viewers_accept_state(longest)
    card = EngineCard.from_file(_card_with_classes(tmp_path, ["interphase", longest]))
    assert card.outputs[0].channels[1] == longest
    too_long = "late-prometaphase-with-congressing-chromosomes-near-the-spindle-pole"
    assert not _viewers_accept_state(too_long)  # (every overlay message of the run: lost)
    with pytest.raises(
        EngineCardError, match=r"outputs: .*class name .*is 68 characters, .*1 to 64"
    ):
        EngineCard.from_file(_card_with_classes(tmp_path, ["interphase", too_long]))
    with pytest.raises(EngineCardError, match=r"class name '' is 0 characters"):
        EngineCard.from_file(_card_with_classes(tmp_path, ["interphase", ""]))


@pytest.mark.parametrize("card", sorted(ENGINES.glob("*/*/card.yaml")), ids=lambda p: p.parent.name)
def test_the_shipped_cards_still_load(card: Path) -> None:
    assert EngineCard.from_file(card).name == card.parent.name


def test_a_data_folder_under_home_written_with_a_tilde_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shared-data").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))  # (Windows' home)
    monkeypatch.setenv("LIVESCOPE_DATA", "~/shared-data")  # (as a CI env: block passes it)
    assert data_root() == tmp_path / "shared-data"
    assert require_data_root() == tmp_path / "shared-data"


def test_a_data_folder_that_is_a_file_or_missing_is_said_to_be_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data.zip").write_bytes(b"PK")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIVESCOPE_DATA", "data.zip")
    with pytest.raises(LivescopeError, match=r"which is not a folder \(.*data\.zip is a file\)"):
        require_data_root()
    monkeypatch.setenv("LIVESCOPE_DATA", "dtaa")
    with pytest.raises(LivescopeError, match=re.escape(f"({tmp_path / 'dtaa'} is not there)")):
        require_data_root()


def test_a_data_folder_set_with_its_quotes_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("LIVESCOPE_DATA", f'"{tmp_path / "data"}"')  # (cmd's set keeps quotes)
    assert data_root() is None
    with pytest.raises(LivescopeError, match=r"the quotes are part of the value"):
        require_data_root()


def test_a_log_line_nested_too_deep_is_named_not_a_traceback(tmp_path: Path) -> None:
    from livescope.schema import read_jsonl

    log = tmp_path / "frames.jsonl"
    log.write_text('{"seq": 0}\n' + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(LivescopeError, match=r"jsonl, line 2: not a JSON .*nested too deep"):
        read_jsonl(log)
