"""Ticker groups: the universe split into ``ticker_groups`` groups, one network each.

A ticker's group is a function of its symbol and the number of groups only:
the first eight bytes of the SHA-256 of the symbol (UTF-8), read as a big-endian
integer, modulo the number of groups. Adding or removing a ticker therefore never
moves another one, the assignment is the same in every process and on every
machine (unlike Python's ``hash``, which is salted per process), and groups are
near-equal in size on a large universe (a small one may leave a group empty: it
then has no network).

A grouped model's files are a folder holding one ``group-<i>-of-<n>.keras`` per
non-empty group (``i`` from 1; ``n`` the number of groups). The names are lower
case, so they never collide with a ticker's ``<TICKER>.keras`` of a per-ticker
model, and say how many groups there were, so a reader finds each ticker's network
from the folder alone (``ticker_networks``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

Network = TypeVar("Network")

_KEY = re.compile(r"^group-(\d+)-of-(\d+)$")


def group_of(ticker: str, groups: int) -> int:
    """The group of ``ticker`` among ``groups``: 0 to ``groups - 1`` (see the module docstring)."""
    if groups < 1:
        raise ValueError(f"groups must be 1 or more, got {groups}")
    digest = hashlib.sha256(ticker.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % groups


def group_key(index: int, groups: int) -> str:
    """The network key (and file stem) of group ``index`` (from 0) of ``groups``."""
    return f"group-{index + 1}-of-{groups}"


def parse_group_key(key: str) -> tuple[int, int] | None:
    """``(index, groups)`` of a group's key, or ``None`` if ``key`` is not one."""
    match = _KEY.match(key)
    if match is None:
        return None
    number, groups = int(match.group(1)), int(match.group(2))
    return (number - 1, groups) if 1 <= number <= groups else None


def ticker_groups(tickers: Iterable[str], groups: int) -> dict[str, list[str]]:
    """The non-empty groups of ``tickers``: key to sorted tickers, in group order."""
    members: dict[int, list[str]] = {}
    for ticker in sorted(tickers):
        members.setdefault(group_of(ticker, groups), []).append(ticker)
    return {group_key(index, groups): members[index] for index in sorted(members)}


def is_grouped(keys: Iterable[str]) -> bool:
    """Whether networks keyed ``keys`` are a grouped model's (every key a group's)."""
    keys = list(keys)
    return bool(keys) and all(parse_group_key(key) is not None for key in keys)


def ticker_networks(
    networks: Mapping[str, Network], tickers: Iterable[str], where: str
) -> dict[str, Network]:
    """A grouped model's networks keyed by ticker: each of ``tickers`` to its group's
    network (the same object for the tickers of one group).

    Args:
        networks: the model's networks, keyed by group (``group_key``).
        tickers: the tickers wanted.
        where: the model's file or folder, for errors.

    Raises:
        ValueError: the keys disagree on the number of groups, or a ticker's group has
            no network.
    """
    counts = {parsed[1] for key in networks if (parsed := parse_group_key(key)) is not None}
    if len(counts) != 1:
        raise ValueError(f"{where} mixes networks of different groupings: {sorted(networks)}")
    (groups,) = counts
    found: dict[str, Network] = {}
    missing: list[str] = []
    for ticker in tickers:
        key = group_key(group_of(ticker, groups), groups)
        if key in networks:
            found[ticker] = networks[key]
        else:
            missing.append(f"{ticker} ({key})")
    if missing:
        raise ValueError(f"{where} has no network for {', '.join(missing)}")
    return found
