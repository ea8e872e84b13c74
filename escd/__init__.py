# SPDX-License-Identifier: GPL-2.0-or-later
"""escd: a smart-card token daemon for CoolKey tokens and the Dogtag TPS."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("escd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
