"""The plugin's voice in the QGIS message bar: one message at a time, never a pile.

Each new message replaces the plugin's previous one (a warning left over from a failed run must
not hide the success of the next one behind "5 more"), and a message may carry one button
("Set up PyTorch…"). Main thread only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton

TITLE = "UnravelNet"


@dataclass
class Action:
    label: str
    slot: Callable[[], None]
    tip: str = ""


class Notifier:
    """Pushes messages for one QGIS interface; ``last`` is what the user sees now (for tests)."""

    def __init__(self, iface):
        self.iface = iface
        self._items: list = []
        self.last: Optional[tuple[int, str]] = None
        self.history: list[tuple[int, str]] = []

    def push(self, text: str, level=Qgis.MessageLevel.Info, duration: int = 8,
             action: Optional[Action] = None) -> None:
        bar = self.iface.messageBar() if self.iface is not None else None
        if bar is None:
            return
        self.clear()
        if hasattr(bar, "createMessage") and hasattr(bar, "pushWidget"):
            item = bar.createMessage(TITLE, text)
            if action is not None:
                button = QPushButton(action.label)
                button.setToolTip(action.tip or action.label)
                button.clicked.connect(action.slot)
                item.layout().addWidget(button)
            self._items.append(bar.pushWidget(item, level, duration) or item)
        else:  # a minimal stand-in interface: text only
            bar.pushMessage(TITLE, text, level, duration)
        self.last = (int(level), text)
        self.history.append(self.last)

    def clear(self) -> None:
        """Remove the plugin's messages still shown (those the user closed are gone already)."""
        bar = self.iface.messageBar() if self.iface is not None else None
        for item in self._items:
            try:
                if bar is not None and hasattr(bar, "popWidget"):
                    bar.popWidget(item)
            except RuntimeError:  # already deleted by QGIS (closed or timed out)
                pass
        self._items = []
