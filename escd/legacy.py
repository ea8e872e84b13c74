# SPDX-License-Identifier: GPL-2.0-or-later
"""Migration from ESC: its ``esc-prefs.js`` and profile ``prefs.js`` read as data, then imported.

Three steps, the first two pure:

1. ``parse_prefs_js`` tokenizes ``pref("name", value);`` / ``user_pref(…)`` statements
   (string, integer and boolean values, JavaScript string escapes, ``//``, ``/* */`` and
   ``#`` comments). The files are never executed. A statement that does not parse is
   reported with its line number and skipped, e.g. the ESC manual's misprinted
   ``pref("pref("esc.global.phone.home.url", …);");``.
2. ``plan_import`` maps what ESC knew onto escd: global preferences onto config keys,
   and the per-token ``<Name>-<keyID>`` preferences (ESC.js ``ConfigValueWithKeyID``,
   rhCoolKey.cpp) onto the token store: ``keyIssuerUrl-<id>`` (its ``?cuid=`` query
   stripped) becomes the token's remembered Phone Home URL, and
   ``keyIssuer``/``Operation``/``UI``/… become a cached phone-home answer. Those are
   data ESC fetched, not settings anyone chose, so they are imported as a cache entry
   with an unknown fetch time (refreshed at the next chance, still used if the server
   is unreachable), never as admin values.
3. ``apply_import`` writes the plan, idempotently: running it twice changes nothing the
   second time, and it never overwrites what escd learned itself.

Global settings and the user's YAML: escd must not rewrite a configuration file a person
maintains (comments, ordering, intent). So if the user has no
``~/.config/escd/config.yaml`` yet, the import creates it with the imported keys, each
commented with the ESC preference it came from; if the file exists, the keys go into
``state_dir()/legacy-import.yaml`` to merge by hand, and the report says so. Settings the
current configuration already has are skipped as such.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from escd.config import Config, load_config
from escd.errors import ConfigError, PhoneHomeError, StateFileError
from escd.phonehome.cache import PhoneHomeRecord, RecordSource, TokenStore, check_token_id
from escd.phonehome.parser import KNOWN_SERVICES, build_info, url_problem
from escd.statefile import write_bytes_atomic

logger = logging.getLogger(__name__)

PrefValue = str | int | bool

#: Largest preference file read (a XULRunner prefs.js is a few hundred KiB at most).
MAX_PREFS_FILE = 8 << 20

_STATEMENTS = {"pref": False, "sticky_pref": False, "user_pref": True}
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_KEY_ID = r"[0-9A-Fa-f]{20}"
_TOKEN_PREF = re.compile(rf"([A-Za-z][A-Za-z0-9_]*)-({_KEY_ID})")
_ESC_KEY_PREF = re.compile(r"esc\.key\.[^.]+\..+")
_STRIP_CUID = re.compile(r"[?&]cuid=[^&#]*$", re.IGNORECASE)

#: ESC's own per-token names that are not ``Services`` children.
_ISSUER_URL = "keyIssuerUrl"
_ISSUER = "keyIssuer"


# --- step 1: the tokenizer ----------------------------------------------------------------


class _PrefSyntaxError(Exception):
    pass


class _Scanner:
    """A cursor over the text that knows its line number."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.pos < len(self.text):
                if self.text[self.pos] == "\n":
                    self.line += 1
                self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_space(self, *, stop_at_newline: bool = False) -> None:
        """Skip blanks and comments; with ``stop_at_newline`` stay on this line."""
        while not self.at_end():
            ch = self.peek()
            rest = self.text[self.pos : self.pos + 2]
            if ch == "\n" and stop_at_newline:
                return
            if ch.isspace():
                self.advance()
            elif rest == "//" or ch == "#":
                while not self.at_end() and self.peek() != "\n":
                    self.advance()
            elif rest == "/*":
                end = self.text.find("*/", self.pos + 2)
                if end < 0:
                    raise _PrefSyntaxError("a /* comment is never closed")
                self.advance(end + 2 - self.pos)
            else:
                return

    def skip_line(self) -> None:
        while not self.at_end() and self.peek() != "\n":
            self.advance()

    def identifier(self) -> str:
        match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(self.text, self.pos)
        if match is None:
            return ""
        self.advance(match.end() - self.pos)
        return match.group()

    def expect(self, char: str, what: str) -> None:
        self.skip_space()
        if self.peek() != char:
            found = self.peek() or "the end of the file"
            raise _PrefSyntaxError(f"expected {what} but found {found!r}")
        self.advance()

    def string(self) -> str:
        quote = self.peek()
        if quote not in ("'", '"'):
            raise _PrefSyntaxError(
                f"expected a quoted string but found {self.peek() or 'nothing'!r}"
            )
        self.advance()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == "" or ch == "\n":
                raise _PrefSyntaxError("a string is not closed on its line")
            self.advance()
            if ch == quote:
                return "".join(out)
            if ch == "\\":
                out.append(self._escape())
            else:
                out.append(ch)

    def _escape(self) -> str:
        ch = self.peek()
        if ch == "" or ch == "\n":
            raise _PrefSyntaxError("a string ends in a backslash")
        self.advance()
        simple = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v"}
        if ch in simple:
            return simple[ch]
        if ch == "0" and not self.peek().isdigit():
            return "\0"
        if ch == "x":
            return chr(self._hex(2))
        if ch == "u":
            code = self._hex(4)
            if 0xD800 <= code < 0xDC00 and self.text.startswith("\\u", self.pos):
                self.advance(2)
                low = self._hex(4)
                if not 0xDC00 <= low < 0xE000:
                    raise _PrefSyntaxError("a \\u escape is half of a surrogate pair")
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
            if 0xD800 <= code < 0xE000:
                raise _PrefSyntaxError("a \\u escape is half of a surrogate pair")
            return chr(code)
        # JavaScript keeps the character of any other escape (\" \' \\ \/ …).
        return ch

    def _hex(self, digits: int) -> int:
        text = self.text[self.pos : self.pos + digits]
        if len(text) != digits or not all(c in "0123456789abcdefABCDEF" for c in text):
            raise _PrefSyntaxError(f"a \\x or \\u escape needs {digits} hex digits")
        self.advance(digits)
        return int(text, 16)

    def value(self) -> PrefValue:
        self.skip_space()
        ch = self.peek()
        if ch in ("'", '"'):
            return self.string()
        match = re.compile(r"[+-]?[0-9]+(?![0-9A-Za-z_.])").match(self.text, self.pos)
        if match is not None:
            number = int(match.group())
            if not _INT_MIN <= number <= _INT_MAX:
                raise _PrefSyntaxError("an integer value is out of range")
            self.advance(match.end() - self.pos)
            return number
        word = self.identifier()
        if word == "true":
            return True
        if word == "false":
            return False
        shown = word or ch or "nothing"
        raise _PrefSyntaxError(
            f"a value must be a string, an integer, true or false, not {shown!r}"
        )


def _parse(text: str) -> tuple[dict[str, tuple[PrefValue, bool]], list[tuple[int, str]]]:
    prefs: dict[str, tuple[PrefValue, bool]] = {}
    skipped: list[tuple[int, str]] = []
    scan = _Scanner(text)
    while True:
        try:
            scan.skip_space()
        except _PrefSyntaxError as problem:
            skipped.append((scan.line, str(problem)))
            break
        if scan.at_end():
            break
        start, start_pos = scan.line, scan.pos
        try:
            name, value, is_user = _statement(scan)
        except _PrefSyntaxError as problem:
            skipped.append((start, str(problem)))
            # Resume on the line after the one the statement began on, even if the error
            # was found further down: a missing ';' must not swallow the next statement.
            scan.pos, scan.line = start_pos, start
            scan.skip_line()
            continue
        _merge(prefs, name, value, is_user)
    return prefs, skipped


def _merge(
    prefs: dict[str, tuple[PrefValue, bool]], name: str, value: PrefValue, is_user: bool
) -> None:
    existing = prefs.get(name)
    # Mozilla's rule: a user value beats a default whatever the order.
    if existing is None or is_user or not existing[1]:
        prefs[name] = (value, is_user)


def _statement(scan: _Scanner) -> tuple[str, PrefValue, bool]:
    keyword = scan.identifier()
    if keyword not in _STATEMENTS:
        shown = keyword or scan.text[scan.pos : scan.pos + 20].split("\n")[0]
        raise _PrefSyntaxError(f"not a pref(), user_pref() or sticky_pref() statement: {shown!r}")
    scan.expect("(", "'(' after " + keyword)
    scan.skip_space()
    name = scan.string()
    scan.skip_space()
    if scan.peek() != ",":
        if re.match(r"\s*(user_|sticky_)?pref\s*\(", name):
            raise _PrefSyntaxError(
                "a pref(...) statement is nested inside another (as misprinted in the ESC "
                'manual); write it as pref("name", value);'
            )
        raise _PrefSyntaxError(f"expected ',' after the name {name!r}")
    scan.advance()
    value = scan.value()
    scan.skip_space()
    if scan.peek() == ",":
        # Newer Mozilla allows attributes (``sticky``, ``locked``) after the value.
        scan.advance()
        scan.skip_space()
        if scan.identifier() not in ("sticky", "locked"):
            raise _PrefSyntaxError("unexpected third argument")
    scan.expect(")", "')'")
    scan.expect(";", "';'")
    scan.skip_space(stop_at_newline=True)
    if not scan.at_end() and scan.peek() != "\n":
        raise _PrefSyntaxError("unexpected text after the statement")
    if not name:
        raise _PrefSyntaxError("the preference name is empty")
    return name, value, _STATEMENTS[keyword]


def parse_prefs_js(text: str) -> tuple[dict[str, PrefValue], list[tuple[int, str]]]:
    """The preferences in a Mozilla ``prefs.js``/``esc-prefs.js`` text, and what was skipped.

    ``user_pref`` values beat ``pref`` defaults; otherwise the last one wins. Each skipped
    statement is ``(line number, reason)``.
    """
    prefs, skipped = _parse(text)
    return {name: value for name, (value, _) in prefs.items()}, skipped


def read_prefs_files(
    paths: Iterable[Path],
) -> tuple[dict[str, PrefValue], list[tuple[str, str]]]:
    """Parse several files in order (defaults first, profile last); skipped as (where, why)."""
    merged: dict[str, tuple[PrefValue, bool]] = {}
    skipped: list[tuple[str, str]] = []
    for path in paths:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_PREFS_FILE + 1)
        except OSError as exc:
            skipped.append((str(path), f"cannot read it ({exc.strerror or exc})"))
            continue
        if len(data) > MAX_PREFS_FILE:
            skipped.append((str(path), f"larger than {MAX_PREFS_FILE} bytes"))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append((str(path), "not UTF-8 text"))
            continue
        prefs, file_skipped = _parse(text)
        skipped.extend((f"{path}:{line}", reason) for line, reason in file_skipped)
        for name, (value, is_user) in prefs.items():
            _merge(merged, name, value, is_user)
    return {name: value for name, (value, _) in merged.items()}, skipped


def find_esc_profiles(home: Path) -> list[Path]:
    """ESC profiles' ``prefs.js`` under ``home/.redhat/esc``, oldest first (newest wins)."""
    return find_profiles_in(home / ".redhat" / "esc")


def find_profiles_in(directory: Path) -> list[Path]:
    """The ``<profile>/prefs.js`` files in ``directory``, oldest first (newest wins)."""
    try:
        found = [p for p in directory.glob("*/prefs.js") if p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))


def find_esc_defaults(root: Path = Path("/")) -> list[Path]:
    """Installed ``esc-prefs.js`` files (``/usr/lib*/esc-*/defaults/preferences``)."""
    found = root.glob("usr/lib*/esc-*/defaults/preferences/esc-prefs.js")
    return sorted(p for p in found if p.is_file())


# --- step 2: the plan ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GlobalSetting:
    """One configuration key to set, and the ESC preference it comes from."""

    key: str  # "section.name", as in escd's config
    value: str | float | bool
    esc_pref: str


@dataclass(frozen=True, slots=True)
class TokenImport:
    """What ESC remembered about one token."""

    token_id: str
    phone_home_url: str | None
    record: PhoneHomeRecord | None


@dataclass(frozen=True, slots=True)
class ImportPlan:
    settings: tuple[GlobalSetting, ...]
    tokens: tuple[TokenImport, ...]
    #: (preference or item, reason) for everything not imported.
    skipped: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did; ``imported`` counts only real changes."""

    imported: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    #: The file global settings were written to, if any.
    written: Path | None = None


def _yes_no(value: PrefValue) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower() == "yes"
    return None


_NO_EQUIVALENT = {
    "esc.enroll.ui.url": "escd has no global enrollment UI URL; set it per token if needed",
    "esc.security.url": "security-officer mode has no escd equivalent",
    "esc.secure.url": "security-officer mode has no escd equivalent",
    "esc.face.to.face.mode": "security-officer mode has no escd equivalent",
    "esc.windows.do.capi": "a Windows-only setting",
    "esc.token.browser.established": "ESC's own bookkeeping, not a setting",
    "esc.ignore.token.browser.url": (
        "escd never opens phone-home URLs by itself unless auto_launch.open_enrolled_token_url "
        "is set; set it by hand if wanted"
    ),
}


def plan_import(prefs: dict[str, PrefValue]) -> ImportPlan:
    """Decide what to import from ESC's preferences (pure)."""
    settings: list[GlobalSetting] = []
    skipped: list[tuple[str, str]] = []
    per_token: dict[str, dict[str, PrefValue]] = {}
    other = 0
    for name, value in prefs.items():
        token_match = _TOKEN_PREF.fullmatch(name)
        if token_match is not None:
            per_token.setdefault(token_match.group(2).lower(), {})[token_match.group(1)] = value
            continue
        if not name.startswith("esc."):
            other += 1
            continue
        setting, reason = _global_setting(name, value)
        if setting is not None:
            settings.append(setting)
        else:
            skipped.append((name, reason))
    if other:
        skipped.append((f"{other} other preference(s)", "Mozilla/XULRunner settings, not ESC's"))
    tokens = []
    for token_id in sorted(per_token):
        token, token_skipped = _token_import(token_id, per_token[token_id])
        skipped.extend(token_skipped)
        if token is not None:
            tokens.append(token)
    return ImportPlan(tuple(settings), tuple(tokens), tuple(skipped))


def _global_setting(name: str, value: PrefValue) -> tuple[GlobalSetting | None, str]:
    if name == "esc.tps.message.timeout":
        try:
            seconds = float(value) if not isinstance(value, bool) else None
        except ValueError:
            seconds = None
        if seconds is None or not 1 <= seconds <= 86400:
            return None, f"expected a number of seconds, not {value!r}"
        return GlobalSetting("tps.message_timeout", seconds, name), ""
    if name in ("esc.tps.url", "esc.global.phone.home.url"):
        key = "tps.url" if name == "esc.tps.url" else "phone_home.global_url"
        url = value.strip() if isinstance(value, str) else ""
        why = url_problem(url) if isinstance(value, str) else "not a string"
        if why is not None:
            return None, f"not a usable URL: {why}"
        return GlobalSetting(key, url, name), ""
    if name in ("esc.hide.format", "esc.disable.password.prompt", "esc.ignore.key.issuer.info"):
        flag = _yes_no(value)
        if flag is None:
            return None, f"expected yes or no, not {value!r}"
        if name == "esc.hide.format":
            return GlobalSetting("policy.hide_format", flag, name), ""
        if name == "esc.disable.password.prompt":
            return GlobalSetting("policy.require_pin_for_certificates", not flag, name), ""
        return GlobalSetting("phone_home.use_token_url", not flag, name), ""
    if name == "esc.global.alt.nss.db":
        return None, (
            "an NSS database, which escd cannot read; export its CA certificates as PEM "
            "(certutil -L -d DIR -n NICKNAME -a) into a directory and set trust.shared_dir"
        )
    if _ESC_KEY_PREF.fullmatch(name):
        return None, (
            "esc.key.<id>.* appears in the ESC manual but ESC never read it; set the value "
            "with escctl for the token if it is still wanted"
        )
    return None, _NO_EQUIVALENT.get(name, "not an ESC setting escd knows")


def strip_cuid_query(url: str) -> str:
    """ESC's ``keyIssuerUrl-<id>`` after a phone home (``<url>?cuid=<id>``) → ``<url>``."""
    return _STRIP_CUID.sub("", url.strip()).rstrip("?")


def _token_import(
    token_id: str, values: dict[str, PrefValue]
) -> tuple[TokenImport | None, list[tuple[str, str]]]:
    skipped: list[tuple[str, str]] = []
    values = dict(values)
    for name, value in list(values.items()):
        if not isinstance(value, str):
            skipped.append((f"{name}-{token_id}", "ESC stores these as strings"))
            del values[name]
    phone_home_url: str | None = None
    raw_url = values.pop(_ISSUER_URL, None)
    if isinstance(raw_url, str) and raw_url.strip():
        url = strip_cuid_query(raw_url)
        why = url_problem(url)
        if why is None:
            phone_home_url = url
        else:
            skipped.append((f"{_ISSUER_URL}-{token_id}", f"not a usable URL: {why}"))
    issuer = values.pop(_ISSUER, None)
    # Known elements first in the order a Java TPS sends them, then any others.
    order = {name: index for index, name in enumerate(KNOWN_SERVICES)}
    services = sorted(
        ((name, str(text)) for name, text in values.items()),
        key=lambda item: (order.get(item[0], len(order)), item[0]),
    )
    record: PhoneHomeRecord | None = None
    if services or issuer is not None:
        try:
            info = build_info(str(issuer or ""), services)
        except PhoneHomeError as exc:
            skipped.append((f"cached phone home of {token_id}", exc.reason))
        else:
            record = PhoneHomeRecord(info, None, phone_home_url or "", RecordSource.LEGACY_IMPORT)
    if phone_home_url is None and record is None:
        return None, skipped
    return TokenImport(check_token_id(token_id), phone_home_url, record), skipped


# --- step 3: applying it -------------------------------------------------------------------


def apply_import(
    plan: ImportPlan,
    store: TokenStore,
    *,
    config_paths: Sequence[Path],
    snippet_path: Path,
) -> ImportReport:
    """Carry out a plan; idempotent. ``config_paths`` as ``escd.config.config_paths()``."""
    imported: list[str] = []
    skipped: list[tuple[str, str]] = list(plan.skipped)
    for token in plan.tokens:
        _apply_token(token, store, imported, skipped)
    written = _apply_settings(plan.settings, config_paths, snippet_path, imported, skipped)
    for line in imported:
        logger.info("imported from ESC: %s", line)
    return ImportReport(tuple(imported), tuple(skipped), written)


def import_legacy(
    paths: Iterable[Path],
    store: TokenStore,
    *,
    config_paths: Sequence[Path],
    snippet_path: Path,
) -> ImportReport:
    """Read, plan and apply in one go (what ``Manager.ImportLegacyPreferences`` runs)."""
    prefs, read_skipped = read_prefs_files(paths)
    plan = plan_import(prefs)
    report = apply_import(plan, store, config_paths=config_paths, snippet_path=snippet_path)
    return ImportReport(report.imported, (*read_skipped, *report.skipped), report.written)


def _apply_token(
    token: TokenImport,
    store: TokenStore,
    imported: list[str],
    skipped: list[tuple[str, str]],
) -> None:
    current = store.load(token.token_id)
    try:
        if token.phone_home_url is not None:
            item = f"Phone Home URL of {token.token_id}"
            known = current.agent_phone_home_url
            if known is None:
                store.set_agent_phone_home_url(token.token_id, token.phone_home_url)
                imported.append(f"{item}: {token.phone_home_url}")
            elif known == token.phone_home_url:
                skipped.append((item, "already imported"))
            else:
                skipped.append((item, f"escd already remembers {known}"))
        if token.record is not None:
            item = f"cached phone home of {token.token_id}"
            existing = current.phone_home
            if existing is not None and existing.source is RecordSource.FETCHED:
                skipped.append((item, "escd has fetched its own answer since"))
            elif existing == token.record:
                skipped.append((item, "already imported"))
            else:
                store.put_phone_home(token.token_id, token.record)
                imported.append(
                    f"{item}: issuer {token.record.info.issuer_name!r}, "
                    f"TPS {token.record.info.tps_url or '(none)'}"
                )
    except StateFileError as exc:
        skipped.append((f"token {token.token_id}", exc.message))


def _apply_settings(
    settings: Sequence[GlobalSetting],
    config_paths: Sequence[Path],
    snippet_path: Path,
    imported: list[str],
    skipped: list[tuple[str, str]],
) -> Path | None:
    if not settings:
        return None
    try:
        current = load_config(list(config_paths))
    except ConfigError as exc:
        for setting in settings:
            skipped.append((setting.esc_pref, f"the current configuration is invalid: {exc}"))
        return None
    wanted = []
    for setting in settings:
        if _config_value(current, setting.key) == setting.value:
            skipped.append((setting.esc_pref, f"{setting.key} is already {setting.value!r}"))
        else:
            wanted.append(setting)
    if not wanted:
        return None
    text = render_settings(wanted)
    user_config = config_paths[-1]
    described = [f"{s.key} = {s.value!r} (from {s.esc_pref})" for s in wanted]
    try:
        if not user_config.exists():
            write_bytes_atomic(user_config, text.encode("utf-8"), mode=0o644)
            imported.extend(f"{line} into {user_config}" for line in described)
            return user_config
        if snippet_path.exists() and snippet_path.read_text(encoding="utf-8") == text:
            reason = f"already in {snippet_path}; merge it into {user_config} by hand"
        else:
            write_bytes_atomic(snippet_path, text.encode("utf-8"), mode=0o644)
            reason = (
                f"written to {snippet_path}; escd does not edit {user_config}, merge it by hand"
            )
    except (OSError, StateFileError) as exc:
        reason = f"could not be written ({exc})"
        for setting in wanted:
            skipped.append((setting.esc_pref, reason))
        return None
    for setting in wanted:
        skipped.append((setting.esc_pref, reason))
    return snippet_path


def _config_value(config: Config, key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(getattr(config, section), name)


def render_settings(settings: Sequence[GlobalSetting], now: datetime | None = None) -> str:
    """The settings as an escd YAML config, each key commented with its ESC preference."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    lines = [f"# Imported from ESC preferences by escd on {stamp}.", ""]
    sections: dict[str, list[GlobalSetting]] = {}
    for setting in settings:
        sections.setdefault(setting.key.split(".", 1)[0], []).append(setting)
    for section, members in sections.items():
        lines.append(f"{section}:")
        for setting in members:
            lines.append(f"  # {setting.esc_pref}")
            lines.append(f"  {setting.key.split('.', 1)[1]}: {_yaml_scalar(setting.value)}")
        lines.append("")
    text = "\n".join(lines)
    # What we write must load as a valid escd configuration.
    Config.from_mapping(yaml.safe_load(text) or {}, "<legacy import>")
    return text


def _yaml_scalar(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    # A JSON string is a valid YAML double-quoted scalar, escapes included.
    return json.dumps(value, ensure_ascii=False)
