"""Install hints that work as printed, a command group without its command, ``--version``."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


def _livescope_with(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the ``livescope`` command with ``args`` after ``code`` (e.g. hiding a module)."""
    script = f"import sys\n{code}\nsys.argv = ['livescope', *{list(args)!r}]\n"
    script += "from livescope.cli import main\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, cwd=cwd, timeout=120, check=False,
    )  # fmt: skip


def _pip_from_this_checkout(extra: str) -> list[str]:
    """The words of the command that installs ``extra`` here (this venv, this checkout)."""
    return [sys.executable, "-m", "pip", "install", "-e", f"{ROOT}[{extra}]"]


# --- the install hint ---------------------------------------------------------------------


def test_install_command_is_this_pythons_pip_on_this_checkout() -> None:
    # (a bare `pip install "livescope[viewer]"` is another Python's pip where the venv is
    # not active, and livescope is not on PyPI)
    from livescope.schema import install_command

    assert shlex.split(install_command("viewer")) == _pip_from_this_checkout("viewer")


def test_install_command_quotes_a_path_with_spaces_for_the_shell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livescope.schema import install_command

    monkeypatch.setattr(sys, "executable", "/opt/my env/$HOME/bin/python")
    words = shlex.split(install_command("cluster"))
    assert words[:5] == ["/opt/my env/$HOME/bin/python", "-m", "pip", "install", "-e"]


@pytest.mark.parametrize(
    ("executable", "printed"),
    [
        pytest.param(r"C:\src\ls\.venv\Scripts\python.exe", r"C:\src\ls\.venv\Scripts\python.exe",
                     id="plain-path-unquoted"),  # (PowerShell runs a quoted one only after &)
        pytest.param(r"C:\Program Files\Python311\python.exe",
                     r'"C:\Program Files\Python311\python.exe"', id="spaces-quoted"),
    ],
)  # fmt: skip
def test_install_command_on_windows_uses_double_quotes(
    monkeypatch: pytest.MonkeyPatch, executable: str, printed: str
) -> None:
    from livescope.schema import install_command

    monkeypatch.setattr(sys, "executable", executable)
    monkeypatch.setattr(sys, "platform", "win32")
    command = install_command("viewer")
    monkeypatch.undo()
    assert command == f'{printed} -m pip install -e "{ROOT}[viewer]"'


def test_install_command_without_a_checkout_names_the_installed_livescope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livescope.schema import _base, install_command

    monkeypatch.setattr(_base, "_source_checkout", lambda: None)
    words = shlex.split(install_command("gpu"))
    assert words == [sys.executable, "-m", "pip", "install", "livescope[gpu]"]


@pytest.mark.parametrize(
    ("record", "found"),
    [
        pytest.param({"url": "CHECKOUT", "dir_info": {"editable": True}}, True, id="editable"),
        pytest.param({"url": "CHECKOUT", "dir_info": {}}, False, id="not-editable"),
        pytest.param({"url": "https://example.org/ls.whl", "dir_info": {}}, False, id="a-wheel"),
        pytest.param({"url": "GONE", "dir_info": {"editable": True}}, False, id="checkout-gone"),
        pytest.param(None, False, id="no-record"),
        pytest.param([1], False, id="a-damaged-record"),
    ],
)
def test_the_checkout_of_an_editable_install_is_found_from_pips_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, record: object, found: bool
) -> None:
    # (livescope imported from elsewhere than its checkout, e.g. setuptools' strict
    # editable mode: pip's direct_url.json says where it came from)
    from importlib import metadata

    from livescope.schema import _base

    checkout = tmp_path / "my src"
    checkout.mkdir()
    (checkout / "pyproject.toml").write_text("[project]\nname = 'livescope'\n")
    text = json.dumps(record).replace("CHECKOUT", checkout.as_uri())
    text = text.replace("GONE", (tmp_path / "gone").as_uri())

    class _Dist:
        def read_text(self, name: str) -> str | None:
            return text if name == "direct_url.json" and record is not None else None

    monkeypatch.setattr(_base, "__file__", str(tmp_path / "site" / "livescope" / "schema" / "x.py"))
    monkeypatch.setattr(metadata, "distribution", lambda name: _Dist())
    assert _base._source_checkout() == (checkout if found else None)


def test_view_without_napari_prints_the_install_that_works(tmp_path: Path) -> None:
    res = _livescope_with("sys.modules['napari'] = None", "view", str(tmp_path), "--json")
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert error.startswith("napari is not installed"), error
    assert shlex.split(error.split("): ", 1)[1]) == _pip_from_this_checkout("viewer")


def test_engines_build_without_tensorrt_rtx_prints_the_install_that_works() -> None:
    res = _livescope_with(
        "sys.modules['tensorrt_rtx'] = None",
        "engines", "build", "nuclei-unet", "--backend", "tensorrt-rtx",
        "--compute-capability", "SM89", "--json",
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    error = json.loads(res.stdout)["error"]
    hint = error.split("install it with: ", 1)[1].split(" (TensorRT-RTX", 1)[0]
    assert shlex.split(hint) == _pip_from_this_checkout("rtx")


def test_replay_on_a_cluster_without_dask_prints_the_install_that_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from livescope.pipeline import replay_many
    from livescope.schema import LivescopeError

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(LivescopeError, match=r"needs dask\.distributed") as err:
        replay_many([tmp_path / "data"], tmp_path / "out")
    hint = str(err.value).split("dask.distributed: ", 1)[1]
    assert shlex.split(hint) == _pip_from_this_checkout("cluster")


# --- a command group given no command -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "commands"),
    [
        pytest.param(["bench"], "track, bus, engines", id="bench"),  # (JSON either way)
        pytest.param(["plan"], "check", id="plan"),
        pytest.param(["engines"], "list, check, build", id="engines"),
        pytest.param([], "agent, worker", id="no-command-at-all"),
    ],
)
def test_a_group_without_its_command_says_which_it_takes(args: list[str], commands: str) -> None:
    res = run_cli(*args, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    usage = run_cli(*args, "--help", timeout=120).stdout.strip().splitlines()[0].strip()
    assert usage.startswith("Usage: python -m livescope"), usage
    assert usage in res.stderr  # (the help, on stderr)
    assert f"error: missing command: one of {commands}" in res.stderr
    if args == ["bench"]:  # (a benchmark's errors are JSON on stdout)
        error = json.loads(res.stdout)["error"]
        assert error.startswith(f"missing command: one of {commands}"), error
    else:
        assert res.stdout == ""


# --- --version ----------------------------------------------------------------------------


def test_version_option_prints_what_the_version_command_prints() -> None:
    option = run_cli("--version", timeout=120)
    assert option.returncode == 0, option.stdout + option.stderr
    command = run_cli("version", timeout=120)
    assert option.stdout == command.stdout
    assert option.stdout.strip()
