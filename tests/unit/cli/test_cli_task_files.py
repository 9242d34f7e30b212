"""Task files for ``testfleet submit``: what is read, and what each mistake is called."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from testfleet.cli.task_files import TaskFileError, load_task_documents


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refusal(path: str) -> str:
    with pytest.raises(TaskFileError) as raised:
        load_task_documents(path)
    return str(raised.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_yaml_file_has_no_task_documents(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "empty.yaml", text)
    assert refusal(path).startswith(f"{path}: no task documents")


@pytest.mark.parametrize("text", ["", "  \n", "[]"])
def test_an_empty_json_file_or_list_has_no_task_documents(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "empty.json", text)
    assert refusal(path).startswith(f"{path}: no task documents")


def test_a_tab_in_yaml_indentation_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tabs.yaml",
        "- task_id: a\n  type: command\n  config:\n  \targv: [echo, hi]\n",
    )
    assert refusal(path) == (f"{path} line 4: tabs are not allowed in YAML indentation; use spaces")


def test_a_tab_at_the_start_of_a_line_is_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "tabs.yml", "task_id: a\n\ttype: simulated\n")
    assert refusal(path) == (f"{path} line 2: tabs are not allowed in YAML indentation; use spaces")


def test_a_tab_after_a_key_is_named_with_its_column(tmp_path: Path) -> None:
    path = write(tmp_path, "tabs.yaml", "task_id:\ta\n")
    assert refusal(path) == f"{path} line 1 column 9: a tab where YAML needs a space; use spaces"


def test_other_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "- task_id: a\n- task_id: [unclosed\n")
    message = refusal(path)
    assert message.startswith(f"{path} line ")
    assert "not valid YAML" in message


def test_json_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", '[\n  {"task_id": "a"},\n  {"task_id": }\n]\n')
    assert refusal(path).startswith(f"{path} line 3: not valid JSON: ")


def test_yaml_documents_separated_by_dashes_are_all_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.yaml",
        "task_id: a\ntype: simulated\n---\n- task_id: b\n  type: simulated\n---\n# nothing\n",
    )
    assert [d["task_id"] for d in load_task_documents(path)] == ["a", "b"]


def test_stdin_that_is_empty_has_no_task_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert refusal("-") == "<stdin>: no task documents (the file is empty)"


def test_an_item_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- task_id: a\n- just a string\n")
    assert refusal(path) == (f"{path}: item 1 is a str, expected a task document (an object)")
