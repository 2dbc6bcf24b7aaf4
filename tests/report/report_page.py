"""The report's HTML as a tree, read with the standard library's ``html.parser``.

Enough of a DOM for the tests to ask about the page's structure: elements by
tag, id, class and attributes, their text, and the points of an SVG path.
The parser lower-cases tag and attribute names (``viewBox`` is ``viewbox``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

#: HTML elements that never have content (no end tag).
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


@dataclass(eq=False)
class Element:
    """An element: its tag, attributes, and children (elements and text, in order)."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def iter(self, tag: str | None = None, **attrs: str) -> Iterator[Element]:
        """This element and its descendants, in document order, with ``tag`` and ``attrs``
        (``class_`` matches one of the classes)."""
        if (tag is None or self.tag == tag) and all(
            value in self.attrs.get("class", "").split()
            if name == "class_"
            else self.attrs.get(name.replace("_", "-")) == value
            for name, value in attrs.items()
        ):
            yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter(tag, **attrs)

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        """The one matching element (``iter``); fails unless there is exactly one."""
        found = list(self.iter(tag, **attrs))
        assert len(found) == 1, f"{len(found)} <{tag}> {attrs} in <{self.tag}>"
        return found[0]

    def by_id(self, element_id: str) -> Element:
        """The element with this id."""
        return self.find(id=element_id)

    @property
    def text(self) -> str:
        """The text inside, whitespace collapsed; elements' texts separated by a space."""
        parts: list[str] = []

        def walk(element: Element) -> None:
            for child in element.children:
                if isinstance(child, str):
                    parts.append(child)
                else:
                    walk(child)

        walk(self)
        return " ".join(" ".join(parts).split())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.open) - 1, 0, -1):
            if self.open[index].tag == tag:
                del self.open[index:]
                return
        raise AssertionError(f"</{tag}> closes nothing open")

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(document: str) -> Element:
    """The tree of ``document``; fails when an element is left open."""
    builder = _TreeBuilder()
    builder.feed(document)
    builder.close()
    assert builder.open == [builder.root], [element.tag for element in builder.open]
    return builder.root


def path_points(d: str, offset: tuple[float, float] = (0.0, 0.0)) -> list[tuple[float, float]]:
    """The (x, y) points of an SVG path's ``M`` and ``L`` commands (what matplotlib writes),
    moved by ``offset``."""
    numbers = re.findall(r"[ML]\s*(-?[\d.]+)\s+(-?[\d.]+)", d)
    return [(float(x) + offset[0], float(y) + offset[1]) for x, y in numbers]
