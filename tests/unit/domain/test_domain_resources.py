"""requirements.resources at the edge: sizes with units, bounds, clear errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from testfleet.domain.enums import TaskType
from testfleet.domain.resources import ResourceAmounts, TaskResources, format_size, parse_size
from testfleet.domain.task import Requirements, TaskSpec

GIB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GiB", 2 * GIB),
        ("2G", 2 * GIB),
        ("512MB", 512 * 1000**2),
        ("1.5 GiB", 3 * GIB // 2),
        ("4096", 4096),
        (" 64 mib ", 64 * 1024**2),
        (1234, 1234),
        (2.0, 2),
    ],
)
def test_sizes_read_as_people_write_them(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["2XB", "", "GiB", "-1G", "1e9", True, float("inf"), 1.5])
def test_a_bad_size_is_refused_with_the_rule(bad: object) -> None:
    with pytest.raises(ValueError, match="a whole number of bytes or a size with a unit"):
        parse_size(bad)


def spec(resources: dict[str, Any]) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "type": "command",
            "config": {"argv": ["true"]},
            "requirements": {"resources": resources},
        }
    )


def test_a_task_declares_memory_cores_and_disk() -> None:
    declared = spec({"memory_bytes": "2GiB", "cpu_cores": 2, "disk_bytes": "10GB"})
    assert declared.requirements.resources.amounts() == ResourceAmounts(2 * GIB, 2, 10 * 1000**3)
    # Stored as plain bytes: it reads back the same from the requirements column.
    again = Requirements.model_validate_json(declared.requirements.model_dump_json())
    assert again == declared.requirements


@pytest.mark.parametrize(
    ("resources", "field", "words"),
    [
        ({"memory_bytes": "1MiB"}, "memory_bytes", "greater than or equal to 16777216"),
        ({"memory_bytes": "2 petabytes"}, "memory_bytes", "a size with a unit"),
        ({"memory_bytes": 2**60}, "memory_bytes", "less than or equal"),
        ({"cpu_cores": 0}, "cpu_cores", "greater than or equal to 1"),
        ({"cpu_cores": "2"}, "cpu_cores", "valid integer"),
        ({"cpu_cores": True}, "cpu_cores", "valid integer"),
        ({"disk_bytes": "10"}, "disk_bytes", "greater than or equal to 4096"),
        ({"gpus": 1}, "gpus", "Extra inputs are not permitted"),
    ],
)
def test_bad_resources_name_the_field(resources: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(resources)
    (error,) = caught.value.errors()
    assert error["loc"] == ("requirements", "resources", field)
    assert words in error["msg"]


def test_no_resources_changes_nothing() -> None:
    plain = TaskSpec(type=TaskType.COMMAND, config={"argv": ["true"]})
    assert plain.requirements.resources == TaskResources()
    assert not plain.requirements.resources.amounts()
    # The match key (and so the scheduler's cache) is what it was before resources.
    assert plain.requirements.key() == "{}"


def test_sizes_are_shown_in_binary_units() -> None:
    assert [format_size(n) for n in (512, 1536, 31 * GIB, 3 * GIB // 2)] == [
        "512 B",
        "1.5 KiB",
        "31 GiB",
        "1.5 GiB",
    ]


def test_explicit_nulls_and_the_wire_round_trip() -> None:
    """The coordinator sends the spec with every field, nulls included: the worker
    must read it back (an ``int | None`` with bounds would raise TypeError on null)."""
    from testfleet.protocol.codec import Codec, decode, encode
    from testfleet.protocol.messages import Assign, Assignment

    declared = spec({"memory_bytes": None, "cpu_cores": None, "disk_bytes": "1MiB"})
    assert declared.requirements.resources.amounts() == ResourceAmounts(0, 0, 1024**2)
    message = Assign(assignments=[Assignment(attempt_id=1, attempt=1, task=declared)])
    for codec in Codec:
        assert decode(encode(message, codec)) == message
