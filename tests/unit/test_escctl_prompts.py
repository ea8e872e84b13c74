# SPDX-License-Identifier: GPL-2.0-or-later
"""escctl's secret files (``--password-file``, ``--pin-file``): the first line, and no
byte of the file in an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from escd.ctl.prompts import read_secret_file


def test_the_first_line_is_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret-Pw\nignored\n")
    assert read_secret_file(path).reveal() == "s3cret-Pw"


def test_a_file_that_is_not_utf8_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes(b"pw\xff\xfe-rest\n")
    with pytest.raises(ValueError, match="is not UTF-8 text") as caught:
        read_secret_file(path)
    assert str(caught.value) == f"{path} is not UTF-8 text"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
