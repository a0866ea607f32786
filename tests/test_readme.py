"""The README documents every command-line option, and its two commands are the ones the project runs."""

import dataclasses
import re
from pathlib import Path

import finetune_ctc
import train_distill

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def documented_options() -> set[str]:
    return set(re.findall(r"^\| `(--[a-z0-9_]+)` \|", README, flags=re.MULTILINE))


def test_every_train_distill_option_is_in_the_readme_table():
    options = {a.option_strings[0] for a in train_distill.build_parser()._actions if a.option_strings[0] != "-h"}
    assert options - documented_options() == set()


def test_every_finetune_ctc_option_is_in_the_readme_table():
    fields = dataclasses.fields(finetune_ctc.ModelArguments) + dataclasses.fields(finetune_ctc.DataTrainingArguments)
    assert {f"--{f.name}" for f in fields} - documented_options() == set()


def test_the_file_table_lists_every_source_file():
    """Every Python file of the checkout (but the tests) is named in the README's file table."""
    table = README.split("| file | what it is |")[1].split("\n\n")[0]
    sources = [
        p for p in REPO_ROOT.rglob("*.py") if not {".venv", "tests", "outputs"} & set(p.relative_to(REPO_ROOT).parts)
    ]
    assert len(sources) > 20
    missing = [str(p.relative_to(REPO_ROOT)) for p in sources if f"`{p.relative_to(REPO_ROOT)}`" not in table]
    assert missing == []


def test_the_two_commands_exist_and_ci_runs_the_test_command():
    assert "bash run_demo.sh" in README and "bash run_tests.sh" in README
    assert (REPO_ROOT / "run_demo.sh").is_file() and (REPO_ROOT / "run_tests.sh").is_file()
    assert "bash run_tests.sh" in (REPO_ROOT / ".ci" / "run").read_text()
