"""The categorized-by-class QGIS style (QML) of a detections layer.

Built from the model's class list so every class has a fixed, distinct colour: the same
class looks the same in every output of the same model. The writer stores it in the
GeoPackage (QGIS opens the layer styled) and the plugin reuses it for temporary layers.
"""

from __future__ import annotations

from string import Template
from typing import Sequence, Tuple
from xml.sax.saxutils import quoteattr

from ..paths import resources_dir

# 20 colours that stay distinct from each other (Sasha Trubetskoy's palette), RGB.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)
FILL_ALPHA = 50
OUTLINE_WIDTH_MM = 0.6


def class_colour(class_id: int) -> Tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


def _template(name: str) -> Template:
    return Template((resources_dir() / "styles" / name).read_text(encoding="utf-8"))


def categorized_qml(classes: Sequence[str], attribute: str = "class_name") -> str:
    """A QML document colouring features by ``attribute`` with one category per class."""
    symbol = _template("detection_symbol.xml")
    categories, symbols = [], []
    for class_id, name in enumerate(classes):
        r, g, b = class_colour(class_id)
        categories.append(
            f"      <category render=\"true\" symbol=\"{class_id}\" value={quoteattr(str(name))} "
            f"label={quoteattr(str(name))}/>"
        )
        symbols.append(symbol.substitute(
            name=str(class_id), fill=f"{r},{g},{b},{FILL_ALPHA}", outline=f"{r},{g},{b},255",
            width=str(OUTLINE_WIDTH_MM),
        ).rstrip("\n"))
    return _template("detections.qml").substitute(
        attribute=attribute, categories="\n".join(categories), symbols="\n".join(symbols)
    )
