# SPDX-License-Identifier: GPL-2.0-or-later
"""Every broken config file gives one line naming the file, the key path and the expectation.

The same cases run through ``run_daemon``: the daemon refuses to start with that one
line on stderr and exit code 78, before it touches the bus or pcscd.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from escd.config import Config, describe_keys, load_config
from escd.daemon import EXIT_CONFIG, run_daemon
from escd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# (file content, key path named in the error or "" for file-level errors, expectation text)
INVALID = {
    "unknown-top-level-key": ("logging:\n  level: info\n", "logging", "unknown key"),
    "unknown-nested-key": ("pcsc:\n  reconect_max_delay: 3\n", "pcsc.reconect_max_delay",
                           "unknown key"),
    "section-not-a-mapping": ("pcsc: 5\n", "pcsc", "expected a mapping"),
    "top-level-not-a-mapping": ("- a\n- b\n", "(top level)", "expected a mapping"),
    "bool-as-string": ("policy:\n  hide_format: 'yes please'\n", "policy.hide_format",
                       "expected true or false"),
    "number-as-string": ("pcsc:\n  identify_timeout: soon\n", "pcsc.identify_timeout",
                         "expected a number"),
    "number-as-bool": ("pcsc:\n  identify_timeout: true\n", "pcsc.identify_timeout",
                       "expected a number"),
    "fraction-for-whole-number": ("phone_home:\n  max_size: 1024.5\n", "phone_home.max_size",
                                  "expected a whole number"),
    "below-minimum": ("pcsc:\n  reconnect_initial_delay: 0\n", "pcsc.reconnect_initial_delay",
                      "at least 0.01"),
    "enum-unknown-value": ("log:\n  level: chatty\n", "log.level",
                           "expected one of error, warning, info, debug, traffic"),
    "enum-wrong-type": ("auto_launch:\n  policy: 3\n", "auto_launch.policy", "expected one of"),
    "string-as-number": ("tps:\n  token_type: 5\n", "tps.token_type", "expected a string"),
    "list-as-string": ("auto_launch:\n  command: /usr/bin/esc\n", "auto_launch.command",
                       "expected a list of strings"),
    "list-with-non-string": ("auto_launch:\n  command: [esc, 3]\n", "auto_launch.command",
                             "expected a list of strings"),
    "url-wrong-scheme": ("tps:\n  url: ftp://tps.example.com/tps\n", "tps.url",
                         "expected an http:// or https:// URL"),
    "url-bad-port": ("tps:\n  url: https://tps.example.com:99999/tps\n", "tps.url",
                     "expected a valid port"),
    "url-with-password": ("tps:\n  url: https://jdoe:hunter2@tps.example.com/tps\n", "tps.url",
                          "expected a URL without a user name or password"),
    "origin-with-path": ("tps:\n  allow_http: ['http://tps.example.com/tps']\n",
                         "tps.allow_http", "expected origins like http://host"),
    "not-yaml": ("pcsc: [unclosed\n", "", "not valid YAML (line 2)"),
    "tab-indentation": ("pcsc:\n\tidentify_timeout: 3\n", "", "not valid YAML"),
}  # fmt: skip


def write(tmp_path: Path, content: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def assert_one_line_naming(message: str, path: Path, key: str, expected: str) -> None:
    assert "\n" not in message
    assert str(path) in message
    if key:
        assert f": {key}: " in message
    assert expected in message


@pytest.mark.parametrize(("content", "key", "expected"), INVALID.values(), ids=INVALID.keys())
def test_invalid_file_gives_one_line_naming_file_key_and_expectation(
    tmp_path: Path, content: str, key: str, expected: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    assert_one_line_naming(caught.value.message, path, key, expected)


@pytest.mark.parametrize(("content", "key", "expected"), INVALID.values(), ids=INVALID.keys())
def test_daemon_refuses_to_start_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, key: str, expected: str
) -> None:
    path = write(tmp_path, content)
    assert run_daemon([path], None) == EXIT_CONFIG
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("escd: invalid configuration: ")
    assert_one_line_naming(lines[0], path, key, expected)
    assert "Traceback" not in captured.err


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"log:\n  level: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    assert_one_line_naming(caught.value.message, path, "", "cannot read the file")


def test_directory_instead_of_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    assert_one_line_naming(caught.value.message, path, "", "cannot read the file")


def test_missing_explicit_file_stops_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nope.yaml"
    assert run_daemon([path], None) == EXIT_CONFIG
    assert capsys.readouterr().err == f"escd: invalid configuration: {path}: no such file\n"


def test_error_in_the_user_file_names_the_user_file(tmp_path: Path) -> None:
    system = write(tmp_path, "pcsc:\n  identify_timeout: 3\n", "system.yaml")
    user = write(tmp_path, "pcsc:\n  identify_timeout: never\n", "user.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config([system, user])
    assert_one_line_naming(caught.value.message, user, "pcsc.identify_timeout", "a number")
    assert str(system) not in caught.value.message


def test_user_file_overrides_system_file_key_by_key(tmp_path: Path) -> None:
    system = write(tmp_path, "pcsc:\n  identify_timeout: 3\n  reconnect_max_delay: 9\n", "s.yaml")
    user = write(tmp_path, "pcsc:\n  identify_timeout: 4\n", "u.yaml")
    config = load_config([system, user, tmp_path / "absent.yaml"])
    assert (config.pcsc.identify_timeout, config.pcsc.reconnect_max_delay) == (4, 9)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config([write(tmp_path, "")]) == Config()


def test_shipped_example_lists_every_key_with_its_default() -> None:
    path = ROOT / "config" / "escd.yaml"
    assert load_config([path]) == Config()
    data = yaml.safe_load(path.read_text())
    for key, default, _doc, _esc in describe_keys():
        group, name = key.split(".", 1)
        assert data[group][name] == default, key


def test_every_key_has_a_description() -> None:
    assert all(doc for _key, _default, doc, _esc in describe_keys())


def test_generated_config_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-config-docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    markdown = (ROOT / "docs" / "configuration.md").read_text()
    for key, _default, _doc, _esc in describe_keys():
        assert f"`{key}`" in markdown


def test_a_password_in_a_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    path = write(tmp_path, "phone_home:\n  global_url: https://jdoe:hunter2@h.example/ph\n")
    with pytest.raises(ConfigError) as error:
        load_config([path])
    assert "hunter2" not in str(error.value)
