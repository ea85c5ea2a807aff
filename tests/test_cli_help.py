"""The command line explains itself: every command has a description, every argument a help
text, and the global flags work after the subcommand too."""

from __future__ import annotations

import argparse
import re

import pytest

from builder.cli import main, make_parser
from builder.commands import command_modules
from tests.conftest import REPO, run_cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_command_lives_in_builder_commands_and_is_named_in_the_top_level_help(capsys):
    commands = _subparsers(make_parser())
    assert set(commands) == {"build", "verify", "lookup", "evidence", "takedown", "recheck", "diff",
                             "report", "licenses"}
    assert {m.__name__.rsplit(".", 1)[1] for m in command_modules()} == set(commands)
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    for name in commands:
        assert f"({name})" in top, f"the top-level description omits {name}"


def test_every_command_has_a_description_and_every_argument_a_help_text():
    for name, sub in _subparsers(make_parser()).items():
        assert sub.description, f"cleanset {name} has no description"
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"cleanset {name}: {action.dest} has no help"


def test_lookup_help_does_not_end_mid_sentence(capsys):
    with pytest.raises(SystemExit):
        main(["lookup", "--help"])
    text = capsys.readouterr().out
    description = text.split("positional arguments:")[0].strip()
    assert not description.endswith(":")
    assert '"matches"' in description


def test_takedown_usage_shows_reason_as_required(capsys):
    with pytest.raises(SystemExit):
        main(["takedown", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "--reason TEXT" in usage and "[--reason" not in usage


@pytest.mark.parametrize("argv", [["build", "-v", "x.toml"], ["-v", "build", "x.toml"],
                                  ["build", "x.toml", "--verbose"]])
def test_verbose_is_accepted_before_and_after_the_subcommand(argv):
    args = make_parser().parse_args(argv)
    assert args.verbose is True


def test_verbose_defaults_off():
    assert make_parser().parse_args(["build", "x.toml"]).verbose is False


def test_the_program_hands_a_pipe_all_its_output_and_main_s_exit_code(tmp_path, capsys):
    # `cleanset` ends its process without the interpreter's teardown (builder.cli.run):
    # what it printed must still reach a pipe whole, and the exit code be main()'s.
    import subprocess
    import sys

    assert main(["licenses"]) == 0
    expected = capsys.readouterr().out
    listed = subprocess.run([sys.executable, "-m", "builder", "licenses"], capture_output=True,
                            text=True, check=False)
    assert listed.returncode == 0 and listed.stdout == expected and len(expected) > 10_000

    missing = subprocess.run([sys.executable, "-m", "builder", "verify", str(tmp_path / "nope")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert "nope: no such directory" in missing.stderr


@pytest.mark.parametrize(("preset", "seen"), [(None, "2"), ("4", "4")])
def test_the_program_limits_malloc_arenas_for_itself_and_its_workers_unless_told(
        preset: str | None, seen: str) -> None:
    # The worker processes a build starts inherit it (docs/performance-round2.md: 700 ->
    # 563 MB at the peak of a 10,000-image build); a value the user set is kept.
    import os
    import subprocess
    import sys

    child = ("import os, subprocess, sys; from builder.cli import limit_malloc_arenas; "
             "limit_malloc_arenas(); print(subprocess.run([sys.executable, '-c', "
             "'import os; print(os.environ.get(\"MALLOC_ARENA_MAX\", \"\"))'], "
             "capture_output=True, "
             "text=True, check=True).stdout.strip())")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if preset is not None:
        env["MALLOC_ARENA_MAX"] = preset
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         env=env, check=True).stdout.strip()
    assert out == (seen if sys.platform.startswith("linux") else (preset or ""))


def test_a_ctrl_c_while_the_commands_are_still_importing_exits_130_with_one_line():
    """The commands (and a build's stages) take ~0.25 s to import before a command runs: a
    Ctrl-C then is a Ctrl-C, not a traceback. Here the KeyboardInterrupt a real SIGINT
    raises mid-import is raised by an import hook as the build command is imported."""
    import subprocess
    import sys

    child = ("import sys\n"
             "class CtrlC:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'builder.commands.build':\n"
             "            raise KeyboardInterrupt\n"
             "sys.meta_path.insert(0, CtrlC())\n"
             "from builder.cli import run\n"
             "sys.argv = ['cleanset', 'build', 'recipe.toml']\n"
             "run()\n")
    interrupted = subprocess.run([sys.executable, "-c", child], capture_output=True,
                                 text=True, check=False)

    assert interrupted.returncode == 130, interrupted.stderr
    # not "resume": no command had started (a user wondered what a build had begun)
    assert interrupted.stderr == "cleanset: interrupted; it had not started, so nothing changed.\n"


def test_a_ctrl_c_while_the_program_itself_loads_exits_130_with_one_line() -> None:
    """Before cli.py catches Ctrl-C, the program's own modules load (the entry point imports
    builder.cli): a Ctrl-C then printed Python's traceback. The KeyboardInterrupt a real
    SIGINT raises there is raised by an import hook as builder.cli's sqlite3 is imported."""
    import subprocess
    import sys

    child = ("import sys\n"
             "sys.modules.pop('sqlite3', None)\n"
             "class CtrlC:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'sqlite3':\n"
             "            raise KeyboardInterrupt\n"
             "sys.meta_path.insert(0, CtrlC())\n"
             "sys.argv = ['cleanset', 'build', 'recipe.toml']\n"
             "import runpy\n"
             "runpy.run_module('builder', run_name='__main__')\n")
    interrupted = subprocess.run([sys.executable, "-c", child], capture_output=True,
                                 text=True, check=False, cwd=REPO)

    assert interrupted.returncode == 130, interrupted.stderr
    assert interrupted.stderr == "cleanset: interrupted before it started; nothing changed.\n"


def test_a_base_dependency_missing_after_an_update_is_named_with_the_way_to_reinstall():
    """A checkout updated to a version with a new base dependency, not installed again: the
    program names the module and says to reinstall, instead of a traceback."""
    import subprocess
    import sys

    child = ("import sys\n"
             "class Gone:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'pyarrow':\n"
             "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
             "sys.meta_path.insert(0, Gone())\n"
             "from builder.cli import run\n"
             "sys.argv = ['cleanset', 'verify', 'somewhere']\n"
             "run()\n")
    missing = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                             check=False)

    assert missing.returncode == 1, missing.stderr
    assert "No module named 'pyarrow'" in missing.stderr and "pip install -e ." in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(("command", "says"), [
    ("licenses", "before it finished; it only reads, so nothing changed."),
    ("build", "after the build had finished: only its summary was cut short"),
    ("takedown", "after the takedown had finished: nothing is left to run"),
])
def test_an_output_closed_before_the_command_finished_is_exit_141_and_said_on_stderr(
        tmp_path, command, says):
    """`cleanset recheck --json | head -1` once exited 0 in silence, a recheck's `--apply`
    never run: a job could not tell a finished command from one whose reader left. A command
    that only reads (`licenses list | head`) was told its committed work is kept. A build or
    takedown done before it printed was told to run again "to finish it": the takedown, run
    again, answered "already removed", exit 1."""
    import os
    import subprocess
    import sys

    from tests.test_output_safety import recipe_in

    out = tmp_path / "out"
    argv = ["licenses"] if command == "licenses" else [
        "build", str(recipe_in(tmp_path)), "--out", str(out), "--no-progress"]
    if command == "takedown":
        run_cli(*argv, check=True)
        argv = ["takedown", str(out), "--key", "0000000000", "--reason", "r"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "builder", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, check=False, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "output was closed (broken pipe) " + says in proc.stderr
    assert "Traceback" not in proc.stderr
    if command == "takedown":
        assert "0000000000" in (out / "takedowns.jsonl").read_text()
        assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.parametrize("argv", [["verify", ""], ["recheck", " "], ["report", ""],
                                  ["evidence", "", "0000000000"], ["lookup", ".", ""],
                                  ["build", ""], ["diff", ""], ["report", ".", "--out", ""]])
def test_an_empty_path_is_a_usage_error_not_the_current_directory(argv, capsys):
    """`cleanset verify "$DIR"` with DIR never set once checked wherever it ran."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "an empty string; give a path" in capsys.readouterr().err


@pytest.mark.parametrize("inside", ["ledger.sqlite", "shards", "shards/000000.tar"])
@pytest.mark.parametrize("command", [["verify", "{}"], ["recheck", "{}"], ["report", "{}"],
                                     ["evidence", "{}", "0000000000"], ["lookup", "{}", "."],
                                     ["diff", "{}"], ["takedown", "{}", "--key", "0000000000",
                                                      "--reason", "r"]])
def test_a_file_or_folder_inside_a_dataset_is_answered_with_the_dataset_s_directory(
        tmp_path, capsys, command, inside):
    """`cleanset evidence DIR/ledger.sqlite KEY` said "no such directory", verify and report
    "no ledger.sqlite here; is this a cleanset output directory?" of the ledger itself, and
    each command worded it its own way: every command that takes a dataset names the
    directory it wants."""
    from builder.ledger import Ledger

    dataset = tmp_path / "ds"
    (dataset / "shards").mkdir(parents=True)
    Ledger(dataset / "ledger.sqlite").close()
    (dataset / "shards" / "000000.tar").write_bytes(b"")
    before = (dataset / "ledger.sqlite").read_bytes()
    given = dataset / inside

    code = main([part.format(given) for part in command])

    err = capsys.readouterr().err
    assert code == 2
    assert f"{given}: is a {'folder' if given.is_dir() else 'file'} inside the dataset in " \
           f"{dataset}; give that directory instead: {dataset}" in err
    assert (dataset / "ledger.sqlite").read_bytes() == before


def test_recheck_help_names_every_exit_code_docs_recheck_md_lists(capsys):
    """A scheduled job's author reads `--help`: exit 4 (some samples unreachable, not an
    all-clear) was in docs/recheck.md and the README but not there."""
    table = (REPO / "docs" / "recheck.md").read_text(encoding="utf-8").split("| exit |")[1]
    documented = re.findall(r"^\| (\d) \|", table.split("\n\n")[0], flags=re.M)
    assert sorted(documented) == ["0", "1", "2", "3", "4"]
    with pytest.raises(SystemExit):
        main(["recheck", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for code in documented:
        assert f" {code}: " in text, f"recheck --help does not say what exit {code} means"


def test_build_usage_names_limit_and_workers_as_the_docs_do(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[--limit N]" in text and "[--workers N]" in text
    assert "<first 16 hex digits of the URL's" in text  # as docs/scale.md and the stage are
