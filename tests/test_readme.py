"""The README keeps exactly two set-up commands, and CI runs the test one verbatim."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _setup_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    assert "examples/bert_boolq.py" in commands[0] and "pytest" in commands[1]
    assert all(c.startswith("python -m pip install torch==2.13.0") for c in commands)


def test_ci_runs_the_readme_test_command_verbatim():
    assert _setup_commands()[1] in (ROOT / ".ci" / "run").read_text()
