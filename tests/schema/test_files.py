"""Files written whole or not at all (`write_atomic`)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from livescope.schema import LivescopeError, read_jsonl, replace_path, write_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, '{"old": true}')
    write_text = Path.write_text

    def full(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        write_text(self, data[:3], *args, **kwargs)  # as a full disk does: cut short
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, '{"new": true}')
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_data_folder_that_does_not_exist_is_not_replaced_by_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livescope.schema import LivescopeError, data_root, require_data_root

    monkeypatch.setenv("LIVESCOPE_DATA", str(tmp_path / "typo"))
    assert data_root() is None  # (not ../shared/data, which may exist beside the checkout)
    with pytest.raises(LivescopeError, match=r"LIVESCOPE_DATA is .*typo, which is not a folder"):
        require_data_root()
    monkeypatch.setenv("LIVESCOPE_DATA", str(tmp_path))
    assert data_root() == tmp_path


def test_remove_file_never_raises_so_that_closing_goes_on(tmp_path: Path) -> None:
    from livescope.schema import remove_file

    f = tmp_path / "bus.json"
    f.write_text("{}")
    assert remove_file(f) is True
    assert not f.exists()
    assert remove_file(f) is True  # (gone already)
    (tmp_path / "a-folder").mkdir()
    assert remove_file(tmp_path / "a-folder") is False  # (an OSError: logged, not raised)
    assert (tmp_path / "a-folder").is_dir()


def test_a_log_cut_short_by_a_kill_reads_up_to_its_last_whole_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "latency.jsonl"
    log.write_text('{"t": 0}\n\n{"t": 1}\n{"t": 2, "ms": {"eng', encoding="utf-8")
    with caplog.at_level("WARNING", logger="livescope"):
        assert read_jsonl(log) == [{"t": 0}, {"t": 1}]
    assert "its last line was cut short" in caplog.text
    assert read_jsonl(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"t": 0}\n{"t": 1\n{"t": 2}\n', r"latency\.jsonl, line 2: not a JSON record"),
        ('{"t": 0}\n[1, 2]\n', r"latency\.jsonl, line 2: a record is a JSON object, not list"),
    ],
)
def test_a_damaged_log_line_is_named(tmp_path: Path, text: str, message: str) -> None:
    log = tmp_path / "latency.jsonl"
    log.write_text(text, encoding="utf-8")
    with pytest.raises(LivescopeError, match=message):
        read_jsonl(log)


def test_a_folder_held_open_for_a_moment_is_renamed_once_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows refuses to rename a folder while a file in it is open (a viewer, an indexer)
    import os

    (src := tmp_path / "new").mkdir()
    (src / "mask.tif").write_bytes(b"x")
    real, refused = os.replace, []

    def busy_twice(a: Any, b: Any) -> None:
        if len(refused) < 2:
            refused.append(b)
            raise PermissionError(13, "in use by another process", str(a))
        real(a, b)

    monkeypatch.setattr(os, "replace", busy_twice)
    replace_path(src, tmp_path / "p0")
    assert len(refused) == 2
    assert (tmp_path / "p0" / "mask.tif").read_bytes() == b"x"

    def always_busy(a: Any, b: Any) -> None:
        raise PermissionError(13, "in use by another process", str(a))

    monkeypatch.setattr(os, "replace", always_busy)
    with pytest.raises(PermissionError, match="in use"):  # after a second of retries
        replace_path(tmp_path / "p0", tmp_path / "p1")
    assert (tmp_path / "p0").is_dir()
