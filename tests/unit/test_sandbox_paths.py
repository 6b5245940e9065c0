"""Where a file can hide in a shell argument, and which ones leave the work directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.executors.sandbox_paths import outside_arguments, path_candidates


@pytest.mark.parametrize(
    ("argument", "hidden"),
    [
        ("-f/etc/hostname", "/etc/hostname"),
        ("-uo/x", "/x"),
        ("-o../x", "../x"),
        ("--output=../x", "../x"),
        ("if=/dev/sda", "/dev/sda"),
        ("a=b=/x", "/x"),
    ],
)
def test_a_value_attached_to_an_option_is_a_candidate(argument: str, hidden: str) -> None:
    assert hidden in set(path_candidates(argument))


def test_a_slash_inside_an_attached_value_does_not_start_another_candidate() -> None:
    assert set(path_candidates("-o/work/session/out")) == {
        "-o/work/session/out",
        "/work/session/out",
    }


@pytest.mark.parametrize(
    "argument", ["../x", "/etc/hostname", "~/.bashrc", "-f/etc/x", "--output=../x", "-t/tmp"]
)
def test_arguments_leaving_the_work_directory_are_named(tmp_path: Path, argument: str) -> None:
    assert outside_arguments(["cp", "f", argument], tmp_path) == [argument]


@pytest.mark.parametrize(
    "argument", ["f", "sub/../f", "-n5", "-", "--output=out", "+%Y/%m/%d", "-o{root}/out"]
)
def test_arguments_inside_the_work_directory_pass(tmp_path: Path, argument: str) -> None:
    assert outside_arguments(["sort", argument.format(root=tmp_path)], tmp_path) == []


def test_a_symlink_out_of_the_work_directory_is_followed(tmp_path: Path) -> None:
    (tmp_path / "session").mkdir()
    (tmp_path / "session" / "door").symlink_to(tmp_path)
    assert outside_arguments(["cat", "door/x", "-odoor/y"], tmp_path / "session") == [
        "door/x",
        "-odoor/y",
    ]
