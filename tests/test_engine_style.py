"""The categorized-by-class QML: well-formed, one category and colour per class, escaped names."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from qgis_unravel.engine.style import PALETTE, categorized_qml


def test_one_category_per_class_with_a_distinct_colour_and_escaped_names():
    classes = ["plane", "ship", 'odd "name" & <more>']
    root = ET.fromstring(categorized_qml(classes).split("\n", 1)[1])  # skip the DOCTYPE line
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_name"
    categories = renderer.findall("categories/category")
    assert [c.get("value") for c in categories] == classes
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    assert sorted(symbols) == ["0", "1", "2"]
    outline = ".//Option[@name='outline_color']"
    outlines = [symbols[c.get("symbol")].find(outline).get("value") for c in categories]
    assert len(set(outlines)) == 3
    assert outlines[0] == ",".join(map(str, PALETTE[0])) + ",255"


def test_more_classes_than_colours_still_gives_a_valid_document():
    classes = [f"class_{i}" for i in range(len(PALETTE) + 5)]
    root = ET.fromstring(categorized_qml(classes).split("\n", 1)[1])
    assert len(root.findall("renderer-v2/categories/category")) == len(classes)
