"""The console commands of setup.py (``ssal-train`` ...): each is ``python -m ssal_keras.NAME``."""

import ast
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_env, one_error_line

#: Each console command and the ``python -m`` module it stands for.
COMMANDS = {
    "ssal-train": "ssal_keras.train",
    "ssal-evaluate": "ssal_keras.evaluate",
    "ssal-group": "ssal_keras.group",
    "ssal-analyze": "ssal_keras.analyze",
    "ssal-export": "ssal_keras.export.__main__",
    "ssal-demo": "ssal_keras.demo",
}


def setup_console_scripts():
    """``{command: "module:function"}`` of setup.py's ``entry_points``, read without running it."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict((part.strip() for part in line.split("=", 1)) for line in scripts)
    raise AssertionError("setup.py has no entry_points")


def top_level_main(module):
    """The module's ``def main()`` (None if absent), read without importing the module: each
    entry module defines its own absl flags, so two of them cannot share a process."""
    with open(importlib.util.find_spec(module).origin) as f:
        tree = ast.parse(f.read())
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    return mains[0] if mains else None


def test_setup_declares_every_command_at_a_main():
    scripts = setup_console_scripts()
    assert scripts == {name: f"{module}:main" for name, module in COMMANDS.items()}
    for name, module in COMMANDS.items():
        main = top_level_main(module)
        assert main is not None, f"{name}: {module} has no main()"
        arguments = main.args
        assert not (arguments.args or arguments.posonlyargs or arguments.kwonlyargs
                    or arguments.vararg or arguments.kwarg), f"{module}.main takes arguments"
    # Where the installed metadata has console scripts, it is setup.py's (not a stale install).
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.value.startswith("ssal_keras.")}
    if installed:
        assert installed == scripts


def console_script(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent: ssal_keras was installed without its console scripts "
                    "(pip install -e '.[test]' makes them)")
    return path


def test_console_commands_fail_in_one_line_as_python_m(tmp_path):
    commands = {
        "train": [console_script("ssal-train"), "--no_such_flag=1"],
        "group": [console_script("ssal-group"), "--no_such_flag=1"],
    }
    # Side by side: each start-up spends seconds importing TensorFlow. From another
    # directory, as a user runs an installed command.
    processes = {name: subprocess.Popen(command, cwd=tmp_path, env=cli_env(), text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, command in commands.items()}
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        results[name] = (process.returncode, out, err)
    for prog in ("train", "group"):
        assert results[prog][0] == 2, results[prog][2][-2000:]
        line = one_error_line(results[prog], prog=prog)
        assert "no_such_flag" in line


def test_commands_start_without_tensorflow_lines_unless_asked(tmp_path):
    """TensorFlow's native start-up lines (oneDNN, CUDA probing, CPU features) are hidden on
    the command lines; a user who sets TF_CPP_MIN_LOG_LEVEL chooses for themselves."""
    quiet = {k: v for k, v in cli_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    commands = {
        "python -m": [sys.executable, "-m", "ssal_keras.group", "--help"],
        "console": [console_script("ssal-evaluate"), "--model_dir", str(tmp_path / "none")],
    }
    processes = {name: subprocess.Popen(command, cwd=tmp_path, env=quiet, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, command in commands.items()}
    results = {name: p.communicate(timeout=120) + (p.returncode,)
               for name, p in processes.items()}
    out, err, code = results["python -m"]
    assert "Builds a label grouping file" in out and err == "", err  # absl exits 1 on --help
    out, err, code = results["console"]
    assert code == 2 and err.startswith("evaluate: error: ") and len(err.splitlines()) == 1, err


def test_only_the_command_lines_start_quietly(monkeypatch):
    from ssal_keras import startup

    for argv0, expected in (("-m", True), ("/usr/bin/ssal-train", True),
                            ("/usr/lib/python3/pytest", False), ("", False)):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert startup.started_as_command() is expected
